package rawio

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/gwelb/gwelb/internal/testnet"
)

// describe is what a caller can tell of an I/O result: the count, and
// the error's operation and kind.
func describe(n int, err error) string {
	if err == nil {
		return fmt.Sprintf("n=%d nil", n)
	}
	if err == io.EOF {
		return fmt.Sprintf("n=%d EOF", n)
	}
	var oe *net.OpError
	op := "not an OpError"
	if errors.As(err, &oe) {
		op = oe.Op + " " + oe.Net
	}
	var ne net.Error
	timeout := errors.As(err, &ne) && ne.Timeout()
	return fmt.Sprintf("n>0=%v op=%q timeout=%v deadline=%v closed=%v reset=%v pipe=%v",
		n > 0, op, timeout, errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE))
}

// reset makes the peer's Close send a RST.
func reset(t *testing.T, peer *net.TCPConn) {
	t.Helper()
	if err := peer.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	peer.Close()
}

// TestAsNetConn: Wrap's connection reads and writes with raw system calls
// and gives what net.Conn gives, over real sockets, in every case a caller
// tells apart: data, end of stream, a deadline, a closed connection, a
// reset, a write larger than the socket takes at once.
func TestAsNetConn(t *testing.T) {
	big := make([]byte, 8<<20)
	cases := []struct {
		name string
		run  func(t *testing.T, rw io.ReadWriter, c, peer *net.TCPConn) (int, error)
	}{
		{"read data", func(t *testing.T, rw io.ReadWriter, c, peer *net.TCPConn) (int, error) {
			peer.Write([]byte("hello"))
			buf := make([]byte, 64)
			n, err := rw.Read(buf)
			if string(buf[:n]) != "hello" {
				t.Errorf("read %q", buf[:n])
			}
			return n, err
		}},
		{"read end of stream", func(t *testing.T, rw io.ReadWriter, c, peer *net.TCPConn) (int, error) {
			peer.Close()
			return rw.Read(make([]byte, 64))
		}},
		{"read deadline", func(t *testing.T, rw io.ReadWriter, c, peer *net.TCPConn) (int, error) {
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			return rw.Read(make([]byte, 64))
		}},
		{"read closed", func(t *testing.T, rw io.ReadWriter, c, peer *net.TCPConn) (int, error) {
			c.Close()
			return rw.Read(make([]byte, 64))
		}},
		{"read reset", func(t *testing.T, rw io.ReadWriter, c, peer *net.TCPConn) (int, error) {
			reset(t, peer)
			return rw.Read(make([]byte, 64))
		}},
		{"write larger than the socket takes", func(t *testing.T, rw io.ReadWriter, c, peer *net.TCPConn) (int, error) {
			done := make(chan int64)
			go func() {
				n, _ := io.Copy(io.Discard, peer)
				done <- n
			}()
			n, err := rw.Write(big)
			c.CloseWrite()
			if got := <-done; got != int64(len(big)) {
				t.Errorf("peer got %d bytes, want %d", got, len(big))
			}
			return n, err
		}},
		{"write deadline", func(t *testing.T, rw io.ReadWriter, c, peer *net.TCPConn) (int, error) {
			c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			return rw.Write(big) // the peer never reads
		}},
		{"write closed", func(t *testing.T, rw io.ReadWriter, c, peer *net.TCPConn) (int, error) {
			c.Close()
			return rw.Write([]byte("x"))
		}},
		{"write reset", func(t *testing.T, rw io.ReadWriter, c, peer *net.TCPConn) (int, error) {
			reset(t, peer)
			// The RST arrives after the first write at the latest.
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				if n, err := rw.Write([]byte("x")); err != nil {
					return n, err
				}
			}
			return 0, nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := testnet.TCPPair(t)
			want := describe(tc.run(t, c, c, peer))
			c, peer = testnet.TCPPair(t)
			raw, ok := Wrap(c).(Conn)
			if !ok {
				t.Fatal("Wrap left a plain TCP connection as it was")
			}
			got := describe(tc.run(t, raw, c, peer))
			if got != want {
				t.Errorf("raw: %s\nnet.Conn: %s", got, want)
			}
		})
	}
}

// TestWriteAwait: WriteAwait writes, runs then once everything is out,
// and returns when the peer has answered, unless then says not to wait.
func TestWriteAwait(t *testing.T) {
	for _, tc := range []struct {
		name   string
		then   func() bool // nil: none
		answer bool        // the peer answers what it read
	}{
		{"no then", nil, true},
		{"then waits", func() bool { return true }, true},
		{"then does not wait", func() bool { return false }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := testnet.TCPPair(t)
			var x IO
			if !x.Init(c) {
				t.Fatal("Init refused a plain TCP connection")
			}
			answered := make(chan struct{})
			go func() {
				buf := make([]byte, 5)
				if _, err := io.ReadFull(peer, buf); err != nil || !tc.answer {
					return
				}
				close(answered) // before the answer: WriteAwait must see this closed
				peer.Write([]byte("world"))
			}()
			ran := 0
			then := tc.then
			if then != nil {
				then = func() bool { ran++; return tc.then() }
			}
			done := make(chan error, 1)
			go func() {
				_, err := x.WriteAwait([]byte("hello"), then)
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("WriteAwait: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("WriteAwait did not return within 10s")
			}
			if tc.then != nil && ran != 1 {
				t.Errorf("then ran %d times, want 1", ran)
			}
			if !tc.answer {
				return
			}
			select {
			case <-answered:
			default:
				t.Fatal("WriteAwait returned before the peer answered")
			}
			buf := make([]byte, 5)
			if n, err := x.Read(buf); err != nil || string(buf[:n]) != "world" {
				t.Errorf("the read after it: %q, %v", buf[:n], err)
			}
		})
	}
}
