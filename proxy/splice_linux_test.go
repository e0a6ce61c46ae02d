package proxy

import (
	"bytes"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/gwelb/gwelb/internal/testnet"
)

// A splicer that moved bytes bounds the unsent bytes it leaves in its
// destination socket (spliceNotsentLowat), and only there: the source
// keeps the kernel's default, and so does a connection nothing was
// spliced to.
func TestSplicerNotsentLowat(t *testing.T) {
	writer, src := testnet.TCPPair(t)
	reader, dst := testnet.TCPPair(t)
	def := notsentLowat(t, dst) // net.ipv4.tcp_notsent_lowat, -1 (unbounded) unless set
	if def == spliceNotsentLowat {
		t.Skipf("net.ipv4.tcp_notsent_lowat is %d already: nothing to tell apart", def)
	}
	sp := newSplicer(src, dst)
	if sp == nil {
		t.Fatal("no splicer between two TCP connections")
	}
	defer sp.release()
	if got := notsentLowat(t, dst); got != def {
		t.Errorf("TCP_NOTSENT_LOWAT before anything was spliced: %d, want the default %d", got, def)
	}
	msg := []byte("spliced")
	if _, err := writer.Write(msg); err != nil {
		t.Fatal(err)
	}
	for got := 0; got < len(msg); {
		n, err := sp.fill(int64(len(msg) - got))
		if err != nil || n == 0 {
			t.Fatalf("fill: %d, %v", n, err)
		}
		if _, err := sp.drain(); err != nil {
			t.Fatalf("drain: %v", err)
		}
		got += n
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(reader, buf); err != nil || !bytes.Equal(buf, msg) {
		t.Fatalf("read %q, %v; want %q", buf, err, msg)
	}
	if got := notsentLowat(t, dst); got != spliceNotsentLowat {
		t.Errorf("destination's TCP_NOTSENT_LOWAT: %d, want %d", got, spliceNotsentLowat)
	}
	if got := notsentLowat(t, src); got != def {
		t.Errorf("source's TCP_NOTSENT_LOWAT: %d, want the default %d", got, def)
	}
}

func notsentLowat(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		v, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpNotsentLowat)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("getsockopt TCP_NOTSENT_LOWAT: %v", serr)
	}
	return v
}
