// Package translate owns the mapping from Weir's routing model (pkg/ir) to
// Envoy v3 xDS resources: listeners, route configurations, clusters, cluster
// load assignments and secrets. It is the only package in Weir that builds
// Envoy protos, and docs/xds-shape.md is the contract for what it emits.
//
// A Translator memoizes per fragment, so that re-translating after a change
// costs in proportion to what changed, and it hands back the very same proto
// pointer for every resource whose content did not change: downstream, an
// identical pointer means "nothing to push".
//
// Translate never emits config that Envoy would reject. Input it cannot
// express (a route to an unknown backend, a duplicate domain, an invalid
// regex, ...) is left out and reported in Resources.Warnings.
package translate

import (
	"fmt"
	"slices"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weir-dev/weir/pkg/ir"
)

// Options are the gateway-wide settings that do not come from source objects.
type Options struct {
	ExternalHTTPPort, ExternalHTTPSPort, InternalHTTPPort, InternalHTTPSPort uint32
	// UpstreamTrustedCA is the CA bundle file that TLS to a backend
	// (ir.Backend.TLSServerName) is verified against; the gateway reads
	// it. The default is where Debian, Ubuntu and the Envoy image keep it.
	UpstreamTrustedCA string
	// ListenAddress is the IP the listeners bind: "::" (dual-stack, the
	// default) or "0.0.0.0" for a kernel without IPv6.
	ListenAddress string
	// StreamIdleTimeout is the HTTP connection manager's stream_idle_timeout;
	// 0 disables it.
	StreamIdleTimeout time.Duration
	// XffNumTrustedHops is how many proxies in front of the gateway are
	// trusted to append to X-Forwarded-For: the client address is the
	// address that many entries from its right (Envoy's
	// xff_num_trusted_hops). 0 trusts none: the client is the peer.
	XffNumTrustedHops uint32
	// OwnListenersOnly leaves out the gateway's own (KIngress) listeners,
	// for a data plane that serves one Gateway: only the fragments' own
	// listeners are emitted, and their ports are all free to use.
	OwnListenersOnly bool
	// RateLimitService is the host:port of Weir's rate limit service
	// (pkg/xds/ratelimit), which routes with an ir.GlobalRateLimit ask;
	// without it such a route is not served.
	RateLimitService string
}

// DefaultOptions returns the ports and timeouts Weir uses unless configured.
func DefaultOptions() Options {
	return Options{
		ExternalHTTPPort:  8080,
		ExternalHTTPSPort: 8443,
		InternalHTTPPort:  8081,
		InternalHTTPSPort: 8444,
		ListenAddress:     "::",
		UpstreamTrustedCA: "/etc/ssl/certs/ca-certificates.crt",
		// Envoy's default is 5 minutes, below Knative's 10-minute maximum
		// revision timeout: a slow response would get a 408 from the
		// gateway, and a quiet websocket a reset.
		StreamIdleTimeout: 0,
	}
}

func (o Options) port(role ir.ListenerRole) uint32 {
	switch role {
	case ir.ExternalHTTP:
		return o.ExternalHTTPPort
	case ir.ExternalHTTPS:
		return o.ExternalHTTPSPort
	case ir.InternalHTTP:
		return o.InternalHTTPPort
	default:
		return o.InternalHTTPSPort
	}
}

// UnavailableCluster is the cluster a route uses when every backend of its
// split has weight 0. It never has endpoints, so the route answers 503 (no
// healthy upstream), in Envoy and in weir-proxy alike. Its name cannot clash
// with ir.BackendName, which always ends in ":port".
const UnavailableCluster = "weir.unavailable"

// InvalidBackendCluster is never defined: a share sent to it gets the
// route's cluster_not_found_response_code (ir.Route.UnresolvedStatus), as
// Gateway API asks of an HTTPRoute's invalid backends (500). Route
// configurations that use it do not validate clusters.
const InvalidBackendCluster = "weir.invalid-backend"

// Resources is one complete, consistent set of xDS resources.
//
// Resources and every proto reachable from it are shared with the Translator
// and with later results: treat them as read-only.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	Secrets   []*tlsv3.Secret

	// Sources maps SourceKey(typeURL, name) to the source objects a resource
	// was built from, so NACKs and errors can be attributed. Besides the five
	// resource types above it also has an entry per virtual host (key type
	// resourcev3.VirtualHostType), since Envoy's errors often name one. Plain
	// listeners come from no source object and map to nil.
	Sources map[string]ir.Provenance

	// Problems lists the input that was left out, and why, by the source
	// object to report it on. Translate never emits invalid config instead.
	// The list describes this result as a whole, not only what changed since
	// the previous call.
	Problems []Problem
	// Warnings are the Problems as text, each prefixed with its source.
	Warnings []string
}

