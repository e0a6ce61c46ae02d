package snapstream

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// pattern is n bytes that differ from chunk to chunk, so a reordered or
// dropped chunk shows.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7 / 3)
	}
	return b
}

func TestSendReceiveRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name   string
		size   int
		chunks []int
	}{
		{"empty", 0, nil},
		{"one byte", 1, []int{1}},
		{"exactly one chunk", ChunkSize, []int{ChunkSize}},
		{"one chunk and a bit", ChunkSize + 3, []int{ChunkSize, 3}},
		{"several", 3*ChunkSize + 100, []int{ChunkSize, ChunkSize, ChunkSize, 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := pattern(tc.size)
			var sent []*gwelbv1.SnapshotChunk
			if err := Send(data, func(c *gwelbv1.SnapshotChunk) error { sent = append(sent, c); return nil }); err != nil {
				t.Fatalf("send: %v", err)
			}
			var sizes []int
			for _, c := range sent {
				sizes = append(sizes, len(c.GetData()))
			}
			if !slices.Equal(sizes, tc.chunks) {
				t.Errorf("chunk sizes %v, want %v", sizes, tc.chunks)
			}
			got, err := Receive(replay(sent, io.EOF), tc.size)
			if err != nil {
				t.Fatalf("receive: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("received %d bytes that differ from the %d sent", len(got), len(data))
			}
		})
	}
}

func TestReceiveErrors(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "leader gone")
	chunk := func(n int) *gwelbv1.SnapshotChunk { return &gwelbv1.SnapshotChunk{Data: pattern(n)} }
	for _, tc := range []struct {
		name   string
		chunks []*gwelbv1.SnapshotChunk
		end    error
		max    int
		want   error
	}{
		{"at the bound", []*gwelbv1.SnapshotChunk{chunk(6), chunk(4)}, io.EOF, 10, nil},
		{"past the bound", []*gwelbv1.SnapshotChunk{chunk(6), chunk(5)}, io.EOF, 10, ErrTooLarge},
		{"past the bound before the stream fails", []*gwelbv1.SnapshotChunk{chunk(11)}, unavailable, 10, ErrTooLarge},
		{"stream fails", []*gwelbv1.SnapshotChunk{chunk(3)}, unavailable, 10, unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Receive(replay(tc.chunks, tc.end), tc.max)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			// A relaying node passes the status on: it must arrive
			// unwrapped, the very error recv returned.
			if tc.want == unavailable && err != unavailable {
				t.Errorf("status wrapped: %v", err)
			}
		})
	}
}

func TestSendStopsAtFirstError(t *testing.T) {
	broken := errors.New("stream broken")
	calls := 0
	err := Send(pattern(3*ChunkSize), func(*gwelbv1.SnapshotChunk) error { calls++; return broken })
	if !errors.Is(err, broken) || calls != 1 {
		t.Errorf("err %v after %d sends, want %v after 1", err, calls, broken)
	}
}

// replay returns a recv function that hands out chunks, then end forever.
func replay(chunks []*gwelbv1.SnapshotChunk, end error) func() (*gwelbv1.SnapshotChunk, error) {
	return func() (*gwelbv1.SnapshotChunk, error) {
		if len(chunks) == 0 {
			return nil, end
		}
		c := chunks[0]
		chunks = chunks[1:]
		return c, nil
	}
}
