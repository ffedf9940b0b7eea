package translate

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weir-dev/weir/pkg/envoycheck"
	"github.com/weir-dev/weir/pkg/ir"
)

// Fragments may define their own listeners (ir.Listener), as a Gateway
// does. Each port of a fragment becomes one Envoy listener named
// "<kind>/<namespace>/<name>/<port>", self-contained: its route
// configurations hold only that fragment's virtual hosts. HTTP listeners
// of a port share one route configuration of the listener's name; each
// HTTPS listener is a filter chain matching its hostname by SNI, with a
// route configuration of its own named "<listener>/<ir listener name>".
// Each TLS route of a TLS listener is a filter chain matching the route's
// server names, with a tcp_proxy to its backends; on a passthrough listener
// the chain forwards TLS as it came, on a terminating one it has the
// listener's certificates and forwards what is inside.

// ReasonListenerConflict: a listener whose port another listener has, or
// whose hostname another listener on the port has.
const ReasonListenerConflict = "ListenerConflict"

// listenerPart is one port of one fragment.
type listenerPart struct {
	partState
	entry    *fragmentEntry
	port     uint32
	name     string
	listener *listenerv3.Listener
	routes   []*routev3.RouteConfiguration
	// sources are Resources.Sources entries: the listener, its route
	// configurations and their virtual hosts.
	sources         []keyedSource
	usesUnavailable bool
	field           string
	warnings        []Problem
}

func compareListeners(a, b *listenerPart) int {
	return cmp.Or(cmp.Compare(a.port, b.port), strings.Compare(a.entry.source, b.entry.source))
}

// ownListenerName is the Envoy listener name of a fragment's port.
func ownListenerName(src ir.ObjectRef, port uint32) string {
	return strings.ToLower(src.Kind) + "/" + src.Namespace + "/" + src.Name + "/" + strconv.FormatUint(uint64(port), 10)
}

