package kingress

import (
	"crypto/tls"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/networking/pkg/http/header"
	"knative.dev/networking/pkg/ingress"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/backends"
	"github.com/weir-dev/weir/pkg/xdstls"
)

// Kind is the ir.ObjectRef kind of fragments built from KIngresses.
const Kind = "KIngress"

// Listers are the read-only views the builder resolves references through.
type Listers struct {
	Services       corelisters.ServiceLister
	EndpointSlices SlicesOfService
	Secrets        corelisters.SecretLister
	// SecretSelector is the label selector Secrets is filtered by, if any,
	// so a missing Secret's message can say how to make it visible.
	SecretSelector string
}

// SlicesOfService returns the EndpointSlices of a Service.
type SlicesOfService func(namespace, service string) ([]*discoveryv1.EndpointSlice, error)

// ServiceIndex is the EndpointSlice index, by "namespace/service", that
// IndexedSlices reads: a label selector would scan every slice of the
// namespace for each backend.
const ServiceIndex = "weir.dev/service"

// SliceIndexers holds ServiceIndex, for an EndpointSlice informer or indexer.
var SliceIndexers = cache.Indexers{ServiceIndex: func(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || s.Labels[discoveryv1.LabelServiceName] == "" {
		return nil, nil
	}
	return []string{s.Namespace + "/" + s.Labels[discoveryv1.LabelServiceName]}, nil
}}

// IndexedSlices finds a Service's EndpointSlices through an indexer that
// has SliceIndexers.
func IndexedSlices(idx cache.Indexer) SlicesOfService {
	return func(namespace, service string) ([]*discoveryv1.EndpointSlice, error) {
		objs, err := idx.ByIndex(ServiceIndex, namespace+"/"+service)
		if err != nil {
			return nil, err
		}
		out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
		for _, o := range objs {
			if s, ok := o.(*discoveryv1.EndpointSlice); ok {
				out = append(out, s)
			}
		}
		return out, nil
	}
}

// SecretPolicy decides which Secrets a KIngress may use for TLS.
type SecretPolicy struct {
	// ExtraNamespaces may hold certificates for KIngresses in any namespace
	// (for example where Knative Serving keeps its wildcard certificates).
	// A KIngress may always use Secrets in its own namespace.
	ExtraNamespaces sets.Set[string]
}

func (p SecretPolicy) allows(ingressNS, secretNS string) bool {
	return secretNS == ingressNS || p.ExtraNamespaces.Has(secretNS)
}

// Problem is a reason the KIngress cannot be served as written. Reason is a
// CamelCase condition reason; Message names the field and what to do.
type Problem struct {
	Reason  string
	Message string
}

func (p *Problem) Error() string { return p.Reason + ": " + p.Message }

// Build turns ing into a fragment. When probeHash is set, every path gets a
// readiness-probe twin ahead of it, as knative.dev/networking's InsertProbe
// would add: it matches "K-Network-Hash: override" and sets the header to
// probeHash. Building from the original spec keeps field paths in problems
// true to what the user wrote. Problems with single references (a missing
// Service, a bad Secret) do not stop the build: the fragment serves what it
// can — a missing Service becomes a backend without endpoints, which answers
// 503 — and the problems are returned for the status.
func Build(ing *v1alpha1.Ingress, probeHash string, l Listers, policy SecretPolicy) (*ir.Fragment, []*Problem) {
	b := &builder{
		ing:       ing,
		probeHash: probeHash,
		listers:   l,
		policy:    policy,
		backends:  map[string]*ir.Backend{},
		frag: &ir.Fragment{
			Source:  ir.ObjectRef{Kind: Kind, Namespace: ing.Namespace, Name: ing.Name},
			Created: ing.CreationTimestamp.Time,
		},
	}
	b.certificates()
	for i := range ing.Spec.Rules {
		b.rule(i, &ing.Spec.Rules[i])
	}
	names := make([]string, 0, len(b.backends))
	for n := range b.backends {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b.frag.Backends = append(b.frag.Backends, b.backends[n])
	}
	return b.frag, b.problems
}

