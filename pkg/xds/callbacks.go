package xds

import (
	"context"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	// Linked so NACKed state-of-the-world secret pushes can be decoded for
	// their names; the other served types are linked by go-control-plane.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
)

// streamKey identifies a stream: go-control-plane numbers state-of-the-world
// and delta streams independently.
type streamKey struct {
	delta bool
	id    int64
}

type push struct {
	sotw  *discovery.DiscoveryResponse
	delta *discovery.DeltaDiscoveryResponse
}

func (p push) names() []string {
	if p.delta != nil {
		names := make([]string, 0, len(p.delta.GetResources()))
		for _, r := range p.delta.GetResources() {
			names = append(names, r.GetName())
		}
		return names
	}
	// State-of-the-world responses carry only serialized resources; decoding
	// them is acceptable on this rare path.
	names := make([]string, 0, len(p.sotw.GetResources()))
	for _, a := range p.sotw.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			continue
		}
		if wrapped, ok := m.(*discovery.Resource); ok {
			names = append(names, wrapped.GetName())
			continue
		}
		names = append(names, cache.GetResourceName(m))
	}
	return names
}

// callbacks tracks streams: for the metrics, for NACK reporting and retries,
// and for Apply to know who has been sent what.
type callbacks struct {
	s *Server
}

var _ serverv3.Callbacks = (*callbacks)(nil)

func (c *callbacks) open(k streamKey) {
	s := c.s
	s.trackMu.Lock()
	s.streams[k] = &streamState{delta: k.delta, last: make(map[string]push)}
	s.trackMu.Unlock()
	s.metrics.clients.Inc()
}

func (c *callbacks) closed(k streamKey) {
	s := c.s
	s.trackMu.Lock()
	if st := s.streams[k]; st != nil {
		st.closed = true
		if st.pendingReq != nil {
			s.deltaReqs.Delete(st.pendingReq)
		}
		delete(s.streams, k)
		s.signal() // a closed stream no longer holds up an Apply
	}
	s.trackMu.Unlock()
	s.metrics.clients.Dec()
}

// stream returns k's state. Without trackMu, only k's goroutine may use the
// result, and only the fields that goroutine alone writes.
func (c *callbacks) stream(k streamKey) *streamState {
	c.s.trackMu.Lock()
	defer c.s.trackMu.Unlock()
	return c.s.streams[k]
}

// request is what the callbacks use of a request of either protocol.
type request struct {
	node    *core.Node
	typeURL string
	nonce   string
	nack    *rpcstatus.Status

	names      []string // state of the world
	sub, unsub []string // delta
	deltaReq   *discovery.DeltaDiscoveryRequest
}

// request records the request in the stream's state, reports it if it is a
// NACK (it carries error_detail), and schedules the retries an ACK unblocks.
func (c *callbacks) request(k streamKey, r request) {
	s := c.s
	st := c.stream(k)
	if st == nil {
		return
	}
	t := typeIndex(r.typeURL)
	var set map[string]struct{}
	if t >= 0 && !k.delta {
		// Built outside the lock: Envoy sends every name on every request,
		// 20,000 of them for EDS. namesSrc is only written by this goroutine.
		set = nameSet(r.names, st.types[t].namesSrc)
	}

	var n NACK
	if r.nack != nil {
		n = NACK{TypeURL: r.typeURL, Error: r.nack.GetMessage(), Resources: st.last[r.typeURL].names()}
	}

	var ready [numTypes][]string
	s.trackMu.Lock()
	if st.node == "" && r.node != nil {
		// Only the first request must carry the node.
		st.node = r.node.GetId()
	}
	n.Node = st.node
	if st.pendingReq != nil {
		s.deltaReqs.Delete(st.pendingReq) // its watch was never created
		st.pendingReq = nil
	}
	acked := false
	if t >= 0 {
		tt := &st.types[t]
		if !tt.requested {
			// Its first response carries what is served now.
			if ts := s.types[r.typeURL]; ts.count.Load() > 0 {
				tt.ackWanted = ts.version.Load()
			}
		}
		// go-control-plane ignores a state-of-the-world request that does not
		// answer the latest response of its type.
		if k.delta || tt.pendingNonce == "" || r.nonce == tt.pendingNonce {
			tt.pendingNonce = ""
			if k.delta {
				tt.subscribeDelta(r.sub, r.unsub)
				st.pendingReq = r.deltaReq
				s.deltaReqs.Store(r.deltaReq, tt)
			} else {
				tt.subscribeSotw(r.names, set)
			}
			switch {
			case r.nack != nil:
				st.noteNACK(t, n.Resources)
			case r.nonce != "" && r.nonce == tt.sentNonce:
				tt.acked = tt.sent
				acked = true
				ready = st.readyRetries(t)
			}
		}
	}
	s.trackMu.Unlock()
	if acked {
		s.hooksMu.Lock()
		hooks := s.ackHooks
		s.hooksMu.Unlock()
		for _, fn := range hooks {
			fn(n.Node)
		}
	}

	for rt, names := range ready {
		if names != nil {
			s.scheduleRetry(rt, names, st)
		}
	}
	if r.nack == nil {
		return
	}
	s.metrics.nack(r.typeURL)
	s.log.Warnw("xDS client rejected a push",
		"node", n.Node, "typeURL", r.typeURL, "nonce", r.nonce, "error", n.Error,
		"resources", truncate(n.Resources, 10), "resourceCount", len(n.Resources))
	for _, fn := range s.nackHooks() {
		fn(n)
	}
}

