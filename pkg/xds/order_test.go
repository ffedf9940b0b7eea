package xds

import (
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/protobuf/proto"
)

// lagCDS leaves c with a CDS push it has not acknowledged, so that
// go-control-plane defers the next CDS push until it does. It returns the
// state applied.
func lagCDS(t *testing.T, h *harness, c client, st state) state {
	t.Helper()
	c.holdACKs(cds)
	st = st.with(cds, cluster("default/x:80"))
	h.s.Apply(st)
	if g := c.next(); g.typeURL != cds {
		t.Fatalf("got %v, want the CDS push whose ACK is withheld", g)
	}
	return st
}

// withClusterC adds cluster c and routes external-http to it.
func withClusterC(st state) state {
	return st.with(cds, cluster("default/c:80")).
		with(rds, routeConfig("external-http", "default/a:80", "default/b:80", "default/c:80"))
}

// TestLaggingClientGetsClusterBeforeRoute is the outage: a client that has
// not acknowledged the previous CDS push must still get a new cluster before
// the route that names it (validate_clusters would reject the route), whether
// both come in one Apply or the cluster came in an earlier one.
func TestLaggingClientGetsClusterBeforeRoute(t *testing.T) {
	const stepTimeout = 10 * time.Second // long: the client must wake the Apply, not the timer
	for _, p := range protocols {
		for _, separate := range []bool{false, true} {
			name := p.name
			if separate {
				name += "/separate-applies"
			}
			t.Run(name, func(t *testing.T) {
				h := newHarnessWith(t, Options{StepTimeout: stepTimeout})
				st := baseState()
				h.s.Apply(st)
				subs := envoyLike()
				c := p.dial(t, h, subs)
				initial(t, c, subs)
				h.waitIdle(subs, 1)
				st = lagCDS(t, h, c, st)
				if separate {
					st = st.with(cds, cluster("default/c:80"))
					h.s.Apply(st) // CDS only: nothing to wait for
				}

				done := make(chan time.Duration, 1)
				go func() {
					start := time.Now()
					h.s.Apply(withClusterC(st))
					done <- time.Since(start)
				}()
				// Without the wait the route is pushed now: its watch is armed.
				if g, ok := c.nextWithin(300 * time.Millisecond); ok {
					t.Fatalf("got %v before the client acknowledged CDS; want nothing until then", g)
				}
				c.releaseACKs(cds)

				if g := c.next(); g.typeURL != cds || !slices.Contains(g.names, "default/c:80") {
					t.Fatalf("got %v, want CDS with default/c:80 first", g)
				}
				if g := c.next(); g.typeURL != rds || !slices.Equal(g.names, []string{"external-http"}) {
					t.Fatalf("got %v, want RDS [external-http] after the cluster", g)
				}
				select {
				case d := <-done:
					if d >= stepTimeout {
						t.Errorf("Apply took %v: it timed out instead of being woken by the CDS push", d)
					}
				case <-time.After(timeout):
					t.Fatal("Apply did not return")
				}
			})
		}
	}
}

// TestLaggingClientWithoutWait shows the scenario above is real: with
// waiting disabled the route overtakes the cluster it names.
func TestLaggingClientWithoutWait(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{StepTimeout: -1})
			st := baseState()
			h.s.Apply(st)
			subs := envoyLike()
			c := p.dial(t, h, subs)
			initial(t, c, subs)
			h.waitIdle(subs, 1)
			st = lagCDS(t, h, c, st)

			h.s.Apply(withClusterC(st))
			if g := c.next(); g.typeURL != rds {
				t.Fatalf("got %v, want the RDS push overtaking CDS", g)
			}
			c.releaseACKs(cds)
			if g := c.next(); g.typeURL != cds || !slices.Contains(g.names, "default/c:80") {
				t.Fatalf("got %v, want CDS with default/c:80", g)
			}
		})
	}
}

