// Package testnet holds network helpers for tests.
package testnet

import (
	"fmt"
	"net"
	"syscall"
	"testing"
)

// ClosedAddr returns a loopback address ("127.0.0.1:port") where a dial is
// refused for as long as the test runs.
//
// It binds a TCP socket to the port without listening and holds it until
// the test ends: a connection to it gets a reset (ECONNREFUSED), and no
// other socket can take the port meanwhile. Listening on port 0 and closing
// again is not enough: the kernel hands the port to the next listener, often
// a server the same test starts a moment later, and the "refused" dial then
// reaches that server.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("closed address: socket: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("closed address: bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("closed address: getsockname: %v", err)
	}
	in4, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		t.Fatalf("closed address: getsockname returned %T", sa)
	}
	return fmt.Sprintf("127.0.0.1:%d", in4.Port)
}

// TCPPair returns the two ends of a loopback TCP connection, closed when
// the test ends: local dialed, peer accepted.
func TCPPair(t testing.TB) (local, peer *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p := <-acc
	if p == nil {
		c.Close()
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); p.Close() })
	return c.(*net.TCPConn), p.(*net.TCPConn)
}