// response records that a response is about to be sent on the stream.
func (c *callbacks) response(k streamKey, typeURL, version, nonce string, p push) {
	s := c.s
	s.metrics.push(typeURL)
	t := typeIndex(typeURL)
	v, ok := s.parseVersion(version)

	s.trackMu.Lock()
	defer s.trackMu.Unlock()
	st := s.streams[k]
	if st == nil {
		return
	}
	st.last[typeURL] = p
	st.lagging = false // it is moving again
	if t < 0 {
		return
	}
	tt := &st.types[t]
	if ok {
		tt.sent = v
	}
	tt.sentNonce = nonce
	if !k.delta {
		tt.pendingNonce = nonce
	}
	if p.delta != nil && tt.forget.Load() != nil {
		tt.clearForget(append(p.names(), p.delta.GetRemovedResources()...))
	}
	s.signal()
}

// truncate keeps logs of NACKed 20,000-cluster pushes readable.
func truncate(names []string, n int) []string {
	if len(names) <= n {
		return names
	}
	return names[:n]
}

func (c *callbacks) OnStreamOpen(_ context.Context, id int64, _ string) error {
	c.open(streamKey{id: id})
	return nil
}

func (c *callbacks) OnStreamClosed(id int64, _ *core.Node) {
	c.closed(streamKey{id: id})
}

func (c *callbacks) OnStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	c.request(streamKey{id: id}, request{
		node: req.GetNode(), typeURL: req.GetTypeUrl(), nonce: req.GetResponseNonce(), nack: req.GetErrorDetail(),
		names: req.GetResourceNames(),
	})
	return nil
}

func (c *callbacks) OnStreamResponse(_ context.Context, id int64, req *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	c.response(streamKey{id: id}, req.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce(), push{sotw: resp})
}

func (c *callbacks) OnDeltaStreamOpen(_ context.Context, id int64, _ string) error {
	c.open(streamKey{delta: true, id: id})
	return nil
}

func (c *callbacks) OnDeltaStreamClosed(id int64, _ *core.Node) {
	c.closed(streamKey{delta: true, id: id})
}

func (c *callbacks) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	c.request(streamKey{delta: true, id: id}, request{
		node: req.GetNode(), typeURL: req.GetTypeUrl(), nonce: req.GetResponseNonce(), nack: req.GetErrorDetail(),
		sub: req.GetResourceNamesSubscribe(), unsub: req.GetResourceNamesUnsubscribe(), deltaReq: req,
	})
	return nil
}

func (c *callbacks) OnStreamDeltaResponse(id int64, req *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	c.response(streamKey{delta: true, id: id}, req.GetTypeUrl(), resp.GetSystemVersionInfo(), resp.GetNonce(), push{delta: resp})
}

// REST fetches are not served (Register does not expose them).
func (c *callbacks) OnFetchRequest(context.Context, *discovery.DiscoveryRequest) error { return nil }
func (c *callbacks) OnFetchResponse(*discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {
}