// ProblemsBySource groups Problems by the object to report them on;
// problems without a source are left out.
func (r *Resources) ProblemsBySource() map[ir.ObjectRef][]Problem {
	out := map[ir.ObjectRef][]Problem{}
	for _, p := range r.Problems {
		if p.Source != (ir.ObjectRef{}) {
			out[p.Source] = append(out[p.Source], p)
		}
	}
	return out
}

// SourceKey is the key of Resources.Sources for a resource.
func SourceKey(typeURL, name string) string { return typeURL + "/" + name }

// ByType returns the resources grouped by type URL, as the go-control-plane
// snapshot cache takes them.
func (r *Resources) ByType() map[string][]types.Resource {
	out := make(map[string][]types.Resource, 5)
	out[resourcev3.ListenerType] = asResources(r.Listeners)
	out[resourcev3.RouteType] = asResources(r.Routes)
	out[resourcev3.ClusterType] = asResources(r.Clusters)
	out[resourcev3.EndpointType] = asResources(r.Endpoints)
	out[resourcev3.SecretType] = asResources(r.Secrets)
	return out
}

func asResources[T types.Resource](in []T) []types.Resource {
	out := make([]types.Resource, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}

// Translator turns fragments into Resources. It remembers the previous call
// so that the next one only rebuilds what changed. It is safe for concurrent
// use, but calls are serialized.
type Translator struct {
	mu sync.Mutex

	opts   Options
	static *shared

	// generation counts Translate calls; an entry seen in this call carries it.
	generation uint64
	entries    map[ir.ObjectRef]*fragmentEntry
	// order is the entries of the previous call, in input order; spare is
	// the backing array of the one before, reused for the next call.
	order, spare []*fragmentEntry

	roles     [len(tlsRoles) + len(plainRoles)]*roleTable
	clusters  clusterTable
	certs     certTable
	listeners listenerTable
	// fragmentWarnings are the problems of all fragments, in input order.
	fragmentWarnings []Problem

	last *Resources
}

// New returns a Translator. Zero ports, an empty ListenAddress and an
// empty UpstreamTrustedCA get their DefaultOptions value; a zero
// StreamIdleTimeout stays zero and disables the timeout.
func New(opts Options) *Translator {
	def := DefaultOptions()
	if opts.ExternalHTTPPort == 0 {
		opts.ExternalHTTPPort = def.ExternalHTTPPort
	}
	if opts.ExternalHTTPSPort == 0 {
		opts.ExternalHTTPSPort = def.ExternalHTTPSPort
	}
	if opts.InternalHTTPPort == 0 {
		opts.InternalHTTPPort = def.InternalHTTPPort
	}
	if opts.InternalHTTPSPort == 0 {
		opts.InternalHTTPSPort = def.InternalHTTPSPort
	}
	if opts.StreamIdleTimeout < 0 {
		opts.StreamIdleTimeout = 0
	}
	if opts.ListenAddress == "" {
		opts.ListenAddress = def.ListenAddress
	}
	if opts.UpstreamTrustedCA == "" {
		opts.UpstreamTrustedCA = def.UpstreamTrustedCA
	}
	t := &Translator{
		opts:    opts,
		static:  newShared(opts),
		entries: map[ir.ObjectRef]*fragmentEntry{},
	}
	for i, role := range ir.AllRoles {
		t.roles[i] = newRoleTable(role)
	}
	return t
}

// Translate returns the resources for frags, the complete set of fragments
// to serve. Fragments must not be modified once passed in: an unchanged
// pointer is taken to mean unchanged content.
//
// When no fragment changed since the previous call, the previous *Resources
// is returned as is. Otherwise every resource whose content did not change
// keeps its previous proto pointer.
//
// The error is reserved for internal failures; bad input only produces
// Warnings.
func (t *Translator) Translate(frags []*ir.Fragment) (res *Resources, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer func() {
		// A panic here would take the control plane down for one bad object.
		if r := recover(); r != nil {
			err = fmt.Errorf("translate: internal error: %v", r)
			res = nil
			t.reset()
		}
	}()

	t.generation++
	var d delta
	var inputWarnings []Problem
	order := t.spare[:0]
	for _, f := range frags {
		if f == nil {
			inputWarnings = append(inputWarnings, Problem{Reason: ReasonNotServed, Message: "nil fragment ignored"})
			continue
		}
		e := t.entries[f.Source]
		switch {
		case e == nil:
			e = &fragmentEntry{source: f.Source.String(), ref: f.Source}
			t.entries[f.Source] = e
			e.rebuild(f, t.static, &d)
		case e.generation == t.generation:
			inputWarnings = append(inputWarnings, Problem{Source: f.Source, Reason: ReasonNotServed,
				Message: "more than one fragment for this source; all but the first ignored"})
			continue
		case e.frag != f:
			e.rebuild(f, t.static, &d)
		}
		e.generation = t.generation
		if len(order) >= len(t.order) || t.order[len(order)] != e {
			d.orderChanged = true
		}
		e.pos = len(order)
		order = append(order, e)
	}
	if len(order) != len(t.order) {
		d.orderChanged = true
	}
	if len(t.entries) != len(order) {
		for ref, e := range t.entries {
			if e.generation != t.generation {
				e.evict(&d)
				delete(t.entries, ref)
			}
		}
	}
	t.order, t.spare = order, t.order

	if t.last != nil && !d.changed() {
		return t.last, nil
	}
	res, err = t.assemble(&d)
	if err != nil {
		t.reset()
		return nil, err
	}
	if len(inputWarnings) > 0 {
		res.Problems = append(inputWarnings, res.Problems...)
	}
	res.Warnings = problemStrings(res.Problems)
	t.last = res
	return res, nil
}

// reset forgets everything, so that after an internal error the next call
// starts from scratch instead of from a half-updated state.
func (t *Translator) reset() {
	fresh := New(t.opts)
	t.generation = fresh.generation
	t.entries = fresh.entries
	t.order, t.spare = nil, nil
	t.roles = fresh.roles
	t.clusters = clusterTable{}
	t.certs = certTable{}
	t.listeners = listenerTable{}
	t.fragmentWarnings = nil
	t.last = nil
}

// assemble brings the aggregate tables up to date with d and builds the
// result from them.
func (t *Translator) assemble(d *delta) (*Resources, error) {
	for _, rt := range t.roles {
		rt.update(d)
	}
	if err := t.certs.update(d, t.static); err != nil {
		return nil, err
	}

	res := &Resources{}
	// A TLS role without a certificate has no listener, so its routes are not
	// sent either.
	var served []*roleTable
	unavailable := false
	for _, role := range ir.AllRoles {
		if t.opts.OwnListenersOnly {
			break
		}
		l := t.static.plainListeners[role]
		if role.TLS() {
			l = t.certs.listeners[tlsIndex(role)]
		}
		if l == nil {
			continue
		}
		rt := t.roles[roleIndex(role)]
		served = append(served, rt)
		res.Listeners = append(res.Listeners, l)
		res.Routes = append(res.Routes, rt.config)
		unavailable = unavailable || rt.usesUnavailable
	}
	t.listeners.update(d)
	res.Listeners = append(res.Listeners, t.listeners.listeners...)
	res.Routes = append(res.Routes, t.listeners.routes...)
	unavailable = unavailable || t.listeners.usesUnavailable
	t.clusters.update(d, t.static, unavailable)
	res.Clusters = t.clusters.clusters
	if t.static.rateLimitEndpoint != nil {
		res.Clusters = append(slices.Clip(res.Clusters), t.static.rateLimit)
	}
	res.Endpoints = t.clusters.endpoints
	res.Secrets = t.certs.secrets

	// Most changes (endpoints, splits) keep every name and source, so the
	// previous map still holds.
	sourcesChanged := t.clusters.sourcesChanged || t.certs.changed || t.listeners.changed
	for _, rt := range t.roles {
		sourcesChanged = sourcesChanged || rt.sourcesChanged
	}
	if t.last != nil && !sourcesChanged {
		res.Sources = t.last.Sources
	} else {
		res.Sources = t.sources(res, served)
	}
	res.Problems = t.warnings(d, served)
	return res, nil
}

func (t *Translator) sources(res *Resources, served []*roleTable) map[string]ir.Provenance {
	n := len(res.Listeners) + len(res.Routes) + len(res.Clusters) + len(res.Endpoints) + len(res.Secrets)
	for _, rt := range served {
		n += len(rt.included)
	}
	out := make(map[string]ir.Provenance, n)
	for _, l := range res.Listeners {
		out[SourceKey(resourcev3.ListenerType, l.GetName())] = t.certs.listenerSources[l.GetName()]
	}
	for _, rt := range served {
		out[SourceKey(resourcev3.RouteType, rt.config.GetName())] = rt.provenance
		for _, p := range rt.included {
			// Two roles list the same virtual host; provenance is the same.
			if prev, ok := out[p.sourceKey]; ok && !sameSlice(prev, p.provenance) {
				out[p.sourceKey] = unionProvenance(prev, p.provenance)
			} else {
				out[p.sourceKey] = p.provenance
			}
		}
	}
	t.clusters.addSources(out)
	t.certs.addSources(out)
	t.listeners.addSources(out)
	return out
}

func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// warnings collects, in input order, the warnings of every fragment, then
// those of the aggregate tables of what is served.
func (t *Translator) warnings(d *delta, served []*roleTable) []Problem {
	if t.last == nil || d.warningsChanged || d.orderChanged && len(t.fragmentWarnings) > 0 {
		t.fragmentWarnings = nil
		for _, e := range t.order {
			t.fragmentWarnings = e.appendWarnings(t.fragmentWarnings)
		}
	}
	parts := [][]Problem{t.fragmentWarnings}
	for _, rt := range served {
		parts = append(parts, rt.warnings)
	}
	parts = append(parts, t.listeners.warnings, t.clusters.warnings, t.certs.warnings)
	return slices.Concat(parts...)
}
