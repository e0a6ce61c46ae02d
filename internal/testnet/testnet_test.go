package testnet

import (
	"errors"
	"net"
	"syscall"
	"testing"
)

// A dial to the address is refused, and a listener cannot take its port
// while the test runs.
func TestClosedAddr(t *testing.T) {
	addr := ClosedAddr(t)
	if _, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s: %v, want connection refused", addr, err)
	}
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("listen %s succeeded: the port is not held", addr)
	}
}
