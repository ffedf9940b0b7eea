package gateway

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	apierrs "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/re2size"
	"github.com/weir-dev/weir/pkg/reconciler/backends"
)

// Route kinds, as ir.ObjectRef kinds in provenance and in ReferenceGrants.
const (
	RouteKind     = "HTTPRoute"
	GRPCRouteKind = "GRPCRoute"
	TLSRouteKind  = "TLSRoute"
)

// routeSource is one route object of either kind, as attachment and
// status see it.
type routeSource struct {
	kind       string
	meta       *metav1.ObjectMeta
	parentRefs []gwv1.ParentReference
	hostnames  []gwv1.Hostname
	build      func() *builtRoute
	setStatus  func([]gwv1.RouteParentStatus)
}

func (s *routeSource) String() string {
	return fmt.Sprintf("%s %s/%s", s.kind, s.meta.Namespace, s.meta.Name)
}

// attachment is one route attached to one listener.
type attachment struct {
	src   *routeSource
	hosts []string
	rules []ir.RankedRoute
	// tls is the TLSRoute's forwarding, for a TLS listener.
	tls *ir.TLSRoute
}

func countRoutes(as []attachment) int {
	seen := map[*routeSource]bool{}
	for _, a := range as {
		seen[a.src] = true
	}
	return len(seen)
}

// builtRoute is a route translated once, for every parent.
type builtRoute struct {
	rules    []ir.RankedRoute
	tls      *ir.TLSRoute
	backends []*ir.Backend
	// unsupported says why the route cannot be accepted at all.
	unsupported string
	resolved    bool
	reason, msg string
	// services are the Services its backendRefs name, for the status of
	// the BackendTLSPolicies that target them.
	services map[types.NamespacedName]bool
}

// routeSources lists every route, oldest first: the spec gives a hostname
// contested by an HTTPRoute and a GRPCRoute to the older.
func (b *builder) routeSources() []*routeSource {
	var out []*routeSource
	for _, r := range b.objs.HTTPRoutes {
		nn := types.NamespacedName{Namespace: r.Namespace, Name: r.Name}
		out = append(out, &routeSource{
			kind: RouteKind, meta: &r.ObjectMeta, parentRefs: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames,
			build: func() *builtRoute { return b.buildHTTPRoute(r) },
			setStatus: func(parents []gwv1.RouteParentStatus) {
				b.res.HTTPRoutes[nn] = &gwv1.HTTPRouteStatus{RouteStatus: gwv1.RouteStatus{Parents: parents}}
			},
		})
	}
	for _, r := range b.objs.GRPCRoutes {
		nn := types.NamespacedName{Namespace: r.Namespace, Name: r.Name}
		out = append(out, &routeSource{
			kind: GRPCRouteKind, meta: &r.ObjectMeta, parentRefs: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames,
			build: func() *builtRoute { return b.buildGRPCRoute(r) },
			setStatus: func(parents []gwv1.RouteParentStatus) {
				b.res.GRPCRoutes[nn] = &gwv1.GRPCRouteStatus{RouteStatus: gwv1.RouteStatus{Parents: parents}}
			},
		})
	}
	for _, r := range b.objs.TLSRoutes {
		nn := types.NamespacedName{Namespace: r.Namespace, Name: r.Name}
		out = append(out, &routeSource{
			kind: TLSRouteKind, meta: &r.ObjectMeta, parentRefs: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames,
			build: func() *builtRoute { return b.buildTLSRoute(r) },
			setStatus: func(parents []gwv1.RouteParentStatus) {
				b.res.TLSRoutes[nn] = &gwv1.TLSRouteStatus{RouteStatus: gwv1.RouteStatus{Parents: parents}}
			},
		})
	}
	slices.SortStableFunc(out, func(a, c *routeSource) int { return compareAge(a.meta, c.meta) })
	return out
}

func (b *builder) routes() {
	for _, r := range b.routeSources() {
		var built *builtRoute
		var parents []gwv1.RouteParentStatus
		for pi, ref := range r.parentRefs {
			if (ref.Group != nil && *ref.Group != gwv1.GroupName) || (ref.Kind != nil && *ref.Kind != "Gateway") {
				continue
			}
			ns := r.meta.Namespace
			if ref.Namespace != nil {
				ns = string(*ref.Namespace)
			}
			g := b.gateways[types.NamespacedName{Namespace: ns, Name: string(ref.Name)}]
			if g == nil {
				continue // not a Gateway of ours
			}
			if built == nil {
				b.usedServices = map[types.NamespacedName]bool{}
				built = r.build()
				built.services, b.usedServices = b.usedServices, nil
			}
			ps := gwv1.RouteParentStatus{ParentRef: ref, ControllerName: ControllerName}
			accepted, reason, msg := b.attach(g, r, ref, pi, built)
			setCondition(&ps.Conditions, r.meta.Generation, string(gwv1.RouteConditionAccepted), accepted, reason, msg)
			setCondition(&ps.Conditions, r.meta.Generation, string(gwv1.RouteConditionResolvedRefs), built.resolved, built.reason, built.msg)
			parents = append(parents, ps)
		}
		if parents == nil {
			b.res.Skipped = append(b.res.Skipped, fmt.Sprintf("%s: no parentRef names a Gateway that Weir serves", r))
			continue
		}
		r.setStatus(parents)
	}
}

