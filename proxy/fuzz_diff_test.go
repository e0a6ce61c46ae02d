package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"
)

// FuzzHeadDifferential is the smuggling guard of the forwarding path: the
// same bytes go through the balancer's reading of a client connection
// (the guard's scan, then the head parser and the body decoders of
// head.go and chunked.go) and through net/http's http.ReadRequest. The
// balancer may refuse more than net/http does (it is stricter on purpose),
// but every request it reads must be one net/http reads the same way:
// the same method, target and path, the same body bytes, and the same end
// — so that a request never hides in another's body for one parser and
// not the other, on a keep-alive connection of pipelined requests.
func FuzzHeadDifferential(f *testing.F) {
	for _, s := range guardStreams {
		f.Add([]byte(s.stream))
	}
	for _, s := range headSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		const maxHead = 4 << 10
		// What the guard lets through: up to the refused byte, then the
		// poison (guard.go).
		g := headParser{maxHead: maxHead + 16<<10}
		delivered := in
		if ok, _ := g.scan(in); !ok {
			delivered = in[:g.cut]
			if g.state == psHead {
				delivered = append(bytes.Clone(delivered), poison...)
			}
		}
		ours := bytes.NewReader(delivered)
		obr := bufio.NewReaderSize(ours, 4<<10)
		theirs := bytes.NewReader(in)
		tbr := bufio.NewReaderSize(theirs, 4<<10)
		var h reqHead
		var lr lengthReader
		var cr chunkedReader
		for range 8 {
			if err := h.readHead(obr, maxHead+4<<10); err != nil {
				return // refused (or the stream ended): nothing was forwarded
			}
			var body []byte
			switch {
			case h.chunked:
				cr.reset(obr)
				b, err := io.ReadAll(&cr)
				if err != nil {
					return // a malformed body: 400, the connection closed
				}
				body = b
			case h.length > 0:
				lr = lengthReader{r: obr, n: h.length}
				b, err := io.ReadAll(&lr)
				if err != nil {
					return // cut off
				}
				body = b
			}
			ourEnd := len(delivered) - ours.Len() - obr.Buffered()

			req, err := http.ReadRequest(tbr)
			if err != nil {
				t.Fatalf("the balancer read a request net/http refuses (%v): %q", err, in[:ourEnd])
			}
			theirBody, err := io.ReadAll(req.Body)
			if err != nil {
				t.Fatalf("the balancer read a body net/http refuses (%v): %q", err, in[:ourEnd])
			}
			theirEnd := len(in) - theirs.Len() - tbr.Buffered()
			switch {
			case req.Method != h.method || req.RequestURI != h.target:
				t.Fatalf("request line: ours %q %q, net/http's %q %q", h.method, h.target, req.Method, req.RequestURI)
			case h.method != http.MethodConnect && req.URL.Path != h.path:
				t.Fatalf("path: ours %q, net/http's %q (%q)", h.path, req.URL.Path, h.target)
			case !bytes.Equal(body, theirBody):
				t.Fatalf("body: ours %q, net/http's %q", body, theirBody)
			case ourEnd != theirEnd:
				t.Fatalf("the request ends at %d for the balancer, at %d for net/http: %q", ourEnd, theirEnd, in)
			}
			if h.upgrade && h.method == http.MethodGet {
				return // what follows may be a WebSocket, not HTTP
			}
		}
	})
}
