package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
)

// chunkedReader decodes a chunked body (RFC 9112 §7.1) the way net/http's
// reader does — the same line limits, hex sizes of at most 16 digits, CRLF
// after the data, a bound on framing bytes per data byte — so that it
// ends a body exactly where net/http and the connection guard do. It is
// reset and reused for every body of a connection: nothing is allocated.
// The trailer section is kept (raw, CRLF-terminated lines, bounded) to be
// forwarded.
type chunkedReader struct {
	r       *bufio.Reader
	n       uint64 // data bytes left in the current chunk
	excess  int64  // framing bytes beyond what the data justifies
	needCR  bool   // the CRLF after the chunk data is still to be read
	done    bool
	err     error
	trailer []byte
}

var (
	errChunkLine    = errors.New("gwelb: malformed chunked encoding")
	errChunkExcess  = errors.New("gwelb: chunked encoding contains too much non-data")
	errTrailerLarge = errors.New("gwelb: chunked trailer too large")
)

// maxTrailer bounds a chunked body's trailer section.
const maxTrailer = 64 << 10

func (cr *chunkedReader) reset(r *bufio.Reader) {
	*cr = chunkedReader{r: r, trailer: cr.trailer[:0]}
}

func (cr *chunkedReader) Read(p []byte) (int, error) {
	for {
		if cr.err != nil {
			return 0, cr.err
		}
		if cr.done {
			return 0, io.EOF
		}
		if cr.needCR {
			if err := cr.crlf(); err != nil {
				cr.err = err
				return 0, err
			}
			cr.needCR = false
		}
		if cr.n == 0 {
			if err := cr.beginChunk(); err != nil {
				cr.err = err
				return 0, err
			}
			if cr.done {
				return 0, io.EOF
			}
			continue
		}
		if len(p) == 0 {
			return 0, nil
		}
		if uint64(len(p)) > cr.n {
			p = p[:cr.n]
		}
		n, err := cr.r.Read(p)
		cr.n -= uint64(n)
		if cr.n == 0 {
			cr.needCR = true
			// Read the CRLF now if it is there: a body whose last chunk
			// has arrived is then seen to end without waiting.
			if cr.r.Buffered() >= 2 {
				if err := cr.crlf(); err != nil {
					cr.err = err
				}
				cr.needCR = false
			}
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			cr.err = err
		}
		if n > 0 {
			return n, nil
		}
		if cr.err != nil {
			return 0, cr.err
		}
	}
}

func (cr *chunkedReader) crlf() error {
	var b [2]byte
	if _, err := io.ReadFull(cr.r, b[:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if b[0] != '\r' || b[1] != '\n' {
		return errChunkLine
	}
	return nil
}

// line reads one CRLF-terminated line of at most maxChunkLine bytes and
// returns it without the CRLF.
func (cr *chunkedReader) line() ([]byte, error) {
	p, err := cr.r.ReadSlice('\n')
	if err != nil {
		if err == io.EOF {
			return nil, io.ErrUnexpectedEOF
		}
		if err == bufio.ErrBufferFull {
			return nil, errChunkLine
		}
		return nil, err
	}
	if len(p) >= maxChunkLine || len(p) < 2 || p[len(p)-2] != '\r' {
		return nil, errChunkLine
	}
	return p[:len(p)-2], nil
}

func (cr *chunkedReader) beginChunk() error {
	line, err := cr.line()
	if err != nil {
		return err
	}
	cr.excess += int64(len(line)) + 4 // the line's CRLF, and the CRLF after the data
	// The size, optional whitespace, an optional extension.
	i := 0
	var n uint64
	for ; i < len(line); i++ {
		v, ok := hexDigit(line[i])
		if !ok {
			break
		}
		if i == 16 {
			return errChunkLine
		}
		n = n<<4 | uint64(v)
	}
	if i == 0 {
		return errChunkLine
	}
	for ; i < len(line) && (line[i] == ' ' || line[i] == '\t'); i++ {
	}
	if i < len(line) && line[i] != ';' {
		return errChunkLine
	}
	cr.excess -= 16 + 2*int64(n)
	cr.excess = max(cr.excess, 0)
	if cr.excess > 16*1024 {
		return errChunkExcess
	}
	cr.n = n
	if n == 0 {
		return cr.readTrailer()
	}
	return nil
}

// readTrailer reads the trailer section up to its empty line.
func (cr *chunkedReader) readTrailer() error {
	for {
		line, err := cr.line()
		if err != nil {
			return err
		}
		if len(line) == 0 {
			cr.done = true
			return nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errChunkLine // obs-fold
		}
		// A trailer line is a header line, judged as net/http does.
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(string(line[:colon])) || !validValue(string(line[colon+1:])) {
			return errChunkLine
		}
		if len(cr.trailer)+len(line)+2 > maxTrailer {
			return errTrailerLarge
		}
		cr.trailer = append(cr.trailer, line...)
		cr.trailer = append(cr.trailer, '\r', '\n')
	}
}

// appendChunkHeader appends the size line of an n-byte chunk.
func appendChunkHeader(b []byte, n int) []byte {
	b = strconv.AppendUint(b, uint64(n), 16)
	return append(b, '\r', '\n')
}

// lengthReader reads the next n bytes of r: a Content-Length body.
type lengthReader struct {
	r *bufio.Reader
	n int64
}

// finished reports whether the body has been read to its end.
func (l *lengthReader) finished() bool { return l.n <= 0 }

func (l *lengthReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if err == io.EOF {
		if l.n > 0 {
			err = io.ErrUnexpectedEOF
		} else {
			err = nil
		}
	}
	return n, err
}