// attach attaches r to the listeners of g that parentRef pi selects and
// allow it, and returns the Accepted condition for that parent.
func (b *builder) attach(g *gatewayState, r *routeSource, ref gwv1.ParentReference, pi int, built *builtRoute) (bool, string, string) {
	field := fmt.Sprintf("spec.parentRefs[%d]", pi)
	if built.unsupported != "" {
		return false, string(gwv1.RouteReasonUnsupportedValue), built.unsupported
	}
	if g.addressProblem != "" {
		return false, string(gwv1.RouteReasonNoMatchingParent), fmt.Sprintf("%s: Gateway %s/%s is not accepted: see its conditions", field, g.gw.Namespace, g.gw.Name)
	}
	var routeHosts []string
	for _, h := range r.hostnames {
		routeHosts = append(routeHosts, string(h))
	}
	found, notAllowed, noHost, attached := false, false, false, false
	var conflict, tlsTaken *routeSource
	for _, ls := range g.listeners {
		if ref.SectionName != nil && ls.spec.Name != *ref.SectionName {
			continue
		}
		if ref.Port != nil && ls.spec.Port != *ref.Port {
			continue
		}
		found = true
		if !ls.attachable {
			continue
		}
		if !b.allowsRoute(g, ls, r) {
			notAllowed = true
			continue
		}
		host := ""
		if ls.spec.Hostname != nil {
			host = string(*ls.spec.Hostname)
		}
		hosts := intersectHosts(host, routeHosts)
		if len(hosts) == 0 {
			noHost = true
			continue
		}
		name := string(ls.spec.Name)
		if other := otherKindOnHosts(g.attachments[name], r, hosts); other != nil {
			conflict = other
			continue
		}
		if built.tls != nil {
			// A ClientHello goes to one route: an older TLSRoute keeps
			// its hostnames.
			if owner := tlsHostsTaken(g, ls, r, hosts); owner != nil {
				tlsTaken = owner
				continue
			}
		}
		attached = true
		g.attachments[name] = append(g.attachments[name], attachment{src: r, hosts: hosts, rules: built.rules, tls: built.tls})
	}
	switch {
	case attached:
		b.usesServices(g, built.services)
		for _, be := range built.backends {
			if _, ok := g.backends[be.Name]; !ok {
				g.backends[be.Name] = be
			}
		}
		return true, string(gwv1.RouteReasonAccepted), "attached to the Gateway"
	case !found:
		return false, string(gwv1.RouteReasonNoMatchingParent), fmt.Sprintf("%s: Gateway %s/%s has no listener with that sectionName and port", field, g.gw.Namespace, g.gw.Name)
	case notAllowed:
		return false, string(gwv1.RouteReasonNotAllowedByListeners), fmt.Sprintf("%s: the listeners' allowedRoutes do not allow this route", field)
	case tlsTaken != nil:
		return false, reasonHostnameConflict, fmt.Sprintf("%s: every hostname of this route is already served on the listener's port by the older %s", field, tlsTaken)
	case conflict != nil:
		return false, reasonHostnameConflict, fmt.Sprintf("%s: the older %s serves the same hostnames on this listener; an HTTPRoute and a GRPCRoute may not share a hostname", field, conflict)
	case noHost:
		return false, string(gwv1.RouteReasonNoMatchingListenerHostname), fmt.Sprintf("%s: no spec.hostnames entry matches a listener's hostname", field)
	}
	return false, string(gwv1.RouteReasonNoMatchingParent), fmt.Sprintf("%s: no listener that matches is valid; see the Gateway's listener conditions", field)
}

// reasonHostnameConflict is the Accepted reason of a route refused because
// a route of the other kind (HTTPRoute, GRPCRoute) has its hostnames on the
// listener; the spec names no reason for it.
const reasonHostnameConflict = "HostnameConflict"

