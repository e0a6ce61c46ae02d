package proxy

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

// BenchmarkProxyPost is a sticky POST with a 1 KiB body (a GWE DOM
// mutation batch) through the proxy to a gwedemo echo over loopback: what
// a request body costs (the body reader, its timeout, the retry copy).
func BenchmarkProxyPost(b *testing.B) {
	back := startMembers(b, "/backend", "1", "2", "3")
	h := startProxy(b, mustTable(b, backendPool(back)), Options{AccessLog: io.Discard}, ListenerConfig{})
	body := bytes.Repeat([]byte("dom-mutation;"), 1024/13+1)[:1024]
	b.ReportAllocs()
	for b.Loop() {
		req, err := http.NewRequest(http.MethodPost, h.base+"/backend/echo", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Cookie", "ROUTEID=.2")
		resp, err := h.client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || n != int64(len(body)) {
			b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
		}
	}
}