// TestStuckClientDoesNotBlockApply covers a client that never acknowledges
// anything: Apply gives up on it after StepTimeout, says so, keeps serving
// the others in order, and does not wait for it again.
func TestStuckClientDoesNotBlockApply(t *testing.T) {
	const stepTimeout = 300 * time.Millisecond
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			core, logs := observer.New(zap.WarnLevel)
			h := newHarnessWith(t, Options{StepTimeout: stepTimeout, Logger: zap.New(core).Sugar()})
			st := baseState()
			h.s.Apply(st)
			subs := envoyLike()
			stuck := p.dialAs(t, h, subs, "stuck-node", servedTypes[:]...)
			good := p.dial(t, h, subs)
			initial(t, stuck, subs)
			initial(t, good, subs)
			h.waitIdle(subs, 1) // the good client; the stuck one has no watch armed

			st = withClusterC(st)
			start := time.Now()
			h.s.Apply(st)
			if d := time.Since(start); d < stepTimeout || d > stepTimeout+2*time.Second {
				t.Errorf("Apply took %v, want about the step timeout %v", d, stepTimeout)
			}
			var warned bool
			for _, e := range logs.FilterMessageSnippet("not sent a push in time").All() {
				f := e.ContextMap()
				if f["node"] == "stuck-node" && strings.Contains(strings.Join(anyStrings(f["typeURLs"]), ","), cds) {
					warned = true
				}
				if f["node"] == testNode {
					t.Errorf("the good client was reported lagging: %v", f)
				}
			}
			if !warned {
				t.Errorf("no warning naming stuck-node and CDS; logs: %v", logs.All())
			}
			expectClusterThenRoute(t, good, "default/c:80")

			// The stuck client is not waited for again.
			h.waitIdle(subs, 1)
			start = time.Now()
			h.s.Apply(st.with(cds, cluster("default/d:80")).
				with(rds, routeConfig("external-http", "default/a:80", "default/d:80")))
			if d := time.Since(start); d >= stepTimeout {
				t.Errorf("second Apply took %v: it waited for the stuck client again", d)
			}
			expectClusterThenRoute(t, good, "default/d:80")
			if g, ok := stuck.nextWithin(50 * time.Millisecond); ok {
				t.Errorf("the stuck client got %v without acknowledging anything", g)
			}
		})
	}
}

func expectClusterThenRoute(t *testing.T, c client, cluster string) {
	t.Helper()
	if g := c.next(); g.typeURL != cds || !slices.Contains(g.names, cluster) {
		t.Fatalf("got %v, want CDS with %s", g, cluster)
	}
	if g := c.next(); g.typeURL != rds {
		t.Fatalf("got %v, want RDS after CDS", g)
	}
}

// anyStrings turns a logged []string back into one (the observer keeps
// zap.Any values as they were passed).
func anyStrings(v any) []string {
	switch v := v.(type) {
	case []string:
		return v
	case []any:
		out := make([]string, 0, len(v))
		for _, s := range v {
			if s, ok := s.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// TestNACKRetryAfterDependency: a route pushed before its cluster (the wait
// timed out) is rejected; once the client acknowledges the cluster it is sent
// the route again, unchanged, under a new version.
func TestNACKRetryAfterDependency(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{StepTimeout: 100 * time.Millisecond})
			nacks := make(chan NACK, 10)
			h.s.OnNACK(func(n NACK) { nacks <- n })
			st := baseState()
			h.s.Apply(st)
			subs := envoyLike()
			c := p.dial(t, h, subs)
			initial(t, c, subs)
			h.waitIdle(subs, 1)
			st = lagCDS(t, h, c, st)

			c.nackNext(rds, "route: unknown cluster 'default/c:80'")
			st = withClusterC(st)
			h.s.Apply(st) // gives up waiting for the CDS ACK
			rejected := c.next()
			if rejected.typeURL != rds {
				t.Fatalf("got %v, want the RDS push that overtook CDS", rejected)
			}
			select {
			case n := <-nacks:
				if n.TypeURL != rds || !slices.Equal(n.Resources, []string{"external-http"}) {
					t.Fatalf("NACK = %+v", n)
				}
			case <-time.After(timeout):
				t.Fatal("OnNACK not called")
			}
			if got := h.metric("weir_xds_nack_retries_total", rds); got != 0 {
				t.Errorf("retried before the client had the cluster: weir_xds_nack_retries_total{RDS} = %v", got)
			}

			c.releaseACKs(cds)
			if g := c.next(); g.typeURL != cds || !slices.Contains(g.names, "default/c:80") {
				t.Fatalf("got %v, want CDS with default/c:80", g)
			}
			retried := c.next()
			if retried.typeURL != rds || !slices.Equal(retried.names, []string{"external-http"}) {
				t.Fatalf("got %v, want RDS [external-http] again", retried)
			}
			if retried.version == rejected.version {
				t.Errorf("retried route has the rejected version %q", retried.version)
			}
			want := st[rds][0]
			if !proto.Equal(retried.res["external-http"], want) || !proto.Equal(rejected.res["external-http"], want) {
				t.Errorf("route content changed: rejected %v, retried %v", rejected.res, retried.res)
			}
			waitMetric(t, h, "weir_xds_nack_retries_total", rds, 1)

			// Accepted this time: nothing more is sent.
			h.waitIdle(subs, 1)
			if g, ok := c.nextWithin(100 * time.Millisecond); ok {
				t.Errorf("unexpected push %v after the retry was accepted", g)
			}
		})
	}
}