// otherKindOnHosts returns an attached route of the other kind than r whose
// hosts overlap hosts, or nil.
func otherKindOnHosts(as []attachment, r *routeSource, hosts []string) *routeSource {
	for _, a := range as {
		if a.src.kind == r.kind {
			continue
		}
		for _, h := range hosts {
			for _, o := range a.hosts {
				if hostsOverlap(h, o) {
					return a.src
				}
			}
		}
	}
	return nil
}

// allowsRoute applies a listener's allowedRoutes to a route.
func (b *builder) allowsRoute(g *gatewayState, ls *listenerState, r *routeSource) bool {
	if !slices.ContainsFunc(ls.kinds, func(k gwv1.RouteGroupKind) bool { return string(k.Kind) == r.kind }) {
		return false
	}
	from := gwv1.NamespacesFromSame
	var sel *metav1.LabelSelector
	if ar := ls.spec.AllowedRoutes; ar != nil && ar.Namespaces != nil {
		if ar.Namespaces.From != nil {
			from = *ar.Namespaces.From
		}
		sel = ar.Namespaces.Selector
	}
	switch from {
	case gwv1.NamespacesFromAll:
		return true
	case gwv1.NamespacesFromSelector:
		if sel == nil {
			return false
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return false
		}
		ls := b.objs.NamespaceLabels[r.meta.Namespace]
		if ls == nil {
			ls = labels.Set{}
		}
		return s.Matches(ls)
	case gwv1.NamespacesFromSame:
		return r.meta.Namespace == g.gw.Namespace
	}
	return false
}

// buildHTTPRoute translates the rules of r.
func (b *builder) buildHTTPRoute(r *gwv1.HTTPRoute) *builtRoute {
	out := &builtRoute{resolved: true, reason: string(gwv1.RouteReasonResolvedRefs), msg: "every backend resolved"}
	src := ir.ObjectRef{Kind: RouteKind, Namespace: r.Namespace, Name: r.Name}
	seen := map[string]bool{}
	for ri := range r.Spec.Rules {
		rule := &r.Spec.Rules[ri]
		field := fmt.Sprintf("spec.rules[%d]", ri)
		base := &ir.Route{WebsocketUpgrade: true, Provenance: ir.Provenance{src}}
		if msg := applyFilters(base, rule.Filters, field, false); msg != "" {
			out.unsupported = msg
			return out
		}
		b.addMirrors(out, base, r.Namespace, rule.Filters, field, seen)
		if t := rule.Timeouts; t != nil && rule.Retry == nil {
			d, msg := ruleTimeout(t, field)
			if msg != "" {
				out.unsupported = msg
				return out
			}
			base.Timeout = d
		}
		if rule.Retry != nil {
			var msg string
			if base.Timeout, base.Retry, msg = ruleRetry(rule.Retry, rule.Timeouts, field); msg != "" {
				out.unsupported = msg
				return out
			}
		}
		if rule.SessionPersistence != nil {
			out.unsupported = field + ".sessionPersistence: not supported yet; remove it"
			return out
		}
		var invalid bool
		for bi := range rule.BackendRefs {
			br := &rule.BackendRefs[bi]
			bfield := fmt.Sprintf("%s.backendRefs[%d]", field, bi)
			resolved, ok := b.addBackend(out, base, RouteKind, r.Namespace, br.BackendRef, bfield, seen,
				func(scratch *ir.Route) string { return applyFilters(scratch, br.Filters, bfield, true) })
			if !ok {
				return out
			}
			if !resolved {
				// The spec: its share of requests gets 500.
				invalid, base.UnresolvedStatus = true, 500
			}
		}
		if base.Redirect == nil && (len(base.Backends) == 0 || invalid && resolvedWeight(base.Backends) == 0) {
			// The spec: a rule with no usable backend answers 500.
			base.Backends = nil
			base.DirectResponse = &ir.DirectResponse{StatusCode: 500}
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.HTTPRouteMatch{{}}
		}
		for mi := range matches {
			rt := *base
			rt.Name = fmt.Sprintf("%s/%s/rule/%d/match/%d", r.Namespace, r.Name, ri, mi)
			m, err := convertMatch(&matches[mi])
			if err != nil {
				out.unsupported = fmt.Sprintf("%s.matches[%d]: %v", field, mi, err)
				return out
			}
			rt.Match = m
			out.rules = append(out.rules, ir.RankedRoute{Route: &rt, Created: r.CreationTimestamp.Time, Source: src, Rule: ri, Match: mi})
		}
	}
	return out
}