// rebuildListeners translates the fragment's own listeners. Parts equal to
// the previous ones are reused, so an unchanged port keeps its protos.
func (e *fragmentEntry) rebuildListeners(f *ir.Fragment, vhosts []*vhostPart, certs []*certPart, available nameSet, s *shared, w *warner) []*listenerPart {
	if len(f.Listeners) == 0 {
		for _, vh := range f.VirtualHosts {
			if vh != nil && vh.Listener != "" {
				w.addAt(vh.Field, ReasonNotServed, "virtual host %q left out: listener %q is not defined", vh.Name, vh.Listener)
			}
		}
		return nil
	}
	byPort := map[uint32][]*ir.Listener{}
	known := map[string]bool{}
	for _, l := range f.Listeners {
		switch {
		case l == nil:
			continue
		case l.Name == "" || known[l.Name]:
			w.addAt(l.Field, ReasonListenerConflict, "listener %q left out: its name is empty or not unique", l.Name)
			continue
		case l.Port == 0 || l.Port > 65535:
			w.addAt(l.Field, ReasonNotServed, "listener %q left out: port %d is out of range", l.Name, l.Port)
			continue
		case s.reservedPort(l.Port):
			w.addAt(l.Field, ReasonListenerConflict, "listener %q left out: port %d is the gateway's own (KIngress) listener's", l.Name, l.Port)
			continue
		}
		known[l.Name] = true
		byPort[l.Port] = append(byPort[l.Port], l)
	}
	for _, vh := range f.VirtualHosts {
		if vh != nil && vh.Listener != "" && !known[vh.Listener] {
			w.addAt(vh.Field, ReasonNotServed, "virtual host %q left out: listener %q is not served", vh.Name, vh.Listener)
		}
	}
	tlsRoutes := map[string][]*ir.TLSRoute{}
	for _, tr := range f.TLSRoutes {
		switch {
		case tr == nil:
		case !known[tr.Listener]:
			rw := routeWarner(w, tr.Provenance)
			rw.addAt(tr.Field, ReasonNotServed, "TLS route %s left out: listener %q is not served", tlsRouteName(tr), tr.Listener)
			if rw != w {
				w.list = append(w.list, rw.list...)
			}
		default:
			tlsRoutes[tr.Listener] = append(tlsRoutes[tr.Listener], tr)
		}
	}
	ports := make([]uint32, 0, len(byPort))
	for p := range byPort {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	secrets := map[string]bool{}
	for _, c := range certs {
		secrets[c.name] = true
	}
	out := make([]*listenerPart, 0, len(ports))
	for _, port := range ports {
		p := buildPortListener(e, f.Source, port, byPort[port], vhosts, tlsRoutes, available, secrets, s)
		if prev := e.listenerAt(port); prev != nil && prev.equal(p) {
			p = prev
		}
		if p.listener != nil {
			out = append(out, p)
		} else {
			w.list = append(w.list, p.warnings...)
		}
	}
	return out
}

func (e *fragmentEntry) listenerAt(port uint32) *listenerPart {
	for _, p := range e.listeners {
		if p.port == port {
			return p
		}
	}
	return nil
}

// equal reports whether q emits exactly what p does.
func (p *listenerPart) equal(q *listenerPart) bool {
	return p.usesUnavailable == q.usesUnavailable && proto.Equal(p.listener, q.listener) &&
		slices.EqualFunc(p.routes, q.routes, func(a, b *routev3.RouteConfiguration) bool { return proto.Equal(a, b) }) &&
		sameSources(p.sources, q.sources) && slices.Equal(p.warnings, q.warnings)
}

// buildPortListener builds the Envoy listener of one port from the
// fragment's listeners on it. A listener whose protocol cannot share the
// port with the first one, or whose hostname repeats one already on the
// port, is left out.
func buildPortListener(e *fragmentEntry, src ir.ObjectRef, port uint32, ls []*ir.Listener, vhosts []*vhostPart, tlsRoutes map[string][]*ir.TLSRoute, available nameSet, secrets map[string]bool, s *shared) *listenerPart {
	name := ownListenerName(src, port)
	p := &listenerPart{entry: e, port: port, name: name, field: ls[0].Field}
	w := warner{source: src}
	tls := ls[0].Protocol != ir.ProtocolHTTP
	hostnames := map[string]string{}
	var kept []*ir.Listener
	for _, l := range ls {
		switch {
		case l.Protocol < ir.ProtocolHTTP || l.Protocol > ir.ProtocolTLSTerminate:
			w.addAt(l.Field, ReasonNotServed, "listener %q left out: protocol %v is not supported", l.Name, l.Protocol)
			continue
		case (l.Protocol != ir.ProtocolHTTP) != tls:
			w.addAt(l.Field, ReasonListenerConflict, "listener %q left out: port %d also has listener %q, and HTTP cannot share a port with TLS", l.Name, port, ls[0].Name)
			continue
		}
		h := ir.LowerASCII(l.Hostname)
		if other, ok := hostnames[h]; ok {
			w.addAt(l.Field, ReasonListenerConflict, "listener %q left out: listener %q on port %d has the same hostname %q", l.Name, other, port, l.Hostname)
			continue
		}
		hostnames[h] = l.Name
		kept = append(kept, l)
	}
	if len(kept) == 0 {
		p.warnings = w.list
		return p
	}
	sources := map[ir.ObjectRef]int{}
	addSources := func(prov ir.Provenance) {
		for _, ref := range prov {
			sources[ref]++
		}
	}
	// routeConfig gathers the virtual hosts of the named listeners; a
	// domain already taken by an earlier one leaves the later out.
	routeConfig := func(rcName string, names map[string]bool) *routev3.RouteConfiguration {
		var out []*routev3.VirtualHost
		owner := map[string]*vhostPart{}
		var rcSources map[ir.ObjectRef]int = map[ir.ObjectRef]int{}
		for _, v := range vhosts {
			if !names[v.ir.Listener] || v.proto == nil {
				continue
			}
			if i := slices.IndexFunc(v.proto.Domains, func(d string) bool { return owner[d] != nil }); i >= 0 {
				d := v.proto.Domains[i]
				w.addAt(v.field, ReasonDomainConflict, "virtual host %q left out: domain %q is already served by virtual host %q on port %d", v.name, d, owner[d].name, port)
				continue
			}
			for _, d := range v.proto.Domains {
				owner[d] = v
			}
			out = append(out, v.proto)
			p.usesUnavailable = p.usesUnavailable || v.usesUnavailable
			p.sources = append(p.sources, keyedSource{v.sourceKey, v.provenance})
			for _, ref := range v.provenance {
				rcSources[ref]++
			}
		}
		rc := newRouteConfiguration(rcName, out)
		if slices.ContainsFunc(out, routesToInvalidBackend) {
			// Envoy answers cluster_not_found_response_code only for a
			// cluster it does not know, which validation would refuse.
			rc.ValidateClusters = wrapperspb.Bool(false)
		}
		p.routes = append(p.routes, rc)
		p.sources = append(p.sources, keyedSource{SourceKey(resourcev3.RouteType, rcName), sortedRefs(rcSources)})
		return rc
	}
	l := &listenerv3.Listener{Name: name, Address: bindAddress(s.opts, port)}
	var https []httpsChain
	if !tls {
		names := map[string]bool{}
		for _, il := range kept {
			names[il.Name] = true
			addSources(il.Provenance)
		}
		rc := routeConfig(name, names)
		l.FilterChains = []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{s.ownHCM(rc)}}}
	} else {
		l.ListenerFilters = []*listenerv3.ListenerFilter{s.tlsInspector}
		// Envoy refuses two filter chains with one server name.
		chainOf := map[string]string{}
		claim := func(names []string, chain, field string, w *warner) bool {
			key := names
			if len(key) == 0 {
				key = []string{""}
			}
			for _, n := range key {
				if other, ok := chainOf[n]; ok {
					w.addAt(field, ReasonListenerConflict, "%s left out: server name %q is already matched by %s on port %d", chain, n, other, port)
					return false
				}
			}
			for _, n := range key {
				chainOf[n] = chain
			}
			return true
		}
		for _, il := range kept {
			if il.Protocol == ir.ProtocolTLSPassthrough || il.Protocol == ir.ProtocolTLSTerminate {
				var ts *corev3.TransportSocket
				if il.Protocol == ir.ProtocolTLSTerminate {
					// No ALPN: the bytes inside are the backend's protocol.
					if ts = downstreamTLS(il, secrets, nil, s, &w); ts == nil {
						continue
					}
				}
				for _, tr := range tlsRoutes[il.Name] {
					rw := routeWarner(&w, tr.Provenance)
					fc, unavailable := passthroughChain(il, tr, available, s, rw)
					if fc != nil && !claim(fc.FilterChainMatch.GetServerNames(), "TLS route "+tlsRouteName(tr), tr.Field, rw) {
						fc = nil
					}
					if rw != &w {
						w.list = append(w.list, rw.list...)
					}
					if fc == nil {
						continue
					}
					fc.TransportSocket = ts
					l.FilterChains = append(l.FilterChains, fc)
					p.usesUnavailable = p.usesUnavailable || unavailable
					addSources(tr.Provenance)
				}
				addSources(il.Provenance)
				continue
			}
			ts := downstreamTLS(il, secrets, []string{"h2", "http/1.1"}, s, &w)
			if ts == nil {
				continue
			}
			var serverNames []string
			if il.Hostname != "" {
				sn, err := canonicalServerName(il.Hostname)
				if err != nil {
					w.addAt(il.Field, ReasonInvalidHost, "listener %q left out: hostname %q: %v", il.Name, il.Hostname, err)
					continue
				}
				serverNames = []string{sn}
			}
			if !claim(serverNames, fmt.Sprintf("listener %q", il.Name), il.Field, &w) {
				continue
			}
			rcName := name + "/" + il.Name
			rc := routeConfig(rcName, map[string]bool{il.Name: true})
			https = append(https, httpsChain{il, rc})
			l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
				Name:             il.Name,
				FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: serverNames},
				TransportSocket:  ts,
				Filters:          []*listenerv3.Filter{s.ownHCM(rc)},
			})
			addSources(il.Provenance)
		}
		if len(l.FilterChains) == 0 {
			p.warnings = w.list
			p.routes, p.sources = nil, nil
			return p
		}
		addMisdirected(https, s)
	}
	if err := l.ValidateAll(); err != nil {
		w.addAt(kept[0].Field, ReasonNotServed, "port %d left out: %v", port, err)
		p.warnings = w.list
		p.routes, p.sources = nil, nil
		return p
	}
	p.listener = l
	p.sources = append(p.sources, keyedSource{SourceKey(resourcev3.ListenerType, name), sortedRefs(sources)})
	p.warnings = w.list
	return p
}