type builder struct {
	ing       *v1alpha1.Ingress
	probeHash string
	listers   Listers
	policy    SecretPolicy
	frag      *ir.Fragment
	backends  map[string]*ir.Backend
	problems  []*Problem
}

func (b *builder) provenance() ir.Provenance { return ir.Provenance{b.frag.Source} }

func (b *builder) problem(reason, format string, args ...any) {
	b.problems = append(b.problems, &Problem{Reason: reason, Message: fmt.Sprintf(format, args...)})
}

// rolesFor returns the listeners a rule's hosts are served on. The internal
// listeners serve every rule so in-cluster callers reach public hosts too.
func rolesFor(v v1alpha1.IngressVisibility) ir.ListenerSet {
	set := ir.ListenerSet(0).With(ir.InternalHTTP).With(ir.InternalHTTPS)
	if v != v1alpha1.IngressVisibilityClusterLocal {
		set = set.With(ir.ExternalHTTP).With(ir.ExternalHTTPS)
	}
	return set
}

func (b *builder) rule(i int, rule *v1alpha1.IngressRule) {
	field := fmt.Sprintf("spec.rules[%d]", i)
	if rule.HTTP == nil {
		b.problem("InvalidSpec", "%s.http is missing; every rule needs http.paths", field)
		return
	}
	hosts := sets.List(ingress.ExpandedHosts(sets.New(rule.Hosts...)))
	routes := make([]*ir.Route, 0, 2*len(rule.HTTP.Paths))
	for j := range rule.HTTP.Paths {
		p := &rule.HTTP.Paths[j]
		pf := fmt.Sprintf("%s.http.paths[%d]", field, j)
		if b.probeHash != "" {
			routes = append(routes, b.probeRoute(pf, p))
		}
		routes = append(routes, b.route(pf, p))
	}
	// Longest prefix first; the sort is stable so each probe route stays
	// ahead of the route it copies.
	sort.SliceStable(routes, func(a, c int) bool {
		return len(routes[a].Match.Path.Value) > len(routes[c].Match.Path.Value)
	})

	roles := rolesFor(rule.Visibility)
	name := fmt.Sprintf("%s/%s/r%d", b.ing.Namespace, b.ing.Name, i)
	vh := &ir.VirtualHost{Name: name, Domains: hosts, Listeners: roles, Routes: routes, Provenance: b.provenance(), Field: field}

	redirect := b.ing.Spec.HTTPOption == v1alpha1.HTTPOptionRedirected && roles.Has(ir.ExternalHTTP)
	if !redirect {
		b.frag.VirtualHosts = append(b.frag.VirtualHosts, vh)
		return
	}
	// Plain external requests are redirected to HTTPS, except the readiness
	// probes, which must reach the backend to see the new hash.
	vh.Listeners &^= ir.ListenerSet(ir.ExternalHTTP)
	redirectRoutes := make([]*ir.Route, 0, len(routes)+1)
	for _, r := range routes {
		if isProbeRoute(r) {
			redirectRoutes = append(redirectRoutes, r)
		}
	}
	redirectRoutes = append(redirectRoutes, &ir.Route{
		Name:       name + "/https-redirect",
		Match:      ir.Match{Path: ir.PathMatch{Kind: ir.PathPrefix, Value: "/"}},
		Redirect:   &ir.Redirect{Scheme: "https", StatusCode: 301},
		Provenance: b.provenance(),
	})
	b.frag.VirtualHosts = append(b.frag.VirtualHosts, vh, &ir.VirtualHost{
		Name:       name + "/redirect",
		Domains:    hosts,
		Listeners:  ir.ListenerSet(ir.ExternalHTTP),
		Routes:     redirectRoutes,
		Provenance: b.provenance(),
		Field:      field,
	})
}

// probeRoute is the readiness-probe twin of a path. Its name ends in
// "/probe"; otherwise it is built exactly as InsertProbe's copy would be.
func (b *builder) probeRoute(field string, p *v1alpha1.HTTPIngressPath) *ir.Route {
	twin := p.DeepCopy()
	if twin.Headers == nil {
		twin.Headers = map[string]v1alpha1.HeaderMatch{}
	}
	if twin.AppendHeaders == nil {
		twin.AppendHeaders = map[string]string{}
	}
	twin.Headers[header.HashKey] = v1alpha1.HeaderMatch{Exact: header.HashValueOverride}
	twin.AppendHeaders[header.HashKey] = b.probeHash
	// Problems were already reported for the original path.
	n := len(b.problems)
	r := b.route(field, twin)
	b.problems = b.problems[:n]
	r.Name += "/probe"
	return r
}

