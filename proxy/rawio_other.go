//go:build !linux

package proxy

import "net"

// rawIO is Linux's raw path for plain TCP connections (rawio_linux.go);
// elsewhere connections are read and written as net.Conn.
type rawIO struct{ ok bool }

func (x *rawIO) init(conn net.Conn) bool { return false }

func (x *rawIO) Read(p []byte) (int, error)       { panic("unreachable: init reported false") }
func (x *rawIO) Write(p []byte) (int, error)      { panic("unreachable: init reported false") }
func (x *rawIO) writeAwait(p []byte) (int, error) { panic("unreachable: init reported false") }
