// Package snapstream cuts a snapshot into SnapshotChunk messages and puts it
// back together, the one way every sender and receiver in the tree does it.
//
// gRPC bounds a single message (4 MiB by default), so a snapshot travels as
// a stream of chunks; a receiver bounds the total so a peer cannot make it
// buffer without limit.
package snapstream

import (
	"errors"
	"fmt"
	"io"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// ChunkSize is the size of the chunks Send cuts: well under gRPC's default
// 4 MiB message limit, large enough that a snapshot is a few messages.
const ChunkSize = 64 << 10

// MaxBytes bounds a snapshot; the state is a few KiB per hundred members.
const MaxBytes = 64 << 20

// ErrTooLarge is what Receive returns when the chunks add up to more than
// the bound it was given.
var ErrTooLarge = errors.New("snapshot too large")

// Send sends data in chunks of at most ChunkSize bytes through send. An
// empty data sends nothing. The first error from send is returned as is, so
// a gRPC status survives for the caller (and for a relaying node's client).
func Send(data []byte, send func(*gwelbv1.SnapshotChunk) error) error {
	for len(data) > 0 {
		k := min(len(data), ChunkSize)
		if err := send(&gwelbv1.SnapshotChunk{Data: data[:k]}); err != nil {
			return err
		}
		data = data[k:]
	}
	return nil
}

// Receive calls recv until it returns io.EOF and returns the chunks' data
// joined. Any other error from recv is returned as is (unwrapped, so a gRPC
// status passes through unchanged). If the data grows beyond max bytes it
// stops and returns an error wrapping ErrTooLarge.
func Receive(recv func() (*gwelbv1.SnapshotChunk, error), max int) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := recv()
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
		if len(buf)+len(chunk.GetData()) > max {
			return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
		}
		buf = append(buf, chunk.GetData()...)
	}
}
