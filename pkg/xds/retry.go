package xds

import (
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// retryInterval is the least time between two retries of one type, so a
// resource that is rejected for good does not loop hot.
const retryInterval = time.Second

// retryWait is a NACKed push waiting for the stream to acknowledge what it
// depends on.
type retryWait struct {
	names []string
	deps  typeSet
	need  [numTypes]uint64 // version of each dep the stream must acknowledge
}

// retryQueue collects the retries of one type until they run.
type retryQueue struct {
	names     []string
	streams   []*streamState // delta streams, whose subscription must forget the names
	scheduled bool
	last      time.Time
}

// noteNACK records, for a stream that rejected names of type t, whether to
// re-send them once it has what they depend on. A stream that had already
// acknowledged everything t depends on rejected them for another reason, and
// gets no retry. Called with trackMu held.
func (st *streamState) noteNACK(t int, names []string) {
	deps := retryDeps[t]
	if deps == 0 || len(names) == 0 {
		return
	}
	w := &retryWait{names: names, deps: deps}
	missing := false
	for d := range numTypes {
		if deps.has(d) {
			w.need[d] = st.types[d].owed
			missing = missing || st.types[d].acked < w.need[d]
		}
	}
	if missing {
		st.types[t].retry = w
	}
}

// readyRetries removes and returns, by type, the retries of a stream that
// just acknowledged a push of type acked. Called with trackMu held.
func (st *streamState) readyRetries(acked int) (ready [numTypes][]string) {
	for t := range numTypes {
		w := st.types[t].retry
		if w == nil || !w.deps.has(acked) {
			continue
		}
		ok := true
		for d := range numTypes {
			if w.deps.has(d) && st.types[d].acked < w.need[d] {
				ok = false
			}
		}
		if ok {
			ready[t] = w.names
			st.types[t].retry = nil
		}
	}
	return ready
}

// scheduleRetry queues names of type t for a re-push to st, at most once per
// retryInterval per type. It never touches a cache itself: it runs on
// go-control-plane's stream goroutine.
func (s *Server) scheduleRetry(t int, names []string, st *streamState) {
	s.retryMu.Lock()
	defer s.retryMu.Unlock()
	q := &s.retries[t]
	q.names = append(q.names, names...)
	if st.delta {
		q.streams = append(q.streams, st)
	}
	if q.scheduled {
		return
	}
	q.scheduled = true
	time.AfterFunc(max(0, time.Until(q.last.Add(retryInterval))), func() { s.runRetry(t) })
}

// runRetry re-pushes the queued resources of type t with their current
// content. The LinearCache gives them a new version, which resends them to
// state-of-the-world subscribers; delta subscribers compare content hashes,
// so the delta streams that asked are made to forget the rejected version.
func (s *Server) runRetry(t int) {
	if s.ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	s.retryMu.Lock()
	q := &s.retries[t]
	names, streams := q.names, q.streams
	q.names, q.streams, q.scheduled, q.last = nil, nil, false, time.Now()
	s.retryMu.Unlock()

	ts := s.types[servedTypes[t]]
	update := make(map[string]types.Resource, len(names))
	for _, n := range names {
		if e := ts.served[n]; e != nil {
			update[n] = e.res
		}
	}
	if len(update) == 0 {
		return // removed since
	}

	s.trackMu.Lock()
	for _, st := range streams {
		if st.closed {
			continue
		}
		f := &st.types[t].forget
		next := make(map[string]struct{}, len(update))
		if old := f.Load(); old != nil {
			for n := range *old {
				next[n] = struct{}{}
			}
		}
		for n := range update {
			next[n] = struct{}{}
		}
		f.Store(&next)
	}
	s.trackMu.Unlock()

	if err := ts.cache.UpdateResources(update, nil); err != nil {
		s.log.Errorw("Failed to notify xDS watches", "typeURL", ts.url, "error", err)
	}
	ts.version.Add(1)
	s.metrics.nackRetry(ts.url)
	s.log.Infow("Re-sent rejected xDS resources now that the client has their dependencies",
		"typeURL", ts.url, "resources", truncate(names, 10), "resourceCount", len(update))
}

// clearForget drops from a delta stream's forget set the resources a
// response of type t carries. Called with trackMu held.
func (tt *typeTrack) clearForget(sent []string) {
	old := tt.forget.Load()
	if old == nil {
		return
	}
	next := make(map[string]struct{}, len(*old))
	for n := range *old {
		next[n] = struct{}{}
	}
	for _, n := range sent {
		delete(next, n)
	}
	if len(next) == 0 {
		tt.forget.Store(nil)
	} else {
		tt.forget.Store(&next)
	}
}

// watchCache is a LinearCache whose delta watches see the stream's forget
// set through their subscription.
type watchCache struct {
	*cache.LinearCache
	s *Server
}

func (c watchCache) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, ch chan cache.DeltaResponse) (func(), error) {
	// The request callback ran just before, on this goroutine, and left the
	// stream's forget set under the request.
	if v, ok := c.s.deltaReqs.LoadAndDelete(req); ok {
		sub = forgetSub{Subscription: sub, forget: v.(*typeTrack)}
	}
	return c.LinearCache.CreateDeltaWatch(req, sub, ch)
}

// forgetSub is a subscription whose client appears not to know the
// resources in its forget set.
type forgetSub struct {
	cache.Subscription
	forget *typeTrack
}

func (f forgetSub) ReturnedResources() map[string]string {
	rr := f.Subscription.ReturnedResources()
	if p := f.forget.forget.Load(); p != nil {
		return forgetting(rr, *p)
	}
	return rr
}
