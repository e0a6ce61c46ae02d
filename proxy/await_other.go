//go:build !unix

package proxy

import "net"

// awaiter is the unix path that writes a connection's last bytes and
// waits for its peer in one step (await_unix.go); elsewhere connections
// are written and read as usual.
type awaiter struct{}

func (a *awaiter) init(conn net.Conn) bool { return false }

func (a *awaiter) write(p []byte) (int, error) { panic("unreachable: init reported false") }
