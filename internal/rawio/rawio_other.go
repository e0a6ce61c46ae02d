//go:build !linux

package rawio

import (
	"net"
	"syscall"
)

// IO is Linux's raw path for plain TCP connections (rawio_linux.go);
// elsewhere it is never ready, and connections are read and written as
// net.Conn.
type IO struct{}

// Init reports false: there is no raw path here.
func (x *IO) Init(conn net.Conn) bool { return false }

// Ready reports false.
func (x *IO) Ready() bool { return false }

// Read is never called: the IO is never ready.
func (x *IO) Read(p []byte) (int, error) { panic("rawio: not ready") }

// Write is never called: the IO is never ready.
func (x *IO) Write(p []byte) (int, error) { panic("rawio: not ready") }

// WriteAwait is never called: the IO is never ready.
func (x *IO) WriteAwait(p []byte, then func() bool) (int, error) { panic("rawio: not ready") }

// TCP returns nil: nothing here is read raw.
func TCP(c net.Conn) syscall.RawConn { return nil }

// Wrap returns c.
func Wrap(c net.Conn) net.Conn { return c }
