package proxy

import (
	"bytes"
	"io"
	"sync"
)

// replayBody passes a request body through while keeping its first limit
// bytes, so that a request whose member refused it can be sent once more to
// the fallback member without buffering bodies up front.
type replayBody struct {
	src   io.ReadCloser
	limit int64

	mu       sync.Mutex
	kept     bytes.Buffer
	overflow bool // more than limit bytes were read: no replay
	stale    bool // rewound: this reader belongs to a failed attempt
}

func (b *replayBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stale {
		return 0, io.ErrClosedPipe
	}
	n, err := b.src.Read(p)
	if n > 0 && !b.overflow {
		if int64(b.kept.Len()+n) > b.limit {
			b.overflow = true
			b.kept = bytes.Buffer{}
		} else {
			b.kept.Write(p[:n])
		}
	}
	return n, err
}

// Close leaves the client's body open: the server closes it when the
// handler returns, and a retry may still need it.
func (b *replayBody) Close() error { return nil }

// rewind returns a body that yields everything read so far and then the
// rest of the client's body, or nil when too much was read to replay.
// The failed attempt's transport may still hold this reader; it is cut off.
func (b *replayBody) rewind() io.ReadCloser {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.overflow || b.stale {
		return nil
	}
	b.stale = true
	return io.NopCloser(io.MultiReader(bytes.NewReader(b.kept.Bytes()), b.src))
}