// downstreamTLS is the transport socket that terminates TLS with the
// listener's certificates, or nil (with a problem) when none is served.
func downstreamTLS(il *ir.Listener, secrets map[string]bool, alpn []string, s *shared, w *warner) *corev3.TransportSocket {
	var sds []*tlsv3.SdsSecretConfig
	for _, c := range il.Certificates {
		if !secrets[c] {
			w.addAt(il.Field, ReasonUnsupportedCertificate, "listener %q: certificate %q is not served", il.Name, c)
			continue
		}
		sds = append(sds, &tlsv3.SdsSecretConfig{Name: c, SdsConfig: s.ads})
	}
	if len(sds) == 0 {
		w.addAt(il.Field, ReasonUnsupportedCertificate, "listener %q left out: no certificate to serve", il.Name)
		return nil
	}
	dtc := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: sds,
		AlpnProtocols:                  alpn,
	}}
	if err := withClientValidation(dtc, il.ClientValidation); err != nil {
		// Envoy would refuse the listener; serving it without the
		// check would let every client in.
		w.addAt(il.Field, ReasonUnsupportedCertificate, "listener %q left out: %v", il.Name, err)
		return nil
	}
	ctx, err := anypb.New(dtc)
	if err != nil {
		w.addAt(il.Field, ReasonNotServed, "listener %q left out: %v", il.Name, err)
		return nil
	}
	return &corev3.TransportSocket{Name: tlsTransportSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: ctx}}
}

