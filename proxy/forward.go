package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gwelb/gwelb/fsm"
)

// Handler returns the http.Handler of a listener serving the named pools,
// or every pool when none is named.
func (s *Server) Handler(pools ...string) http.Handler {
	return &handler{s: s, pools: pools}
}

type handler struct {
	s     *Server
	pools []string
}

// reqState is one request's routing decision, shared by the rewrite, the
// retrying transport, the response hook and the access log.
type reqState struct {
	pv      *poolView
	keys    stickyKeys
	value   string // the sticky value that decided (query beats cookie)
	carried string // the route the request carried, "" if none
	member  int    // index of the member serving the request
	body    *reqBody

	upstreamStart time.Time
	upstreamTime  time.Duration
	status        int // status the member answered, for upgrades the handler never sees
	// retriedFrom is the route of the member whose connection failed
	// when the one retry (rule 8) moved the request; "" when none did.
	retriedFrom string

	websocket bool // the member accepted a WebSocket: counted in gwelb_websockets until the request ends
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s := h.s
	lw := &logWriter{ResponseWriter: w}
	st := &reqState{member: -1}
	defer func() {
		s.record(st, lw)
		s.accessLog.log(r, lw, st, start)
	}()

	// The connection guard stops reading request heads after a GET that
	// asks to upgrade, since what follows may be a WebSocket: unless the
	// member switches protocols, that connection must carry nothing more.
	_, lw.closeUnlessSwitched = r.Header["Upgrade"]
	if code, reason := refuse(r); code != 0 {
		if code == http.StatusMethodNotAllowed {
			lw.Header().Set("Allow", allowHeader)
		}
		answer(lw, r, code, reason)
		return
	}

	var pv *poolView
	for held := false; ; held = true {
		v := s.view.Load()
		if v == nil {
			answer(lw, r, http.StatusServiceUnavailable, "gwelb: not ready: no routing table yet")
			return
		}
		pv = v.match(r.URL.Path)
		if pv == nil || (len(h.pools) > 0 && !slices.Contains(h.pools, pv.spec.Name)) {
			answer(lw, r, http.StatusNotFound, "gwelb: no pool serves this path")
			return
		}
		st.pv = pv
		st.keys = readSticky(r, pv.spec.Sticky.Query, pv.spec.Sticky.Cookie)
		st.value = st.keys.value()
		st.carried = fsm.RouteOf(st.value)
		st.member = pv.pick(st.value, st.carried, time.Now().UnixNano())
		// About to move a session (its route unknown or unusable here):
		// if the table may be behind the cluster's, wait for it to catch
		// up and decide again on the table current then.
		moves := st.carried != "" && (st.member < 0 || pv.pool.Member(st.member).Route != st.carried)
		if held && moves && s.refuseStaleMove(pv, st.carried) {
			// Still behind after the wait: 503 keeps the visitor's
			// cookie, and their retry reaches a node that knows the
			// member, or this one caught up (DESIGN.md §6.1).
			st.member = -1
			lw.Header().Set("Retry-After", "1")
			answer(lw, r, http.StatusServiceUnavailable, "gwelb: this node may be behind the cluster: route "+st.carried+" is unknown or disabled here; try again")
			return
		}
		if held || !moves || !s.awaitFresh(r.Context(), start) {
			break
		}
	}
	if st.member < 0 {
		answer(lw, r, http.StatusServiceUnavailable, "gwelb: no usable member in pool "+pv.spec.Name)
		return
	}
	upgrade := restrictUpgrade(r)
	if r.Body != nil && r.Body != http.NoBody {
		// Every body goes to the member through reqBody (rewrite), so
		// that whatever goes wrong on the client's side of it is known to
		// be the client's. (Its ResponseController escapes: made here,
		// GETs do not pay for it.) r.Body itself stays net/http's: it
		// looks at it to decide whether the connection can be reused.
		st.body = s.newBody(r.Body, http.NewResponseController(w))
		defer func() {
			st.body.finish()
			if !st.body.complete() {
				// Answered before the client's body was all read: the
				// rest of it must never be read as the next request.
				guardOf(r.Context()).stopReading()
			}
		}()
	}
	pv.members[st.member].inflight.Add(1)
	// A retry may move the request; release whichever member serves it last.
	defer func() { pv.members[st.member].inflight.Add(-1) }()
	// Bodies stream both ways at once (rule 9): a member may answer before
	// the request body has all arrived, and without full duplex net/http's
	// HTTP/1 server would cut the rest of the body off once the response
	// headers go out. HTTP/2 is always full duplex and says so with an error.
	_ = http.NewResponseController(w).EnableFullDuplex()
	ctx := context.WithValue(r.Context(), stateKey{}, st)
	if upgrade {
		ctx = traceUpgrade(ctx) // a tunnel must be able to wake a read on the member (websocket.go)
	}
	s.rp.ServeHTTP(lw, r.WithContext(ctx))
}