func isProbeRoute(r *ir.Route) bool {
	for _, h := range r.Match.Headers {
		if strings.EqualFold(h.Name, header.HashKey) {
			return true
		}
	}
	return false
}

func (b *builder) route(field string, p *v1alpha1.HTTPIngressPath) *ir.Route {
	path := p.Path
	if path == "" {
		path = "/"
	}
	r := &ir.Route{
		Name:             b.ing.Namespace + "/" + b.ing.Name + "/" + field,
		Match:            ir.Match{Path: ir.PathMatch{Kind: ir.PathPrefix, Value: path}},
		RequestHeaders:   ir.HeaderMutation{Set: sortedHeaders(p.AppendHeaders)},
		HostRewrite:      p.RewriteHost,
		WebsocketUpgrade: true,
		Provenance:       b.provenance(),
	}
	for _, name := range sets.List(sets.KeySet(p.Headers)) {
		r.Match.Headers = append(r.Match.Headers, ir.HeaderMatch{Name: name, Kind: ir.HeaderExact, Value: p.Headers[name].Exact})
	}
	for k := range p.Splits {
		s := &p.Splits[k]
		name := b.backend(fmt.Sprintf("%s.splits[%d]", field, k), s.ServiceNamespace, s.ServiceName, s.ServicePort)
		r.Backends = append(r.Backends, ir.WeightedBackend{
			BackendName:    name,
			Weight:         uint32(max(s.Percent, 0)), //nolint:gosec // clamped to >= 0
			RequestHeaders: ir.HeaderMutation{Set: sortedHeaders(s.AppendHeaders)},
		})
	}
	return r
}

func sortedHeaders(m map[string]string) []ir.Header {
	if len(m) == 0 {
		return nil
	}
	out := make([]ir.Header, 0, len(m))
	for _, k := range sets.List(sets.KeySet(m)) {
		out = append(out, ir.Header{Name: k, Value: m[k]})
	}
	return out
}

// backend resolves a split's Service port and returns its backend name.
func (b *builder) backend(field, ns, name string, port intstr.IntOrString) string {
	if ns == "" {
		ns = b.ing.Namespace
	}
	svc, err := b.listers.Services.Services(ns).Get(name)
	if err != nil {
		// Unknown Service: keep a named, empty backend so the route answers
		// 503 instead of disappearing, and say why.
		key := ir.BackendName(ns, name, port.IntVal)
		if port.Type == intstr.String {
			key = fmt.Sprintf("%s/%s:%s", ns, name, port.StrVal)
		}
		if apierrs.IsNotFound(err) {
			b.problem("ServiceNotFound", "%s refers to Service %s/%s, which does not exist; create it or fix serviceName", field, ns, name)
		} else {
			b.problem("ServiceUnavailable", "%s: reading Service %s/%s: %v", field, ns, name, err)
		}
		b.addBackend(&ir.Backend{Name: key, Service: ir.ServiceRef{Namespace: ns, Name: name, Port: port.IntVal}})
		return key
	}
	sp, ok := backends.ServicePort(svc, port)
	if !ok {
		key := fmt.Sprintf("%s/%s:%s", ns, name, port.String())
		b.problem("ServicePortNotFound", "%s refers to port %s of Service %s/%s, which has no such port", field, port.String(), ns, name)
		b.addBackend(&ir.Backend{Name: key, Service: ir.ServiceRef{Namespace: ns, Name: name, Port: port.IntVal}})
		return key
	}
	key := ir.BackendName(ns, name, sp.Port)
	if _, done := b.backends[key]; done {
		return key
	}
	be := &ir.Backend{
		Name:     key,
		Service:  ir.ServiceRef{Namespace: ns, Name: name, Port: sp.Port},
		Protocol: backends.ProtocolOf(sp),
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		be.ExternalName = svc.Spec.ExternalName
		// An external HTTPS service must not be called in cleartext.
		if backends.SpeaksTLS(sp) {
			be.TLS = &ir.BackendTLS{ServerName: svc.Spec.ExternalName}
		}
	} else {
		slices, err := b.listers.EndpointSlices(ns, name)
		if err != nil {
			b.problem("EndpointsUnavailable", "listing EndpointSlices of Service %s/%s: %v", ns, name, err)
		}
		be.Endpoints = backends.Endpoints(slices, sp)
	}
	b.addBackend(be)
	return key
}

