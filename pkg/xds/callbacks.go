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

// streamState is what the server remembers about one stream. go-control-plane
// calls every callback of a stream from that stream's goroutine, so the
// contents need no lock; only the streams map is shared.
type streamState struct {
	node string
	// last is the most recent push of each type, kept so a NACK can name the
	// rejected resources. Names are only extracted when a NACK arrives.
	last map[string]push
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

// callbacks tracks streams for the metrics and for NACK reporting.
type callbacks struct {
	s *Server
}

var _ serverv3.Callbacks = (*callbacks)(nil)

func (c *callbacks) open(k streamKey) {
	c.s.streams.Store(k, &streamState{last: make(map[string]push)})
	c.s.metrics.clients.Inc()
}

func (c *callbacks) closed(k streamKey) {
	c.s.streams.Delete(k)
	c.s.metrics.clients.Dec()
}

func (c *callbacks) stream(k streamKey) *streamState {
	if v, ok := c.s.streams.Load(k); ok {
		return v.(*streamState)
	}
	return nil
}

// request records the node and reports the request if it is a NACK, i.e. it
// carries error_detail.
func (c *callbacks) request(k streamKey, node *core.Node, typeURL, nonce string, nack *rpcstatus.Status) {
	st := c.stream(k)
	if st == nil {
		return
	}
	if st.node == "" && node != nil {
		// Only the first request must carry the node.
		st.node = node.GetId()
	}
	if nack == nil {
		return
	}
	n := NACK{
		Node:      st.node,
		TypeURL:   typeURL,
		Error:     nack.GetMessage(),
		Resources: st.last[typeURL].names(),
	}
	c.s.metrics.nack(typeURL)
	c.s.log.Warnw("xDS client rejected a push",
		"node", n.Node, "typeURL", typeURL, "nonce", nonce, "error", n.Error,
		"resources", truncate(n.Resources, 10), "resourceCount", len(n.Resources))
	for _, fn := range c.s.nackHooks() {
		fn(n)
	}
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
	c.request(streamKey{id: id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail())
	return nil
}

func (c *callbacks) OnStreamResponse(_ context.Context, id int64, req *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	typeURL := req.GetTypeUrl()
	c.s.metrics.push(typeURL)
	if st := c.stream(streamKey{id: id}); st != nil {
		st.last[typeURL] = push{sotw: resp}
	}
}

func (c *callbacks) OnDeltaStreamOpen(_ context.Context, id int64, _ string) error {
	c.open(streamKey{delta: true, id: id})
	return nil
}

func (c *callbacks) OnDeltaStreamClosed(id int64, _ *core.Node) {
	c.closed(streamKey{delta: true, id: id})
}

func (c *callbacks) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	c.request(streamKey{delta: true, id: id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail())
	return nil
}

func (c *callbacks) OnStreamDeltaResponse(id int64, req *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	typeURL := req.GetTypeUrl()
	c.s.metrics.push(typeURL)
	if st := c.stream(streamKey{delta: true, id: id}); st != nil {
		st.last[typeURL] = push{delta: resp}
	}
}

// REST fetches are not served (Register does not expose them).
func (c *callbacks) OnFetchRequest(context.Context, *discovery.DiscoveryRequest) error { return nil }
func (c *callbacks) OnFetchResponse(*discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {
}