// rewrite points the outbound request at the chosen member, keeping the
// request target byte for byte and appending to X-Forwarded-For as Apache does.
func (s *Server) rewrite(pr *httputil.ProxyRequest) {
	st := stateOf(pr.In.Context())
	target := st.pv.pool.Member(st.member).Target
	out := pr.Out
	out.URL.Scheme = target.Scheme
	out.URL.Host = target.Host
	out.Host = ""
	// ReverseProxy drops query parameters it cannot parse, and URL.Path
	// re-escapes; GWE gets exactly what the client sent.
	out.URL.RawQuery = pr.In.URL.RawQuery
	if path, _, _ := strings.Cut(pr.In.RequestURI, "?"); strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "//") {
		out.URL.Opaque = path
	}
	if st.body != nil && out.Body != nil {
		out.Body = st.body
	}
	if prior := pr.In.Header["X-Forwarded-For"]; len(prior) > 0 {
		out.Header["X-Forwarded-For"] = prior
	}
	pr.SetXForwarded()
}

// modifyResponse inserts the route cookie when the member serving the
// request is not the one its sticky value named (routing contract rule 7).
func (s *Server) modifyResponse(resp *http.Response) error {
	st := stateOf(resp.Request.Context())
	st.status = resp.StatusCode
	st.upstreamTime = time.Since(st.upstreamStart)
	if st.pv.spec.Sticky.Insert && st.pv.pool.Member(st.member).Route != st.carried {
		resp.Header.Add("Set-Cookie", st.pv.cookies[st.member])
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		s.websocketOpened(st) // gwelb_websockets, until the tunnel closes
		s.tunnel(resp)        // followed frame by frame, to close it cleanly on shutdown
	}
	return nil
}

// errorHandler answers when the member (and the fallback) gave no response:
// 400 or 408 when it was the client's body that failed, else 502 or 504;
// never 500.
func (s *Server) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	st := stateOf(r.Context())
	if st == nil {
		plain(w, http.StatusBadGateway, "gwelb: upstream unavailable")
		return
	}
	if !st.upstreamStart.IsZero() && st.upstreamTime == 0 {
		st.upstreamTime = time.Since(st.upstreamStart)
	}
	if timedOut, cerr := st.body.clientFailure(); timedOut || cerr != nil {
		// The client's side of the body failed: what is left of this
		// connection's byte stream cannot be trusted to hold the next
		// request, and the client may still be sending.
		g := guardOf(r.Context())
		g.stopReading()
		w.Header().Set("Connection", "close")
		switch {
		case timedOut:
			plain(w, http.StatusRequestTimeout, "gwelb: request body too slow")
		case g.refused() || errors.Is(cerr, errBadFraming) || r.Context().Err() == nil:
			// Malformed chunked framing, or a body net/http could not read.
			plain(w, http.StatusBadRequest, "gwelb: malformed request body")
		default:
			w.WriteHeader(499) // the client went away mid-body
		}
		s.log.Debug("request body failed on the client's side", "pool", st.pv.spec.Name, "timeout", timedOut, "err", cerr)
		return
	}
	if r.Context().Err() != nil {
		// The client went away; nobody reads the answer, and it is no
		// upstream's fault worth a warning.
		w.WriteHeader(499)
		return
	}
	switch {
	case isTimeout(err):
		plain(w, http.StatusGatewayTimeout, "gwelb: upstream timeout")
	default:
		plain(w, http.StatusBadGateway, "gwelb: upstream unavailable")
	}
	if st.member >= 0 {
		s.log.Warn("upstream request failed", "pool", st.pv.spec.Name, "route", st.pv.members[st.member].route, "err", err)
	}
}

