package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// guardStreams are byte streams a client may send on one connection, and
// where the guard must refuse them (-1: never).
var guardStreams = []struct {
	name    string
	stream  string
	refuse  int    // offset of the refused byte, -1 if accepted
	endsIn  uint8  // the parser's state after an accepted stream
	because string // the reason given, for refused streams
}{
	{"one GET", "GET /backend/x HTTP/1.1\r\nHost: g\r\n\r\n", -1, psHead, ""},
	{"pipelined framings",
		"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=\"y\"\r\nabc\r\n10 \r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\nGET /c HTTP/1.0\r\n\r\n",
		-1, psHead, ""},
	{"body looks like a head", "POST /a HTTP/1.1\r\nContent-Length: 19\r\n\r\nGET / HTTP/1.1\nX:\n\n", -1, psHead, ""},
	{"duplicate equal CL", "POST /a HTTP/1.1\r\nContent-Length: 2\r\ncontent-length:2 \r\n\r\nab", -1, psHead, ""},
	{"websocket: the rest is not HTTP", "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello\n \n", -1, psPass, ""},
	{"upgrade over POST is still HTTP", "POST /ws HTTP/1.1\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\nX: 1\n", 80, 0, "bare LF line ending"},
	{"bare LF", "GET / HTTP/1.1\r\nHost: g\n\r\n", 23, 0, "bare LF line ending"},
	{"bare LF request line", "GET / HTTP/1.1\n\r\n", 14, 0, "bare LF line ending"},
	{"obs-fold", "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", 22, 0, "obs-fold (a header line starting with whitespace)"},
	{"CL+TE", "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 65, 0, "both Content-Length and Transfer-Encoding"},
	{"TE on 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 46, 0, "Transfer-Encoding in a request older than HTTP/1.1"},
	{"TE twice", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 72, 0, "more than one Transfer-Encoding"},
	{"TE identity", "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n", 45, 0, "Transfer-Encoding other than chunked"},
	{"CL differ", "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n", 54, 0, "two different Content-Length values"},
	{"CL hex", "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n", 38, 0, "invalid Content-Length"},
	{"CL too big", "POST / HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n", 53, 0, "invalid Content-Length"},
	{"empty request line", "\r\nGET / HTTP/1.1\r\n\r\n", 1, 0, "empty request line"},
	{"bad chunk size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 47, 0, "invalid chunk size"},
	{"space before chunk ext", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x\r\n", 49, 0, "invalid chunk size line"},
	{"chunk data too long", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", 51, 0, "chunk data not followed by CRLF"},
	{"bare LF after chunk size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\nab\r\n", 48, 0, "invalid chunk size"},
	{"obs-fold in trailer", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\n\t2\r\n\r\n", 56, 0, "obs-fold (a header line starting with whitespace)"},
	{"refused after a good request", "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n x: y\r\n\r\n", 36, 0, "obs-fold (a header line starting with whitespace)"},
}

// The parser reads a stream the same way however it arrives: whole, cut
// at any point, or a byte at a time.
func TestHeadParserSegmentation(t *testing.T) {
	for _, tt := range guardStreams {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.stream)
			splits := [][]int{nil} // whole
			for i := 1; i < len(in); i++ {
				splits = append(splits, []int{i})
			}
			every := make([]int, 0, len(in))
			for i := 1; i < len(in); i++ {
				every = append(every, i)
			}
			splits = append(splits, every)
			for _, cuts := range splits {
				p := headParser{maxHead: 1 << 10}
				at, why := -1, ""
				prev := 0
				for _, end := range append(cuts, len(in)) {
					if ok, w := p.scan(in[prev:end]); !ok {
						at, why = prev+p.cut, w
						break
					}
					prev = end
				}
				if at != tt.refuse || why != tt.because {
					t.Fatalf("cut at %v: refused at %d (%q), want %d (%q)", cuts, at, why, tt.refuse, tt.because)
				}
				if at < 0 && p.state != tt.endsIn {
					t.Fatalf("cut at %v: ends in state %d, want %d", cuts, p.state, tt.endsIn)
				}
			}
		})
	}
}

// A head longer than maxHead is refused; net/http refuses it first in
// practice (431), since the guard allows more.
func TestHeadParserBound(t *testing.T) {
	p := headParser{maxHead: 100}
	if ok, _ := p.scan([]byte("GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 80) + "\r\n")); !ok {
		t.Fatal("refused a head under the bound")
	}
	if ok, why := p.scan([]byte("Y: " + strings.Repeat("b", 10))); ok || why != "request head too long" {
		t.Fatalf("over the bound: %v %q", ok, why)
	}
}

// A typical GWE request head, as a browser sends it to the backend.
const gweHead = "POST /backend/cometd/connect HTTP/1.1\r\nHost: gwe.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\n" +
	"Accept: */*\r\nAccept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n" +
	"Content-Type: application/json;charset=UTF-8\r\nContent-Length: 96\r\nOrigin: https://shop.example.com\r\n" +
	"Referer: https://shop.example.com/cart\r\nCookie: JSESSIONID=0123456789abcdef0123456789abcdef; ROUTEID=.2; _ga=GA1.2.3\r\n\r\n" +
	`[{"channel":"/meta/connect","connectionType":"long-polling","advice":{"timeout":0},"id":"7"}]...`

func TestHeadParserAllocs(t *testing.T) {
	in := []byte(gweHead)
	var p headParser
	if n := testing.AllocsPerRun(1000, func() {
		p = headParser{maxHead: 64 << 10}
		if ok, why := p.scan(in); !ok || p.state != psHead {
			t.Fatalf("refused: %s", why)
		}
	}); n != 0 {
		t.Errorf("%v allocations per request head, want 0", n)
	}
}

// BenchmarkHeadParser is the guard's cost per request: head and body of
// gweHead.
func BenchmarkHeadParser(b *testing.B) {
	in := []byte(gweHead)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		p := headParser{maxHead: 64 << 10}
		if ok, _ := p.scan(in); !ok {
			b.Fatal("refused")
		}
	}
}

// oneByteReader hands out its bytes one at a time, so that net/http's
// reader never reads past what it needs and its position is exact.
type oneByteReader struct {
	b   []byte
	off int
}

func (r *oneByteReader) Read(p []byte) (int, error) {
	if r.off == len(r.b) {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.b[r.off]
	r.off++
	return 1, nil
}

// FuzzGuardFraming compares the guard with net/http's own parser on
// arbitrary streams. Whatever the input:
//   - the guard decides the same however the stream is cut;
//   - every request net/http reads completely from what the guard lets
//     through (up to the refused byte, then the poison) has a head without
//     bare LF, obs-fold, or Content-Length with Transfer-Encoding;
//   - and ends where the guard expects the next head: both see the same
//     requests on a keep-alive connection.
func FuzzGuardFraming(f *testing.F) {
	for _, s := range guardStreams {
		f.Add([]byte(s.stream))
	}
	for _, s := range headSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		const maxHead = 4 << 10
		whole := headParser{maxHead: maxHead}
		ok, _ := whole.scan(in)
		cut := len(in)
		if !ok {
			cut = whole.cut
		}
		bytewise := headParser{maxHead: maxHead}
		for i := range in {
			if ok2, _ := bytewise.scan(in[i : i+1]); !ok2 {
				if ok || i+bytewise.cut != cut {
					t.Fatalf("byte by byte refused at %d, whole at %d (ok %v)", i+bytewise.cut, cut, ok)
				}
				break
			}
		}

		delivered := in[:cut]
		if !ok && whole.state == psHead {
			delivered = append(bytes.Clone(delivered), poison...)
		}
		src := &oneByteReader{b: delivered}
		br := bufio.NewReaderSize(src, 16)
		pos := func() int { return src.off - br.Buffered() }
		for range 16 {
			start := pos()
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			head := in[start:pos()]
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return
			}
			end := pos()
			if end > cut {
				t.Fatalf("net/http read a whole request from the poison: %q", delivered[start:end])
			}
			if why := referenceViolation(head); why != "" {
				t.Fatalf("the guard let through a head with %s: %q", why, head)
			}
			at := headParser{maxHead: maxHead}
			if ok, why := at.scan(in[:end]); !ok {
				t.Fatalf("refused %q (%s) inside a request net/http completed at %d", in[:end], why, end)
			}
			if at.state == psPass {
				return // an upgrade: what follows is not HTTP
			}
			if at.state != psHead || at.lineLen != 0 || at.lines != 0 {
				t.Fatalf("net/http completed a request at %d; the guard is in state %d, line %d, at %d bytes of a line: %q",
					end, at.state, at.lines, at.lineLen, in[:end])
			}
		}
	})
}

// referenceViolation is the slow, obvious check of a raw request head.
func referenceViolation(head []byte) string {
	for i, c := range head {
		if c == '\n' && (i == 0 || head[i-1] != '\r') {
			return "a bare LF"
		}
	}
	lines := strings.Split(string(head), "\r\n")
	cl, te := false, false
	for i, l := range lines {
		if i > 0 && (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) {
			return "obs-fold"
		}
		name, _, _ := strings.Cut(l, ":")
		cl = cl || strings.EqualFold(name, "Content-Length")
		te = te || strings.EqualFold(name, "Transfer-Encoding")
	}
	if cl && te {
		return "Content-Length and Transfer-Encoding"
	}
	return ""
}