// withClientValidation makes dtc ask clients for a certificate as cv
// says; a nil cv asks nothing.
func withClientValidation(dtc *tlsv3.DownstreamTlsContext, cv *ir.ClientValidation) error {
	if cv == nil {
		return nil
	}
	if _, err := envoycheck.CABundle(cv.CACertificates); err != nil {
		return fmt.Errorf("its client CA bundle: %w", err)
	}
	vc := &tlsv3.CertificateValidationContext{TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: cv.CACertificates}}}
	switch {
	case cv.AllowInsecureFallback:
		vc.TrustChainVerification = tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED
	case !cv.Optional:
		dtc.RequireClientCertificate = wrapperspb.Bool(true)
	}
	if cv.MaxDepth != nil {
		vc.MaxVerifyDepth = wrapperspb.UInt32(*cv.MaxDepth)
	}
	dtc.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	return nil
}

// passthroughChain is the filter chain of one TLS route: its server names,
// narrowed to the listener's hostname by the front end, and a tcp_proxy to
// its backends by weight. A backend that is not served gets its share of
// connections refused (UnavailableCluster has no endpoints), as the spec
// asks. It returns nil when the route has nothing to serve.
func passthroughChain(il *ir.Listener, tr *ir.TLSRoute, available nameSet, s *shared, w *warner) (*listenerv3.FilterChain, bool) {
	var names []string
	for _, n := range tr.ServerNames {
		sn, err := canonicalServerName(n)
		if err != nil {
			w.addAt(tr.Field, ReasonInvalidHost, "TLS route on listener %q: server name %q left out: %v", il.Name, n, err)
			continue
		}
		if !slices.Contains(names, sn) {
			names = append(names, sn)
		}
	}
	if len(names) == 0 && len(tr.ServerNames) > 0 {
		return nil, false
	}
	if len(names) == 0 && il.Hostname != "" {
		sn, err := canonicalServerName(il.Hostname)
		if err != nil {
			return nil, false
		}
		names = []string{sn}
	}
	unavailable := false
	var clusters []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight
	for _, b := range tr.Backends {
		if b.Weight == 0 {
			continue
		}
		name := unresolvedCluster(b)
		if !b.Unresolved && !available.has(name) {
			w.addAt(tr.Field, ReasonNotServed, "TLS route %s: backend %q has no cluster; its share of connections is refused", tlsRouteName(tr), b.BackendName)
			name = UnavailableCluster
		}
		unavailable = unavailable || name == UnavailableCluster
		if i := slices.IndexFunc(clusters, func(c *tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight) bool { return c.Name == name }); i >= 0 {
			clusters[i].Weight += b.Weight
			continue
		}
		clusters = append(clusters, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: name, Weight: b.Weight})
	}
	if len(clusters) == 0 {
		clusters, unavailable = []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: UnavailableCluster, Weight: 1}}, true
	}
	tp := &tcpproxyv3.TcpProxy{StatPrefix: "tls/" + il.Name}
	if len(clusters) == 1 {
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: clusters[0].Name}
	} else {
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{Clusters: clusters}}
	}
	return &listenerv3.FilterChain{
		Name:             il.Name + "/" + tlsRouteName(tr),
		FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: names, TransportProtocol: "tls"},
		Filters:          []*listenerv3.Filter{{Name: tcpProxyFilter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(tp)}}},
	}, unavailable
}