// addBackend adds one backendRef of a rule to base: a share of a backend
// that resolved, with its own filters (applied by filters to a scratch
// route; only request header changes may be there), or a share of one
// that did not, which is refused. ok is false when the route cannot be
// accepted at all: out.unsupported says why.
func (b *builder) addBackend(out *builtRoute, base *ir.Route, kind, ns string, ref gwv1.BackendRef, field string, seen map[string]bool, filters func(*ir.Route) string) (resolved, ok bool) {
	weight := uint32(1)
	if ref.Weight != nil {
		weight = uint32(max(*ref.Weight, 0)) //nolint:gosec // clamped
	}
	be, reason, msg := b.resolveBackend(kind, ns, ref, field)
	if be == nil {
		if reason != "" && out.resolved {
			out.resolved, out.reason, out.msg = false, reason, msg
		}
		base.Backends = append(base.Backends, ir.WeightedBackend{BackendName: field, Weight: weight, Unresolved: true})
		return false, true
	}
	var scratch ir.Route
	if msg := filters(&scratch); msg != "" {
		out.unsupported = msg
		return true, false
	}
	headers := scratch.RequestHeaders
	scratch.RequestHeaders = ir.HeaderMutation{}
	if !reflect.DeepEqual(scratch, ir.Route{}) {
		out.unsupported = field + ".filters: only RequestHeaderModifier is supported on a backend"
		return true, false
	}
	base.Backends = append(base.Backends, ir.WeightedBackend{BackendName: be.Name, Weight: weight, RequestHeaders: headers})
	if !seen[be.Name] {
		seen[be.Name] = true
		out.backends = append(out.backends, be)
	}
	return true, true
}

// resolvedWeight is the weight of the backends that resolved.
func resolvedWeight(bs []ir.WeightedBackend) uint64 {
	var t uint64
	for _, b := range bs {
		if !b.Unresolved {
			t += uint64(b.Weight)
		}
	}
	return t
}

// checkRegex refuses a regex the gateway's Envoy would: not RE2, or a
// program over the size the release bootstrap allows. Refused here, the
// route says so in its status instead of being left out silently.
func checkRegex(re string) error {
	if _, err := regexp.Compile(re); err != nil {
		return fmt.Errorf("regex %q is not valid RE2: %v", re, err)
	}
	if size, err := re2size.Bound(re); err != nil || size > re2size.MaxProgramSize {
		return fmt.Errorf("regex %q may compile to more than %d RE2 instructions; simplify it", re, re2size.MaxProgramSize)
	}
	return nil
}

func convertMatch(m *gwv1.HTTPRouteMatch) (ir.Match, error) {
	out := ir.Match{Path: ir.PathMatch{Kind: ir.PathSegmentPrefix, Value: "/"}}
	if p := m.Path; p != nil {
		if p.Value != nil {
			out.Path.Value = *p.Value
		}
		if p.Type != nil {
			switch *p.Type {
			case gwv1.PathMatchExact:
				out.Path.Kind = ir.PathExact
			case gwv1.PathMatchRegularExpression:
				out.Path.Kind = ir.PathRegex
				if err := checkRegex(out.Path.Value); err != nil {
					return out, fmt.Errorf("path: %w", err)
				}
			case gwv1.PathMatchPathPrefix:
			default:
				return out, fmt.Errorf("path type %q is not supported", *p.Type)
			}
		}
	}
	for _, h := range m.Headers {
		hm := ir.HeaderMatch{Name: string(h.Name), Value: h.Value, Kind: ir.HeaderExact}
		if h.Type != nil && *h.Type == gwv1.HeaderMatchRegularExpression {
			hm.Kind = ir.HeaderRegex
			if err := checkRegex(h.Value); err != nil {
				return out, fmt.Errorf("header %s: %w", h.Name, err)
			}
		}
		out.Headers = append(out.Headers, hm)
	}
	for _, q := range m.QueryParams {
		qm := ir.QueryParamMatch{Name: string(q.Name), Value: q.Value, Kind: ir.HeaderExact}
		if q.Type != nil && *q.Type == gwv1.QueryParamMatchRegularExpression {
			qm.Kind = ir.HeaderRegex
			if err := checkRegex(q.Value); err != nil {
				return out, fmt.Errorf("query parameter %s: %w", q.Name, err)
			}
		}
		out.QueryParams = append(out.QueryParams, qm)
	}
	if m.Method != nil {
		out.Method = string(*m.Method)
	}
	return out, nil
}

