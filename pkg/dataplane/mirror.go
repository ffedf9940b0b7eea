package dataplane

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// mirror is one of a route's request_mirror_policies: a copy of each
// sampled request goes to the cluster, and its answer is dropped, as in
// Envoy's router shadowing.
type mirror struct {
	cluster *cluster
	// A request is sampled when a random number below denominator is
	// below numerator (runtime_fraction's default_value; all when unset).
	numerator, denominator uint64
	// keepHost is disable_shadow_host_suffix_append: otherwise the copy's
	// host gets "-shadow" before its port.
	keepHost bool
}

// maxShadowsPerCluster is Envoy's default circuit breaker max_requests,
// which also bounds a cluster's shadow requests: past it, copies are not
// sent, so a slow mirror cannot pile up work in the proxy.
const maxShadowsPerCluster = 1024

func compileMirrors(ps []*routev3.RouteAction_RequestMirrorPolicy, path string, lookup func(name, path string) (*cluster, error)) ([]*mirror, error) {
	var out []*mirror
	for i, p := range ps {
		mp := idx(path, i)
		if err := onlyFields(p, mp, "cluster", "runtime_fraction", "disable_shadow_host_suffix_append"); err != nil {
			return nil, err
		}
		if p.GetCluster() == "" {
			return nil, invalid(sub(mp, "cluster"), "required (cluster_header is not supported by weir-proxy)")
		}
		c, err := lookup(p.GetCluster(), sub(mp, "cluster"))
		if err != nil {
			return nil, err
		}
		m := &mirror{cluster: c, numerator: 1, denominator: 1, keepHost: p.GetDisableShadowHostSuffixAppend()}
		if rf := p.GetRuntimeFraction(); rf != nil {
			fp := sub(mp, "runtime_fraction")
			// No runtime: a key would always fall back to default_value,
			// which Envoy only does when the key is unset in its runtime.
			if err := onlyFields(rf, fp, "default_value"); err != nil {
				return nil, err
			}
			m.numerator = uint64(rf.GetDefaultValue().GetNumerator())
			switch rf.GetDefaultValue().GetDenominator() {
			case typev3.FractionalPercent_HUNDRED:
				m.denominator = 100
			case typev3.FractionalPercent_TEN_THOUSAND:
				m.denominator = 10_000
			case typev3.FractionalPercent_MILLION:
				m.denominator = 1_000_000
			default:
				return nil, invalid(sub(fp, "default_value.denominator"), "unknown denominator")
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// sampled reports whether this request is copied.
func (m *mirror) sampled() bool {
	if m.numerator >= m.denominator {
		return true
	}
	return rand.Uint64N(m.denominator) < m.numerator //nolint:gosec // sampling, not security
}

// startShadows sends a copy of out, whose headers are final, to each
// sampled mirror. A copy with a body reads what the main request reads,
// through a teeBody that out.Body becomes; the stream keeps it, so that a
// copy whose body did not end is reset when the stream ends, as Envoy's
// router resets shadow streams still sending when it is destroyed.
func (s *stream) startShadows(out *http.Request, mirrors []*mirror, timeout time.Duration) {
	var tee *teeBody
	defer func() { s.tee = tee }()
	for _, m := range mirrors {
		c := m.cluster
		if c.missing || !m.sampled() {
			continue
		}
		ep := c.pick()
		if ep == nil {
			continue
		}
		if c.pool.shadows.Add(1) > maxShadowsPerCluster {
			c.pool.shadows.Add(-1)
			continue
		}
		copyReq := out.Clone(context.Background()) // headers and URL copied
		if !m.keepHost {
			copyReq.Host = shadowHost(out.Host)
		}
		copyReq.URL.Host = ep.addr
		if out.Body != nil {
			if tee == nil {
				tee = &teeBody{src: out.Body, limit: s.decoderBufferLimit()}
				out.Body = tee
			}
			copyReq.Body = tee.newSink()
		}
		go shadow(copyReq, c, timeout)
	}
}

// shadow sends one copy and drops its answer.
func shadow(req *http.Request, c *cluster, timeout time.Duration) {
	defer c.pool.shadows.Add(-1)
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	defer cancel()
	res, err := c.pool.main.RoundTrip(req.WithContext(ctx))
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 1<<20))
	res.Body.Close()
	c.stats.requests.inc(res.StatusCode)
}

// shadowHost is Envoy's shadow authority: "-shadow" before the port, if
// any ("[::1]:80" becomes "[::1]-shadow:80").
func shadowHost(host string) string {
	if i := strings.LastIndexByte(host, ':'); i > 0 && !strings.Contains(host[i:], "]") && (host[0] == '[' || strings.Count(host, ":") == 1) {
		return host[:i] + "-shadow" + host[i:]
	}
	return host + "-shadow"
}

// errShadowAborted ends a copy's body when the main request's body did
// not end cleanly, or the copy fell too far behind.
var errShadowAborted = errors.New("shadow request aborted")

// teeBody is the main request's body; what the main upstream reads is
// also given to each shadow's sink. A sink holds at most the connection
// buffer limit of unread bytes; past it that copy is aborted rather than
// slowing the main request, which never waits for a shadow.
type teeBody struct {
	src   io.ReadCloser
	sinks []*shadowSink
	// limit is what a shadow may hold: the stream's buffer limit, as
	// Envoy's retry_shadow_buffer_limit.
	limit int
	// mu orders the transport's Read against a Close or abort from
	// another goroutine.
	mu    sync.Mutex
	ended bool
}

func (t *teeBody) newSink() *shadowSink {
	s := &shadowSink{limit: t.limit}
	s.cond = sync.NewCond(&s.mu)
	t.sinks = append(t.sinks, s)
	return s
}

func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.src.Read(p)
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.ended {
		for _, s := range t.sinks {
			s.push(p[:n], err)
		}
		t.ended = err != nil
	}
	return n, err
}

func (t *teeBody) Close() error {
	t.abort()
	return t.src.Close()
}

// abort resets the copies whose body has not ended; a finished one is
// left to get its answer.
func (t *teeBody) abort() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.ended {
		t.ended = true
		for _, s := range t.sinks {
			s.push(nil, errShadowAborted)
		}
	}
}

// shadowSink is one shadow's copy of the body.
type shadowSink struct {
	limit int
	mu    sync.Mutex
	cond  *sync.Cond
	buf   []byte
	err   error // io.EOF at a clean end
}

func (s *shadowSink) push(p []byte, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	if len(s.buf)+len(p) > s.limit {
		s.buf, s.err = nil, errShadowAborted
	} else {
		s.buf = append(s.buf, p...)
		s.err = err
	}
	s.cond.Broadcast()
}

func (s *shadowSink) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.buf) == 0 && s.err == nil {
		s.cond.Wait()
	}
	if len(s.buf) > 0 {
		n := copy(p, s.buf)
		s.buf = s.buf[n:]
		return n, nil
	}
	return 0, s.err
}

func (s *shadowSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.buf, s.err = nil, errShadowAborted
		s.cond.Broadcast()
	}
	return nil
}