// TestNACKWithDependenciesIsNotRetried: a client that already had every
// cluster rejected the route for another reason; re-sending would not help.
func TestNACKWithDependenciesIsNotRetried(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t)
			nacks := make(chan NACK, 10)
			h.s.OnNACK(func(n NACK) { nacks <- n })
			st := baseState()
			h.s.Apply(st)
			subs := envoyLike()
			c := p.dial(t, h, subs)
			initial(t, c, subs)
			h.waitIdle(subs, 1)

			c.nackNext(rds, "bad route")
			h.s.Apply(withClusterC(st))
			expectClusterThenRoute(t, c, "default/c:80")
			select {
			case <-nacks:
			case <-time.After(timeout):
				t.Fatal("OnNACK not called")
			}
			if g, ok := c.nextWithin(300 * time.Millisecond); ok {
				t.Errorf("unexpected push %v after a NACK the client had everything for", g)
			}
			if got := h.metric("weir_xds_nack_retries_total", rds); got != 0 {
				t.Errorf("weir_xds_nack_retries_total{RDS} = %v, want 0", got)
			}
		})
	}
}

// TestRetryRateLimit: retries of one type run at most once per
// retryInterval, and those queued meanwhile are coalesced.
func TestRetryRateLimit(t *testing.T) {
	h := newHarness(t)
	h.s.Apply(baseState())
	st := &streamState{}
	h.s.scheduleRetry(typeRDS, []string{"external-http"}, st)
	waitMetric(t, h, "weir_xds_nack_retries_total", rds, 1)
	start := time.Now()
	h.s.scheduleRetry(typeRDS, []string{"external-http"}, st)
	h.s.scheduleRetry(typeRDS, []string{"external-http"}, st)
	waitMetric(t, h, "weir_xds_nack_retries_total", rds, 2)
	if d := time.Since(start); d < retryInterval-100*time.Millisecond {
		t.Errorf("second retry after %v, want about %v", d, retryInterval)
	}
	// The second retry took the whole queue: nothing is scheduled that
	// could make a third.
	h.s.retryMu.Lock()
	q := h.s.retries[typeRDS]
	h.s.retryMu.Unlock()
	if q.scheduled || len(q.names) > 0 {
		t.Errorf("a third retry is queued (%v); the queued retries must coalesce into the second", q.names)
	}
	if got := h.metric("weir_xds_nack_retries_total", rds); got != 2 {
		t.Errorf("weir_xds_nack_retries_total{RDS} = %v, want the queued retries coalesced into 2", got)
	}
}

// TestEndpointChangeDoesNotWait: EDS pushes wait for nothing, even while a
// client has not been sent a cluster of an earlier Apply.
func TestEndpointChangeDoesNotWait(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{StepTimeout: 5 * time.Second})
			st := baseState()
			h.s.Apply(st)
			subs := envoyLike()
			c := p.dial(t, h, subs)
			initial(t, c, subs)
			h.waitIdle(subs, 1)
			st = lagCDS(t, h, c, st)
			// A cluster the client cannot be sent until it acknowledges CDS.
			st = st.with(cds, cluster("default/y:80"))
			h.s.Apply(st)

			start := time.Now()
			h.s.Apply(st.with(eds, cla("default/a:80", "10.0.0.9", 8080)))
			if d := time.Since(start); d > time.Second {
				t.Errorf("EDS-only Apply took %v", d)
			}
			if g := c.next(); g.typeURL != eds {
				t.Fatalf("got %v, want EDS", g)
			}
			// An unchanged Apply does not wait either.
			start = time.Now()
			h.s.Apply(st)
			if d := time.Since(start); d > time.Second {
				t.Errorf("unchanged Apply took %v", d)
			}
		})
	}
}

func waitMetric(t *testing.T, h *harness, name, typeURL string, want float64) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for h.metric(name, typeURL) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s{%s} = %v, want %v", name, short[typeURL], h.metric(name, typeURL), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