// applyFilters applies a rule's (or, onBackend, a backendRef's) filters to
// r. It returns why a filter cannot be served, or "".
func applyFilters(r *ir.Route, filters []gwv1.HTTPRouteFilter, field string, onBackend bool) string {
	for fi := range filters {
		f := &filters[fi]
		ffield := fmt.Sprintf("%s.filters[%d]", field, fi)
		switch f.Type {
		case gwv1.HTTPRouteFilterRequestHeaderModifier:
			if f.RequestHeaderModifier != nil {
				r.RequestHeaders = headerMutation(f.RequestHeaderModifier)
			}
		case gwv1.HTTPRouteFilterResponseHeaderModifier:
			if f.ResponseHeaderModifier != nil {
				r.ResponseHeaders = headerMutation(f.ResponseHeaderModifier)
			}
		case gwv1.HTTPRouteFilterRequestRedirect:
			rr := f.RequestRedirect
			if rr == nil {
				continue
			}
			rd := &ir.Redirect{StatusCode: 302}
			if rr.Scheme != nil {
				rd.Scheme = *rr.Scheme
			}
			if rr.Hostname != nil {
				rd.Host = string(*rr.Hostname)
			}
			if rr.Port != nil {
				rd.Port = uint32(*rr.Port) //nolint:gosec // the API bounds ports
			}
			if rr.StatusCode != nil {
				rd.StatusCode = *rr.StatusCode
			}
			pm, msg := pathModifier(rr.Path, ffield+".requestRedirect.path")
			if msg != "" {
				return msg
			}
			rd.Path = pm
			r.Redirect = rd
		case gwv1.HTTPRouteFilterURLRewrite:
			ur := f.URLRewrite
			if ur == nil {
				continue
			}
			if ur.Hostname != nil {
				r.HostRewrite = string(*ur.Hostname)
			}
			pm, msg := pathModifier(ur.Path, ffield+".urlRewrite.path")
			if msg != "" {
				return msg
			}
			r.PathRewrite = pm
		case gwv1.HTTPRouteFilterRequestMirror:
			// Rule-level mirrors are resolved by addMirrors; a backend
			// cannot have its own.
			if onBackend {
				return ffield + ": RequestMirror is not supported on a backend; put it on the rule"
			}
		case gwv1.HTTPRouteFilterCORS:
			if f.CORS != nil {
				r.Filters = append(r.Filters, corsPolicy(f.CORS))
			}
		default:
			return fmt.Sprintf("%s: filter type %s is not supported yet", ffield, f.Type)
		}
	}
	return ""
}

func pathModifier(p *gwv1.HTTPPathModifier, field string) (*ir.PathModifier, string) {
	if p == nil {
		return nil, ""
	}
	switch p.Type {
	case gwv1.FullPathHTTPPathModifier:
		if p.ReplaceFullPath == nil {
			return nil, field + ".replaceFullPath is required"
		}
		return &ir.PathModifier{Kind: ir.ReplaceFullPath, Value: *p.ReplaceFullPath}, ""
	case gwv1.PrefixMatchHTTPPathModifier:
		if p.ReplacePrefixMatch == nil {
			return nil, field + ".replacePrefixMatch is required"
		}
		return &ir.PathModifier{Kind: ir.ReplacePrefixMatch, Value: *p.ReplacePrefixMatch}, ""
	}
	return nil, fmt.Sprintf("%s.type %q is not supported", field, p.Type)
}

func headerMutation(f *gwv1.HTTPHeaderFilter) ir.HeaderMutation {
	var m ir.HeaderMutation
	for _, h := range f.Set {
		m.Set = append(m.Set, ir.Header{Name: string(h.Name), Value: h.Value})
	}
	for _, h := range f.Add {
		m.Append = append(m.Append, ir.Header{Name: string(h.Name), Value: h.Value})
	}
	m.Remove = append(m.Remove, f.Remove...)
	return m
}