// routesToInvalidBackend reports whether a route of vh sends a share to
// InvalidBackendCluster.
func routesToInvalidBackend(vh *routev3.VirtualHost) bool {
	for _, r := range vh.GetRoutes() {
		a := r.GetRoute()
		if a.GetCluster() == InvalidBackendCluster {
			return true
		}
		for _, c := range a.GetWeightedClusters().GetClusters() {
			if c.GetName() == InvalidBackendCluster {
				return true
			}
		}
	}
	return false
}

// tlsRouteName names a TLS route by its source object.
func tlsRouteName(tr *ir.TLSRoute) string {
	if len(tr.Provenance) == 0 {
		return "(unnamed)"
	}
	return tr.Provenance[0].String()
}

// ownHCM is the connection manager filter of a fragment's listener, with
// the same edge settings as the gateway's own listeners.
func (s *shared) ownHCM(rc *routev3.RouteConfiguration) *listenerv3.Filter {
	hcm := httpConnectionManager(rc.GetName(), httpFiltersFor(rc.GetVirtualHosts()), s.opts)
	return &listenerv3.Filter{
		Name:       httpConnectionManagerFilter,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
	}
}

// reservedPort reports whether port is one of the gateway's own listeners'.
func (s *shared) reservedPort(port uint32) bool {
	o := s.opts
	if o.OwnListenersOnly {
		return false
	}
	return port == o.ExternalHTTPPort || port == o.ExternalHTTPSPort || port == o.InternalHTTPPort || port == o.InternalHTTPSPort
}

// listenerTable gathers the fragments' own listeners. Two fragments may not
// share a port: the one first in the input keeps it.
type listenerTable struct {
	parts           []*listenerPart
	initialized     bool
	changed         bool
	listeners       []*listenerv3.Listener
	routes          []*routev3.RouteConfiguration
	sources         []keyedSource
	usesUnavailable bool
	warnings        []Problem
}