func (b *builder) addBackend(be *ir.Backend) {
	if _, ok := b.backends[be.Name]; !ok {
		be.Provenance = b.provenance()
		b.backends[be.Name] = be
	}
}

// certificates loads spec.tls. A certificate that cannot be used is left out
// and reported; the hosts it covered stay reachable over plain HTTP.
func (b *builder) certificates() {
	for i, t := range b.ing.Spec.TLS {
		field := fmt.Sprintf("spec.tls[%d]", i)
		ns := t.SecretNamespace
		if ns == "" {
			ns = b.ing.Namespace
		}
		if !b.policy.allows(b.ing.Namespace, ns) {
			b.problem("SecretNotAllowed", "%s.secretNamespace %q: a KIngress in %q may only use Secrets in its own namespace or in a namespace listed in config-weir's tls-secret-namespaces",
				field, ns, b.ing.Namespace)
			continue
		}
		sec, err := b.listers.Secrets.Secrets(ns).Get(t.SecretName)
		if apierrs.IsNotFound(err) {
			if sel := b.listers.SecretSelector; sel != "" {
				b.problem("SecretNotFound", "%s.secretName: Secret %s/%s does not exist or does not match the label selector %q that weir-controller watches Secrets by; for your own certificate, run: kubectl label secret -n %s %s %s=%s",
					field, ns, t.SecretName, sel, ns, t.SecretName, sel, t.SecretName)
			} else {
				b.problem("SecretNotFound", "%s.secretName: Secret %s/%s does not exist", field, ns, t.SecretName)
			}
			continue
		} else if err != nil {
			b.problem("SecretUnavailable", "%s.secretName: reading Secret %s/%s: %v", field, ns, t.SecretName, err)
			continue
		}
		if sec.Labels[xdstls.IdentityLabel] != "" {
			b.problem("InvalidTLSSecret", "%s.secretName: Secret %s/%s holds Weir's own xDS credentials and is never served; use another Secret", field, ns, t.SecretName)
			continue
		}
		certPEM, keyPEM := sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]
		if len(certPEM) == 0 || len(keyPEM) == 0 {
			b.problem("InvalidTLSSecret", "%s.secretName: Secret %s/%s needs non-empty %q and %q", field, ns, t.SecretName, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
			continue
		}
		// Parse only to validate; the error text never contains key bytes.
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			b.problem("InvalidTLSSecret", "%s.secretName: Secret %s/%s does not hold a usable key pair: %v", field, ns, t.SecretName, err)
			continue
		}
		var roles ir.ListenerSet
		hosts := sets.List(ingress.ExpandedHosts(sets.New(t.Hosts...)))
		for _, h := range hosts {
			roles |= b.hostRoles(h)
		}
		roles &= ir.ListenerSet(ir.ExternalHTTPS) | ir.ListenerSet(ir.InternalHTTPS)
		b.frag.Certificates = append(b.frag.Certificates, &ir.Certificate{
			Name:       ns + "/" + t.SecretName,
			Hosts:      hosts,
			Listeners:  roles,
			CertChain:  certPEM,
			PrivateKey: keyPEM,
			Provenance: b.provenance(),
			Field:      field,
		})
	}
}

// hostRoles returns the listeners on which a host is served by some rule.
func (b *builder) hostRoles(host string) ir.ListenerSet {
	var roles ir.ListenerSet
	for _, r := range b.ing.Spec.Rules {
		if ingress.ExpandedHosts(sets.New(r.Hosts...)).Has(host) {
			roles |= rolesFor(r.Visibility)
		}
	}
	return roles
}