// resolveBackend resolves a backendRef of a route of kind in namespace
// from to a backend, or says why not: with a reason when the reference
// does not resolve, without one when it does but the backend cannot be
// used (its BackendTLSPolicy cannot be honoured).
func (b *builder) resolveBackend(kind, from string, ref gwv1.BackendRef, field string) (*ir.Backend, string, string) {
	if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Service") {
		return nil, string(gwv1.RouteReasonInvalidKind), fmt.Sprintf("%s: only core Services are supported as backends", field)
	}
	ns := from
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	if !b.grants.allows(gwv1.GroupName, kind, from, "", "Service", ns, string(ref.Name)) {
		return nil, string(gwv1.RouteReasonRefNotPermitted), fmt.Sprintf("%s: no ReferenceGrant in namespace %s lets %ss in %s use Service %s", field, ns, kind, from, ref.Name)
	}
	if ref.Port == nil {
		return nil, string(gwv1.RouteReasonUnsupportedValue), fmt.Sprintf("%s.port is required for a Service", field)
	}
	svc, err := b.listers.Services.Services(ns).Get(string(ref.Name))
	if err == nil && b.usedServices != nil && kind != TLSRouteKind {
		// A TLSRoute passes TLS through; no BackendTLSPolicy applies.
		b.usedServices[types.NamespacedName{Namespace: ns, Name: svc.Name}] = true
	}
	if err != nil {
		if apierrs.IsNotFound(err) {
			return nil, string(gwv1.RouteReasonBackendNotFound), fmt.Sprintf("%s: Service %s/%s does not exist", field, ns, ref.Name)
		}
		return nil, string(gwv1.RouteReasonBackendNotFound), fmt.Sprintf("%s: reading Service %s/%s: %v", field, ns, ref.Name, err)
	}
	sp, ok := backends.ServicePort(svc, intstr.FromInt32(int32(*ref.Port)))
	if !ok {
		return nil, string(gwv1.RouteReasonBackendNotFound), fmt.Sprintf("%s: Service %s/%s has no port %d", field, ns, ref.Name, *ref.Port)
	}
	be := &ir.Backend{
		Name:     ir.BackendName(ns, string(ref.Name), sp.Port),
		Service:  ir.ServiceRef{Namespace: ns, Name: string(ref.Name), Port: sp.Port},
		Protocol: backends.ProtocolOf(sp),
	}
	if kind == GRPCRouteKind && be.Protocol == ir.HTTP1 {
		// gRPC needs HTTP/2 whatever the port says; the name keeps this
		// cluster apart from an HTTPRoute's HTTP/1.1 one to the same port.
		be.Protocol = ir.GRPC
		be.Name += "/grpc"
	}
	if kind == TLSRouteKind {
		// Raw TCP, never re-encrypted: apart from an HTTPRoute's cluster
		// to the same port, which a BackendTLSPolicy may make TLS.
		be.Name += "/tls-passthrough"
	}
	if svc.Spec.Type == "ExternalName" {
		// The spec advises against them: a route author could reach any
		// name through the gateway (CVE-2021-25740).
		return nil, string(gwv1.RouteReasonUnsupportedProtocol), fmt.Sprintf("%s: Service %s/%s is an ExternalName Service, which Gateway API routes may not use", field, ns, ref.Name)
	}
	slices, err := b.listers.EndpointSlices(ns, string(ref.Name))
	if err != nil {
		return nil, string(gwv1.RouteReasonBackendNotFound), fmt.Sprintf("%s: listing EndpointSlices of Service %s/%s: %v", field, ns, ref.Name, err)
	}
	be.Endpoints = backends.Endpoints(slices, sp)
	if kind != TLSRouteKind {
		// A TLSRoute passes the client's TLS through: the gateway
		// originates none.
		if msg := b.backendTLS(be, sp.Name); msg != "" {
			return nil, "", fmt.Sprintf("%s: %s", field, msg)
		}
	}
	return be, "", ""
}

// virtualHosts groups the attachments of g into virtual hosts: per port
// and host for HTTP, where the most specific listener of the port takes a
// host; per listener and host for HTTPS, whose listeners SNI tells apart.
func (b *builder) virtualHosts(g *gatewayState) {
	type key struct{ scope, host string }
	type candidate struct {
		ls    *listenerState
		rules []ir.RankedRoute
	}
	cands := map[key][]candidate{}
	var keys []key
	for _, ls := range g.listeners {
		if !ls.valid || ls.spec.Protocol == gwv1.TLSProtocolType {
			continue
		}
		scope := string(ls.spec.Name)
		if ls.spec.Protocol == gwv1.HTTPProtocolType {
			scope = fmt.Sprintf("%d", ls.spec.Port)
		}
		for _, a := range g.attachments[string(ls.spec.Name)] {
			for _, h := range a.hosts {
				k := key{scope, h}
				if _, ok := cands[k]; !ok {
					keys = append(keys, k)
				}
				cands[k] = append(cands[k], candidate{ls, a.rules})
			}
		}
	}
	// A listener's own hostname always has a virtual host, routes or not,
	// so a request for it never falls through to a less specific
	// listener's wildcard (listener isolation).
	for _, ls := range g.listeners {
		if !ls.valid || ls.spec.Hostname == nil || ls.spec.Protocol == gwv1.TLSProtocolType {
			continue
		}
		scope := string(ls.spec.Name)
		if ls.spec.Protocol == gwv1.HTTPProtocolType {
			scope = fmt.Sprintf("%d", ls.spec.Port)
		}
		k := key{scope, strings.ToLower(string(*ls.spec.Hostname))}
		if _, ok := cands[k]; !ok {
			keys = append(keys, k)
		}
		cands[k] = append(cands[k], candidate{ls: ls})
	}
	slices.SortFunc(keys, func(a, c key) int {
		if a.scope != c.scope {
			if a.scope < c.scope {
				return -1
			}
			return 1
		}
		if a.host < c.host {
			return -1
		} else if a.host > c.host {
			return 1
		}
		return 0
	})
	for _, k := range keys {
		cs := cands[k]
		best := bestListener(g, cs[0].ls, k.host)
		var rules []ir.RankedRoute
		prov := ir.Provenance{}
		for _, c := range cs {
			if c.ls != best {
				continue
			}
			rules = append(rules, c.rules...)
			for _, rr := range c.rules {
				if !slices.Contains(prov, rr.Source) {
					prov = append(prov, rr.Source)
				}
			}
		}
		slices.SortFunc(prov, func(a, c ir.ObjectRef) int {
			if a.String() < c.String() {
				return -1
			}
			return 1
		})
		g.frag.VirtualHosts = append(g.frag.VirtualHosts, &ir.VirtualHost{
			Name:       k.scope + "/" + k.host,
			Domains:    []string{k.host},
			Listener:   string(best.spec.Name),
			Routes:     redirectPorts(ir.MergeRoutes(rules, precedenceOf(rules)), best),
			Provenance: prov,
			Field:      fmt.Sprintf("spec.listeners[%d]", best.index),
		})
	}
}

