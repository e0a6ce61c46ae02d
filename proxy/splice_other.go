//go:build !linux

package proxy

import (
	"errors"
	"net"
	"sync/atomic"
)

var splicedBytes atomic.Int64 // stays 0

// splicer is Linux's zero-copy path (splice_linux.go); elsewhere bodies
// are copied through user space.
type splicer struct{}

func newSplicer(src, dst net.Conn) *splicer { return nil }

var errNoPipe = errors.New("splice: not supported")

func (s *splicer) fill(limit int64) (int, error) { return 0, errNoPipe }
func (s *splicer) drain() (int, error)           { return 0, errNoPipe }
func (s *splicer) release()                      {}