func (lt *listenerTable) update(d *delta) {
	lt.changed = !lt.initialized || len(d.addedListeners) > 0 || len(d.deadListeners) > 0 ||
		d.orderChanged && len(lt.parts) > 0
	if !lt.changed {
		return
	}
	lt.initialized = true
	lt.parts = mergeSorted(lt.parts, d.addedListeners, compareListeners)
	lt.listeners, lt.routes, lt.sources, lt.warnings = nil, nil, nil, nil
	lt.usesUnavailable = false
	for start := 0; start < len(lt.parts); {
		end := start + 1
		for end < len(lt.parts) && lt.parts[end].port == lt.parts[start].port {
			end++
		}
		group := lt.parts[start:end]
		start = end
		winner := slices.MinFunc(group, func(a, b *listenerPart) int { return cmp.Compare(a.entry.pos, b.entry.pos) })
		for _, p := range group {
			if p != winner {
				w := warner{source: p.entry.ref}
				w.addAt(p.field, ReasonListenerConflict, "port %d left out: %s listens on it", p.port, winner.entry.source)
				lt.warnings = append(lt.warnings, w.list...)
			}
		}
		lt.listeners = append(lt.listeners, winner.listener)
		lt.routes = append(lt.routes, winner.routes...)
		lt.sources = append(lt.sources, winner.sources...)
		lt.usesUnavailable = lt.usesUnavailable || winner.usesUnavailable
	}
}

func (lt *listenerTable) addSources(out map[string]ir.Provenance) {
	for _, s := range lt.sources {
		out[s.key] = s.provenance
	}
}

// bindAddress is where a listener on port binds; see listenerAddress.
func bindAddress(opts Options, port uint32) *corev3.Address {
	a := socketAddress(opts.ListenAddress, port)
	a.GetSocketAddress().Ipv4Compat = opts.ListenAddress == "::"
	return a
}

// httpsChain is an HTTPS listener of a port and its route configuration.
type httpsChain struct {
	il *ir.Listener
	rc *routev3.RouteConfiguration
}

// addMisdirected answers 421 Misdirected Request on an HTTPS listener for
// a Host that another listener of the port serves: a client that reused a
// connection (HTTP/2 coalescing) for a host whose SNI picks another
// listener, with other certificates and routes, must open a new one. A
// listener with a hostname answers 421 for every host it does not serve;
// one without answers 421 for the other listeners' hostnames and 404 for
// hosts nobody serves.
func addMisdirected(chains []httpsChain, s *shared) {
	for _, c := range chains {
		existing := map[string]bool{}
		for _, vh := range c.rc.GetVirtualHosts() {
			for _, d := range vh.GetDomains() {
				existing[d] = true
			}
		}
		var others []string
		for _, o := range chains {
			h := ir.LowerASCII(o.il.Hostname)
			if o.il == c.il || h == "" || existing[h] {
				continue
			}
			// A hostname listener takes every other host through "*"
			// below, except those its own wildcard would match first.
			if c.il.Hostname == "" || strings.HasPrefix(c.il.Hostname, "*.") && strings.HasSuffix(h, c.il.Hostname[1:]) {
				others = append(others, h)
				existing[h] = true
			}
		}
		if len(others) > 0 {
			c.rc.VirtualHosts = append(c.rc.VirtualHosts, misdirectedVhost("misdirected", others, s))
		}
		if c.il.Hostname != "" && !existing["*"] {
			c.rc.VirtualHosts = append(c.rc.VirtualHosts, misdirectedVhost("misdirected-any", []string{"*"}, s))
		}
	}
}

func misdirectedVhost(name string, domains []string, s *shared) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: name, Domains: domains, Routes: []*routev3.Route{{
		Match: s.matchAll,
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: http.StatusMisdirectedRequest,
			Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "misdirected request: this connection's server name (SNI) is served by another listener; open a new connection"}},
		}},
	}}}
}