// precedenceOf is the route order of a virtual host's rules. A listener
// never serves one hostname by both kinds, so the rules are of one kind.
func precedenceOf(rules []ir.RankedRoute) func(a, b ir.RankedRoute) int {
	if len(rules) > 0 && rules[0].Source.Kind == GRPCRouteKind {
		return ir.GRPCRoutePrecedence
	}
	return ir.GatewayAPIPrecedence
}

// redirectPorts gives redirects without a scheme or port the listener's
// port, as the spec derives it; it is left out of the Location when it is
// the scheme's well-known port. Routes are shared between listeners, so a
// changed one is a copy.
func redirectPorts(routes []*ir.Route, ls *listenerState) []*ir.Route {
	port := uint32(ls.spec.Port) //nolint:gosec // the API bounds ports
	wellKnown := ls.spec.Protocol == gwv1.HTTPProtocolType && port == 80 || ls.spec.Protocol == gwv1.HTTPSProtocolType && port == 443
	if wellKnown {
		return routes
	}
	var out []*ir.Route
	for i, r := range routes {
		if r.Redirect == nil || r.Redirect.Port != 0 || r.Redirect.Scheme != "" {
			continue
		}
		if out == nil {
			out = slices.Clone(routes)
		}
		rc, rd := *r, *r.Redirect
		rd.Port = port
		rc.Redirect = &rd
		out[i] = &rc
	}
	if out == nil {
		return routes
	}
	return out
}

// bestListener is the listener that takes requests for host: on an HTTPS
// listener, that listener (SNI chose it); on an HTTP or TLS port, the
// valid listener of the port and protocol with the most specific hostname
// that matches, so a host is served by that listener's routes or not at
// all.
func bestListener(g *gatewayState, from *listenerState, host string) *listenerState {
	if from.spec.Protocol == gwv1.HTTPSProtocolType {
		return from
	}
	best := from
	for _, ls := range g.listeners {
		if !ls.valid || ls.spec.Protocol != from.spec.Protocol || ls.spec.Port != from.spec.Port {
			continue
		}
		h := strings.ToLower(hostOf(ls))
		if hostMatches(h, host) && (!hostMatches(strings.ToLower(hostOf(best)), host) || specificity(h) > specificity(strings.ToLower(hostOf(best)))) {
			best = ls
		}
	}
	return best
}

func hostOf(ls *listenerState) string {
	if ls.spec.Hostname == nil {
		return ""
	}
	return string(*ls.spec.Hostname)
}

// ruleRetry is a rule's retry stanza with its timeouts: the request
// timeout bounds every attempt together, the backendRequest timeout each
// one, as Envoy's route timeout and per_try_timeout do. Connection
// failures and resets are retried too, as the spec advises.
func ruleRetry(r *gwv1.HTTPRouteRetry, t *gwv1.HTTPRouteTimeouts, field string) (*time.Duration, *ir.RetryPolicy, string) {
	var total *time.Duration
	p := &ir.RetryPolicy{Attempts: 1, On: []string{"connect-failure", "reset"}}
	if r.Attempts != nil {
		if *r.Attempts < 0 {
			return nil, nil, fmt.Sprintf("%s.retry.attempts: %d is negative", field, *r.Attempts)
		}
		p.Attempts = uint32(min(*r.Attempts, math.MaxUint32)) //nolint:gosec // clamped
	}
	for i, c := range r.Codes {
		if c < 400 || c > 599 {
			return nil, nil, fmt.Sprintf("%s.retry.codes[%d]: %d is not a 4xx or 5xx status", field, i, c)
		}
		p.StatusCodes = append(p.StatusCodes, uint32(c)) //nolint:gosec // checked above
	}
	if r.Backoff != nil {
		d, err := time.ParseDuration(string(*r.Backoff))
		if err != nil || d < 0 {
			return nil, nil, fmt.Sprintf("%s.retry.backoff %q is not a valid duration", field, *r.Backoff)
		}
		p.Backoff = d
	}
	if t != nil {
		for _, c := range []struct {
			name string
			val  *gwv1.Duration
			set  func(time.Duration)
		}{
			{"request", t.Request, func(d time.Duration) { total = &d }},
			{"backendRequest", t.BackendRequest, func(d time.Duration) { p.PerTryTimeout = d }},
		} {
			if c.val == nil {
				continue
			}
			d, err := time.ParseDuration(string(*c.val))
			if err != nil || d < 0 {
				return nil, nil, fmt.Sprintf("%s.timeouts.%s %q is not a valid duration", field, c.name, *c.val)
			}
			c.set(d)
		}
	}
	if p.Attempts == 0 {
		// No retries: the timeouts mean what they mean without them.
		if t == nil {
			return nil, nil, ""
		}
		d, msg := ruleTimeout(t, field)
		return d, nil, msg
	}
	return total, p, ""
}