// retryTransport sends a request to its chosen member and, when the member
// gives no response at all, once more to the fallback member (rule 8).
// Only the member's failures count: when the client's body failed (or the
// client went away) the member is neither quarantined, nor reported, nor
// replaced by a retry.
type retryTransport struct{ s *Server }

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	st := stateOf(req.Context())
	st.upstreamStart = time.Now()
	resp, err := t.s.transport.RoundTrip(req)
	if err == nil {
		st.body.answered() // no retry can follow: the kept body goes
		return resp, nil
	}
	if clientsFault(req, st) {
		return nil, err
	}
	failedIdx, failed := st.member, st.pv.members[st.member]
	t.fail(st, err)
	if !isConnFailure(err) {
		return nil, err
	}
	var body io.ReadCloser
	if req.Body != nil {
		if st.body == nil {
			return nil, err
		}
		if body = st.body.rewind(); body == nil {
			return nil, err // more of the body was sent than was kept
		}
	}
	// The failed member is skipped even when fail_timeout is 0 and it is
	// not quarantined.
	next := st.pv.pickExcept(st.value, st.carried, time.Now().UnixNano(), failedIdx)
	if next < 0 {
		return nil, err
	}
	t.s.log.Info("retrying on fallback member", "pool", st.pv.spec.Name, "failed", failed.route, "fallback", st.pv.members[next].route, "err", err)
	failed.metrics.retries.Inc()
	failed.inflight.Add(-1)
	st.pv.members[next].inflight.Add(1)
	st.member = next
	st.retriedFrom = failed.route
	retry := req.Clone(req.Context())
	retry.Body = body
	target := st.pv.pool.Member(next).Target
	retry.URL.Scheme, retry.URL.Host = target.Scheme, target.Host
	st.upstreamStart = time.Now()
	resp, err = t.s.transport.RoundTrip(retry)
	if err != nil && !clientsFault(req, st) {
		t.fail(st, err) // the fallback's failure counts too (rule 8)
	}
	return resp, err
}

// clientsFault reports whether a request that got no response failed on
// the client's side: the client went away, or reading its body failed
// (malformed, reset, too slow).
func clientsFault(req *http.Request, st *reqState) bool {
	if req.Context().Err() != nil {
		return true
	}
	timedOut, err := st.body.clientFailure()
	return timedOut || err != nil
}

// fail records that the request's current member gave no response:
// quarantine after a connection failure, and a health observation.
func (t *retryTransport) fail(st *reqState, err error) {
	m := st.pv.members[st.member]
	if isConnFailure(err) {
		m.quarantinedUntil.Store(time.Now().Add(st.pv.spec.Quarantine()).UnixNano())
	}
	(*t.s.observer.Load()).ObserveFailure(st.pv.spec.Name, m.route, err)
}

// isConnFailure reports whether err means the member never answered:
// refused, unreachable, reset or closed before any response byte, or a
// connect timeout.
func isConnFailure(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// answer writes one of the balancer's own answers to a request it does
// not forward. A body the request has is not read: the connection closes
// after the answer (net/http would otherwise wait for the whole body, with
// no deadline, to keep the connection).
func answer(w *logWriter, r *http.Request, code int, msg string) {
	if r.Body != nil && r.Body != http.NoBody {
		w.Header().Set("Connection", "close")
		guardOf(r.Context()).stopReading()
	}
	plain(w, code, msg)
}

// plain writes a short text answer.
func plain(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}