// ruleTimeout is the route timeout for a rule's timeouts. Weir makes one
// attempt per request (retries are refused), so the backend request and
// the whole request last equally long from the gateway's side, and the
// tighter of the two bounds both. "0s" turns a timeout off; nil means none.
func ruleTimeout(t *gwv1.HTTPRouteTimeouts, field string) (*time.Duration, string) {
	var out *time.Duration
	for _, c := range []struct {
		name string
		val  *gwv1.Duration
	}{{"request", t.Request}, {"backendRequest", t.BackendRequest}} {
		if c.val == nil {
			continue
		}
		d, err := time.ParseDuration(string(*c.val))
		if err != nil || d < 0 {
			return nil, fmt.Sprintf("%s.timeouts.%s %q is not a valid duration", field, c.name, *c.val)
		}
		if out == nil || *out == 0 || (d != 0 && d < *out) {
			out = &d
		}
	}
	return out, ""
}

// corsPolicy is a CORS filter as the routing model has it.
func corsPolicy(c *gwv1.HTTPCORSFilter) *ir.CORSPolicy {
	p := &ir.CORSPolicy{AllowCredentials: c.AllowCredentials != nil && *c.AllowCredentials}
	for _, o := range c.AllowOrigins {
		p.AllowOrigins = append(p.AllowOrigins, string(o))
	}
	for _, m := range c.AllowMethods {
		p.AllowMethods = append(p.AllowMethods, string(m))
	}
	for _, h := range c.AllowHeaders {
		p.AllowHeaders = append(p.AllowHeaders, string(h))
	}
	for _, h := range c.ExposeHeaders {
		p.ExposeHeaders = append(p.ExposeHeaders, string(h))
	}
	if c.MaxAge > 0 {
		maxAge := c.MaxAge
		p.MaxAge = &maxAge
	}
	return p
}

// addMirrors resolves a rule's RequestMirror filters. A mirror whose
// backend does not resolve is left out, and the route's ResolvedRefs says
// why; the rule itself keeps serving.
func (b *builder) addMirrors(out *builtRoute, base *ir.Route, ns string, filters []gwv1.HTTPRouteFilter, field string, seen map[string]bool) {
	for fi := range filters {
		f := &filters[fi]
		if f.Type != gwv1.HTTPRouteFilterRequestMirror || f.RequestMirror == nil {
			continue
		}
		mf := f.RequestMirror
		mfield := fmt.Sprintf("%s.filters[%d].requestMirror.backendRef", field, fi)
		be, reason, msg := b.resolveBackend(RouteKind, ns, gwv1.BackendRef{BackendObjectReference: mf.BackendRef}, mfield)
		if be == nil {
			if reason != "" && out.resolved {
				out.resolved, out.reason, out.msg = false, reason, msg
			}
			continue
		}
		m := ir.Mirror{BackendName: be.Name}
		switch {
		case mf.Percent != nil:
			m.Numerator, m.Denominator = uint32(max(*mf.Percent, 0)), 100 //nolint:gosec // clamped; the API bounds it by 100
		case mf.Fraction != nil:
			m.Numerator, m.Denominator = uint32(max(mf.Fraction.Numerator, 0)), 100 //nolint:gosec // clamped
			if d := mf.Fraction.Denominator; d != nil && *d > 0 {
				m.Denominator = uint32(*d) //nolint:gosec // positive
			}
		}
		base.Mirrors = append(base.Mirrors, m)
		if !seen[be.Name] {
			seen[be.Name] = true
			out.backends = append(out.backends, be)
		}
	}
}
