// Package ingress owns the networking.k8s.io Ingress front end: which
// Ingresses are Weir's (IngressClass, the legacy annotation, the default
// class), the ingress-nginx annotations it honours, and how the Ingresses
// of one host merge, path by path, into that host's ir.Fragment.
//
// Each host is one fragment, so a change to one Ingress rebuilds only the
// hosts it names, and a host's paths may come from many Ingresses as in
// ingress-nginx. The hosts are served on the gateway's external
// listeners.
package ingress

import (
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/backends"
	"github.com/weir-dev/weir/pkg/reconciler/secrets"
)

const (
	// Kind names an Ingress in problems and provenance.
	Kind = "Ingress"
	// HostKind is the kind of a host's fragment: ir.ObjectRef{Kind:
	// HostKind, Name: host}.
	HostKind = "Ingress host"
	// CatchAllHost is the host of rules without one and of the default
	// backend of Ingresses without rules.
	CatchAllHost = "*"
	// RedirectKind is the kind of a from-to-www-redirect's fragment.
	RedirectKind = "Ingress www redirect"
)

// redirectCreated makes a from-to-www redirect younger than any object.
var redirectCreated = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// Listers resolve an Ingress's references.
type Listers struct {
	Services       corelisters.ServiceLister
	EndpointSlices func(namespace, service string) ([]*discoveryv1.EndpointSlice, error)
	Secrets        corelisters.SecretLister
	// AuthSecrets has the Secrets auth-secret names; nil reads none.
	AuthSecrets corelisters.SecretLister
}

// Options are the front end's settings.
type Options struct {
	// ExtraClasses are class names served besides Weir's IngressClasses.
	ExtraClasses []string
	// DefaultCertificate, when set, is served for TLS hosts whose entry
	// names no Secret.
	DefaultCertificate *types.NamespacedName
	// MirrorTargetHosts are the hosts a mirror-target may name. A target
	// is any address the gateway reaches, its own admin port included,
	// so none is allowed unless the operator lists it.
	MirrorTargetHosts []string
	// AuthServiceNamespaces are the namespaces besides an Ingress's own
	// whose Services its auth-url may name: a check carries the request's
	// credentials, and the gateway may reach Services the Ingress's own
	// namespace may not. "*" allows every namespace.
	AuthServiceNamespaces []string
	// InternalKey, when set, replaces the Builder's random key of the
	// tokens that admit internal redirects to error pages: a client
	// cannot reach an error page's virtual host without its token, and a
	// default backend sees none. Set it only for output that must not
	// change from run to run (weir translate).
	InternalKey []byte
}

// Problem is something wrong with one Ingress, for a Warning Event.
type Problem struct {
	// Field is where, e.g. "spec.rules[0].http.paths[1]" or the
	// annotation's key.
	Field   string
	Reason  string
	Message string
}

func (p Problem) String() string { return p.Field + ": " + p.Message }

// IngressResult is what became of one Ingress of Weir's class.
type IngressResult struct {
	// Findings has one entry per ingress-nginx annotation.
	Findings []Finding
	Problems []Problem
	// Refused: this version is not served, because of a refused
	// annotation; LastGood says whether an earlier version serves
	// instead. A refused access-control annotation fails closed: no
	// version is served.
	Refused  bool
	LastGood bool
	// Hosts are the hosts the served version contributes to.
	Hosts []string
}

// Result is the build of every Ingress.
type Result struct {
	// Fragments has one fragment per host, sorted by host.
	Fragments []*ir.Fragment
	Ingresses map[types.NamespacedName]*IngressResult
}

// Builder builds Ingresses into host fragments and remembers the last
// good version of each Ingress, which keeps serving while a newer one is
// refused.
type Builder struct {
	mu       sync.Mutex
	lastGood map[types.NamespacedName]*netv1.Ingress
	// internalKey makes the tokens that admit the gateway's internal
	// redirects to error pages (Options.InternalKey).
	internalKey []byte
}

// NewBuilder returns a Builder that has seen no Ingress, with a random
// InternalKey.
func NewBuilder() *Builder {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // crypto/rand never fails on Linux
	return &Builder{lastGood: map[types.NamespacedName]*netv1.Ingress{}, internalKey: key}
}

// LastGood are the last good versions the Builder keeps, for Ingresses
// whose newest version was refused.
func (b *Builder) LastGood() []*netv1.Ingress {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*netv1.Ingress, 0, len(b.lastGood))
	for _, ing := range b.lastGood {
		out = append(out, ing)
	}
	return out
}

// entry is the version of an Ingress that is served, with its parsed
// annotations.
type entry struct {
	ing *netv1.Ingress
	cfg config
	ref ir.ObjectRef
	res *IngressResult
}

// Build builds the Ingresses of Weir's classes among ings.
func (b *Builder) Build(ings []*netv1.Ingress, classes Classes, l Listers, opts Options) *Result {
	b.mu.Lock()
	defer b.mu.Unlock()
	res := &Result{Ingresses: map[types.NamespacedName]*IngressResult{}}
	byHost := map[string][]*entry{}
	alive := map[types.NamespacedName]bool{}
	for _, ing := range ings {
		if !classes.Serves(ing) {
			continue
		}
		key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
		alive[key] = true
		cfg, findings, refused := parseAnnotations(ing)
		r := &IngressResult{Findings: findings, Refused: refused}
		res.Ingresses[key] = r
		served := ing
		if refused && slices.ContainsFunc(findings, func(f Finding) bool { return f.FailsClosed }) {
			// The last good version lacks the access control asked
			// for; it must not stay open.
			delete(b.lastGood, key)
			continue
		}
		if refused {
			served = b.lastGood[key]
			r.LastGood = served != nil
			if served == nil {
				continue
			}
			cfg, _, _ = parseAnnotations(served)
		} else {
			b.lastGood[key] = ing
		}
		e := &entry{ing: served, cfg: cfg, ref: refOf(served), res: r}
		for _, h := range hostsOf(served) {
			byHost[h] = append(byHost[h], e)
			r.Hosts = append(r.Hosts, h)
		}
	}
	for key := range b.lastGood {
		if !alive[key] {
			delete(b.lastGood, key)
		}
	}
	redirects := map[string]*ir.Fragment{}
	for _, h := range slices.Sorted(maps.Keys(byHost)) {
		es := byHost[h]
		slices.SortFunc(es, olderEntry)
		key := opts.InternalKey
		if key == nil {
			key = b.internalKey
		}
		hb := &hostBuilder{host: h, entries: es, listers: l, opts: opts, backends: map[string]*ir.Backend{}, internalKey: key}
		if f := hb.build(); f != nil {
			res.Fragments = append(res.Fragments, f)
		}
		if other, f := wwwRedirect(h, es, byHost); f != nil && redirects[other] == nil {
			redirects[other] = f
		}
	}
	for _, f := range redirects {
		res.Fragments = append(res.Fragments, f)
	}
	slices.SortFunc(res.Fragments, func(a, b *ir.Fragment) int { return strings.Compare(a.Source.Name, b.Source.Name) })
	return res
}

// wwwRedirect is ingress-nginx's from-to-www-redirect for host: the other
// name (with or without "www.") redirects to host with 308, keeping the
// scheme, path and query, unless an Ingress serves that name itself.
func wwwRedirect(host string, es []*entry, byHost map[string][]*entry) (string, *ir.Fragment) {
	if host == CatchAllHost || strings.HasPrefix(host, "*.") {
		return "", nil
	}
	var e *entry
	for _, c := range es {
		if c.cfg.fromToWWW && c.cfg.canary == nil && servesRulesFor(c.ing, host) {
			e = c
			break
		}
	}
	if e == nil {
		return "", nil
	}
	other, ok := strings.CutPrefix(host, "www.")
	if !ok {
		other = "www." + host
	}
	if _, served := byHost[other]; served || !validHost(other) {
		return "", nil
	}
	return other, &ir.Fragment{
		Source: ir.ObjectRef{Kind: RedirectKind, Name: other},
		// The youngest of all: whatever else serves the name keeps it,
		// as ingress-nginx drops the redirect for a served name.
		Created: redirectCreated,
		VirtualHosts: []*ir.VirtualHost{{
			Name: "ingress/" + other, Domains: []string{other}, Listeners: ir.ListenerSet(0).With(ir.ExternalHTTP),
			Routes: []*ir.Route{{
				Name:       other + "/from-to-www-redirect",
				Match:      ir.Match{Path: ir.PathMatch{Kind: ir.PathPrefix, Value: "/"}},
				Redirect:   &ir.Redirect{Host: host, StatusCode: 308},
				Provenance: ir.Provenance{e.ref},
			}},
			Provenance: ir.Provenance{e.ref},
			Field:      "metadata.annotations",
		}},
	}
}

func refOf(ing *netv1.Ingress) ir.ObjectRef {
	return ir.ObjectRef{Kind: Kind, Namespace: ing.Namespace, Name: ing.Name}
}

// olderEntry orders Ingresses as ingress-nginx breaks ties: the oldest
// first, then by namespace and name.
func olderEntry(a, b *entry) int {
	if c := a.ing.CreationTimestamp.Compare(b.ing.CreationTimestamp.Time); c != 0 {
		return c
	}
	return cmp.Or(strings.Compare(a.ing.Namespace, b.ing.Namespace), strings.Compare(a.ing.Name, b.ing.Name))
}

// hostsOf lists the hosts ing contributes to, lower-cased: its rules',
// its TLS entries' and, for its default backend without rules, the
// catch-all.
func hostsOf(ing *netv1.Ingress) []string {
	var out []string
	add := func(h string) {
		h = ir.LowerASCII(h)
		if h == "" {
			h = CatchAllHost
		}
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	for _, r := range ing.Spec.Rules {
		add(r.Host)
	}
	for _, t := range ing.Spec.TLS {
		for _, h := range t.Hosts {
			add(h)
		}
	}
	if len(ing.Spec.Rules) == 0 && ing.Spec.DefaultBackend != nil {
		add(CatchAllHost)
	}
	slices.Sort(out)
	return out
}

// hostBuilder builds one host's fragment.
type hostBuilder struct {
	host     string
	entries  []*entry // oldest first
	listers  Listers
	opts     Options
	backends map[string]*ir.Backend
	frag     *ir.Fragment
	// errorPages are the virtual hosts answering custom-http-errors, by
	// domain; internalKey makes their tokens.
	errorPages  map[string]*ir.VirtualHost
	internalKey []byte
}

// pathCandidate is one path of one Ingress's rule for the host.
type pathCandidate struct {
	e     *entry
	field string
	path  netv1.HTTPIngressPath
	match ir.PathMatch
}

func (hb *hostBuilder) problem(e *entry, field, reason, format string, args ...any) {
	e.res.Problems = append(e.res.Problems, Problem{Field: field, Reason: reason, Message: fmt.Sprintf(format, args...)})
}

func (hb *hostBuilder) build() *ir.Fragment {
	hb.frag = &ir.Fragment{
		Source:  ir.ObjectRef{Kind: HostKind, Name: hb.host},
		Created: hb.entries[0].ing.CreationTimestamp.Time,
	}
	var mains, canaries []*entry
	for _, e := range hb.entries {
		if e.cfg.canary != nil {
			canaries = append(canaries, e)
		} else {
			mains = append(mains, e)
		}
	}
	regexHost := slices.ContainsFunc(mains, func(e *entry) bool {
		return (e.cfg.useRegex || e.cfg.rewriteTarget != "") && servesRulesFor(e.ing, hb.host)
	})
	cands := hb.candidates(mains, regexHost)
	cert := hb.certificates(mains)
	tlsHost := cert != nil

	var https, http []*ir.Route
	redirected := false
	if e := firstWith(mains, hb.host, func(c config) bool { return c.appRoot != "" }); e != nil {
		// ingress-nginx answers "/" itself when app-root is set.
		r := &ir.Route{
			Name:       hb.host + "/app-root",
			Match:      ir.Match{Path: ir.PathMatch{Kind: ir.PathExact, Value: "/"}},
			Redirect:   &ir.Redirect{Path: &ir.PathModifier{Kind: ir.ReplaceFullPath, Value: e.cfg.appRoot}, StatusCode: 302},
			Provenance: ir.Provenance{e.ref},
		}
		https, http = append(https, r), append(http, r)
	}
	for _, c := range cands {
		routes := hb.routes(c, canaries)
		https = append(https, routes...)
		if sslRedirect(c.e.cfg, tlsHost) {
			// One redirect for the path: the last route, the path's own,
			// matches whatever its canary routes match.
			redirected = true
			last := routes[len(routes)-1]
			http = append(http, &ir.Route{Name: last.Name, Match: last.Match, Redirect: &ir.Redirect{Scheme: "https", StatusCode: 308}, Provenance: last.Provenance})
		} else {
			http = append(http, routes...)
		}
	}
	if fb, owner := hb.fallback(mains); fb != nil {
		https = append(https, fb)
		if sslRedirect(owner.cfg, tlsHost) {
			redirected = true
			http = append(http, &ir.Route{Name: fb.Name, Match: fb.Match, Redirect: &ir.Redirect{Scheme: "https", StatusCode: 308}, Provenance: fb.Provenance})
		} else {
			http = append(http, fb)
		}
	}
	if len(https) == 0 && len(hb.frag.Certificates) == 0 {
		return nil
	}
	if tlsHost {
		if checked, ok := hb.withClientTLS(mains, cert, https); ok {
			if !redirected {
				// Plain HTTP is not checked, as in nginx: its routes
				// stay as they were, on a virtual host of their own.
				http, redirected = https, true
			}
			https = checked
		}
	}
	prov := ir.Provenance{}
	for _, e := range hb.entries {
		prov = append(prov, e.ref)
	}
	vh := func(name string, roles ir.ListenerSet, routes []*ir.Route) *ir.VirtualHost {
		return &ir.VirtualHost{Name: "ingress/" + name, Domains: []string{hb.host}, Listeners: roles, Routes: routes, Provenance: prov, Field: "spec.rules"}
	}
	switch {
	case !tlsHost:
		hb.frag.VirtualHosts = append(hb.frag.VirtualHosts, vh(hb.host, ir.ListenerSet(0).With(ir.ExternalHTTP), http))
	case redirected:
		// Names are unique in a fragment, whatever the listener.
		hb.frag.VirtualHosts = append(hb.frag.VirtualHosts,
			vh("http/"+hb.host, ir.ListenerSet(0).With(ir.ExternalHTTP), http),
			vh("https/"+hb.host, ir.ListenerSet(0).With(ir.ExternalHTTPS), https))
	default:
		hb.frag.VirtualHosts = append(hb.frag.VirtualHosts, vh(hb.host, ir.ListenerSet(0).With(ir.ExternalHTTP).With(ir.ExternalHTTPS), https))
	}
	var roles ir.ListenerSet
	for _, v := range hb.frag.VirtualHosts {
		roles |= v.Listeners
	}
	for _, d := range slices.Sorted(maps.Keys(hb.errorPages)) {
		v := hb.errorPages[d]
		v.Listeners = roles
		hb.frag.VirtualHosts = append(hb.frag.VirtualHosts, v)
	}
	for _, n := range slices.Sorted(maps.Keys(hb.backends)) {
		hb.frag.Backends = append(hb.frag.Backends, hb.backends[n])
	}
	return hb.frag
}

// customErrors is e's custom-http-errors for a route to ib: the codes go
// to e's default-backend, as ingress-nginx sends them to its error
// location, with the headers that location sets. The default backend
// answers on a virtual host of the host's own, on an internal name that
// only the gateway's redirect uses; nil when e has no custom errors or its
// default backend does not resolve (then the answers stay as they are).
func (hb *hostBuilder) customErrors(e *entry, field string, ib netv1.IngressBackend) ir.HTTPFilter {
	codes, svc := e.cfg.customErrors, e.cfg.defaultBackend
	if len(codes) == 0 || svc == "" {
		return nil
	}
	domain := errorPagesDomain(hb.host, e.ing.Namespace, svc)
	token := internalToken(hb.internalKey, domain)
	if hb.errorPages[domain] == nil {
		be := hb.defaultBackend(e, field)
		if be.Unresolved {
			return nil
		}
		if hb.errorPages == nil {
			hb.errorPages = map[string]*ir.VirtualHost{}
		}
		hb.errorPages[domain] = &ir.VirtualHost{
			Name:     "ingress/custom-http-errors/" + domain,
			Domains:  []string{domain},
			Internal: true,
			Routes: []*ir.Route{{
				Name: domain + "/custom-http-errors",
				// Only the gateway's redirect has the token (nginx's
				// error location is "internal"), and it is a GET.
				Match: ir.Match{
					Path:    ir.PathMatch{Kind: ir.PathPrefix, Value: "/"},
					Headers: []ir.HeaderMatch{{Name: internalTokenHeader, Kind: ir.HeaderExact, Value: token}},
					Method:  http.MethodGet,
				},
				RequestHeaders: ir.HeaderMutation{Remove: []string{internalTokenHeader}},
				// nginx's error location asks for "/", with the query.
				PathRewrite: &ir.PathModifier{Kind: ir.ReplaceRegex, Pattern: "^.*$", Value: "/"},
				Backends:    []ir.WeightedBackend{be},
				Provenance:  ir.Provenance{e.ref},
			}},
			Provenance: ir.Provenance{e.ref},
			Field:      "metadata.annotations[" + AnnotationPrefix + "custom-http-errors]",
		}
	}
	var svcName, port string
	if s := ib.Service; s != nil {
		svcName, port = s.Name, s.Port.Name
		if port == "" {
			port = strconv.Itoa(int(s.Port.Number))
		}
	}
	return &ir.CustomErrors{
		Codes:      codes,
		Host:       domain,
		CodeHeader: "X-Code",
		Headers: []ir.Header{
			{Name: internalTokenHeader, Value: token},
			{Name: "X-Format", Value: "%REQ(accept)%"},
			// Envoy's router rewrites :path in place; the original
			// is then in x-envoy-original-path.
			{Name: "X-Original-URI", Value: "%REQ(x-envoy-original-path?:path)%"},
			{Name: "X-Namespace", Value: e.ing.Namespace},
			{Name: "X-Ingress-Name", Value: e.ing.Name},
			{Name: "X-Service-Name", Value: svcName},
			{Name: "X-Service-Port", Value: port},
		},
	}
}

// errorPagesDomain is the internal name of the virtual host answering the
// custom errors of host with Service svc of namespace ns, unique per host.
func errorPagesDomain(host, ns, svc string) string {
	h := fnv.New64a()
	h.Write([]byte(host))
	return fmt.Sprintf("%s.%s.%016x.custom-http-errors%s", svc, ns, h.Sum64(), ir.InternalDomainSuffix)
}

// internalTokenHeader carries the token of an internal redirect.
const internalTokenHeader = "X-Weir-Internal-Token"

// internalToken admits internal redirects to domain: one per domain, so a
// default backend that saw a token could reach no other's error pages.
func internalToken(key []byte, domain string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(domain))
	return hex.EncodeToString(m.Sum(nil))
}

// sslRedirect: ingress-nginx redirects plain HTTP to HTTPS for hosts with
// TLS unless ssl-redirect is false, and always with force-ssl-redirect.
func sslRedirect(c config, tlsHost bool) bool {
	return c.forceSSLRedirect || tlsHost && (c.sslRedirect == nil || *c.sslRedirect)
}

// servesRulesFor reports whether ing has a rule for host.
func servesRulesFor(ing *netv1.Ingress, host string) bool {
	return slices.ContainsFunc(ing.Spec.Rules, func(r netv1.IngressRule) bool { return hostOf(r.Host) == host })
}

func hostOf(h string) string {
	if h == "" {
		return CatchAllHost
	}
	return ir.LowerASCII(h)
}

// firstWith returns the oldest entry with a rule for host whose config has
// the property.
func firstWith(es []*entry, host string, has func(config) bool) *entry {
	for _, e := range es {
		if has(e.cfg) && servesRulesFor(e.ing, host) {
			return e
		}
	}
	return nil
}

// candidates lists the host's paths in the order they are matched:
// Exact first, then the longest path, then the oldest Ingress. A path that
// an older Ingress already serves loses, with a warning.
func (hb *hostBuilder) candidates(mains []*entry, regexHost bool) []pathCandidate {
	var out []pathCandidate
	for _, e := range mains {
		for i, r := range e.ing.Spec.Rules {
			if hostOf(r.Host) != hb.host || r.HTTP == nil {
				continue
			}
			for j, p := range r.HTTP.Paths {
				field := fmt.Sprintf("spec.rules[%d].http.paths[%d]", i, j)
				m, err := pathMatch(p, regexHost)
				if err != nil {
					hb.problem(e, field, "InvalidPath", "not served: %v", err)
					continue
				}
				out = append(out, pathCandidate{e: e, field: field, path: p, match: m})
			}
		}
	}
	rank := func(m ir.PathMatch) int {
		if m.Kind == ir.PathExact {
			return 0
		}
		return 1
	}
	length := func(m ir.PathMatch) int {
		if m.Kind == ir.PathSegmentPrefix && !strings.HasSuffix(m.Value, "/") {
			// "/api" is nginx's "/api/" (and "= /api"): longer than a
			// plain "/api".
			return len(m.Value) + 1
		}
		return len(m.Value)
	}
	slices.SortStableFunc(out, func(a, b pathCandidate) int {
		return cmp.Or(cmp.Compare(rank(a.match), rank(b.match)), cmp.Compare(length(b.match), length(a.match)), olderEntry(a.e, b.e))
	})
	kept := out[:0]
	for _, c := range out {
		if i := slices.IndexFunc(kept, func(k pathCandidate) bool { return k.match == c.match }); i >= 0 {
			if kept[i].e != c.e {
				hb.problem(c.e, c.field, "PathConflict", "path %q of host %s is not served: Ingress %s/%s, which is older, serves it",
					c.path.Path, hb.host, kept[i].e.ing.Namespace, kept[i].e.ing.Name)
			} else {
				hb.problem(c.e, c.field, "PathConflict", "path %q of host %s is listed twice; the first one is served", c.path.Path, hb.host)
			}
			continue
		}
		kept = append(kept, c)
	}
	return kept
}

// pathMatch is how ingress-nginx matches p: Exact whole; Prefix by path
// element; ImplementationSpecific as a plain prefix; and, on a host where
// any Ingress uses regular expressions, both as a case-insensitive regex
// anchored at the start.
func pathMatch(p netv1.HTTPIngressPath, regexHost bool) (ir.PathMatch, error) {
	path := cmp.Or(p.Path, "/")
	kind := netv1.PathTypeImplementationSpecific
	if p.PathType != nil {
		kind = *p.PathType
	}
	if !strings.HasPrefix(path, "/") {
		return ir.PathMatch{}, fmt.Errorf("path %q must start with \"/\"", path)
	}
	switch kind {
	case netv1.PathTypeExact, netv1.PathTypePrefix, netv1.PathTypeImplementationSpecific:
		if regexHost {
			// ingress-nginx's "~* ^path", Exact paths included; the
			// group keeps "/a|/b" one alternative of the whole.
			re := "(?i)(?:" + path + ").*"
			if _, err := regexp.Compile(re); err != nil {
				return ir.PathMatch{}, fmt.Errorf("path %q is not an RE2 regular expression: %v", path, err)
			}
			return ir.PathMatch{Kind: ir.PathRegex, Value: re}, nil
		}
		if kind == netv1.PathTypeExact {
			return ir.PathMatch{Kind: ir.PathExact, Value: path}, nil
		}
		if kind == netv1.PathTypePrefix {
			return ir.PathMatch{Kind: ir.PathSegmentPrefix, Value: path}, nil
		}
		return ir.PathMatch{Kind: ir.PathPrefix, Value: path}, nil
	}
	return ir.PathMatch{}, fmt.Errorf("pathType %q is not Exact, Prefix or ImplementationSpecific", kind)
}

// routes are the routes of one path: the canary's header and cookie
// routes first, then the path's own, split by the canary's weight.
func (hb *hostBuilder) routes(c pathCandidate, canaries []*entry) []*ir.Route {
	base := &ir.Route{
		Name:       fmt.Sprintf("%s/%s/%s/%s", hb.host, c.e.ing.Namespace, c.e.ing.Name, strings.TrimPrefix(c.field, "spec.")),
		Match:      ir.Match{Path: c.match},
		Provenance: ir.Provenance{c.e.ref},
	}
	cfg := c.e.cfg
	if cfg.redirect != nil {
		base.Redirect = externalRedirectOf(cfg.redirect)
		return []*ir.Route{base}
	}
	main := hb.backend(c.e, c.field+".backend", c.path.Backend)
	base.Backends = []ir.WeightedBackend{main}
	base.Retry = cfg.retry
	base.HashPolicy = hashPolicyOf(cfg, c.match)
	idle := cfg.idle
	base.IdleTimeout = &idle
	if cfg.rewriteTarget != "" {
		base.PathRewrite = rewriteOf(c.path, cfg.rewriteTarget)
	}
	base.HostRewrite = cfg.upstreamVhost
	if cfg.forwardPrefix != "" {
		base.RequestHeaders.Set = append(base.RequestHeaders.Set, ir.Header{Name: "X-Forwarded-Prefix", Value: cfg.forwardPrefix})
	}
	canary, cfield := hb.canaryFor(c, canaries)
	var cb ir.WeightedBackend
	if canary != nil {
		cb = hb.backend(canary, cfield+".backend", canaryPath(canary, hb.host, c).Backend)
	}
	base.Filters = hb.filters(cfg, main, cb)
	if ce := hb.customErrors(c.e, c.field+".backend", c.path.Backend); ce != nil {
		base.Filters = append(base.Filters, ce)
	}
	if !hb.withAuth(c.e, base) {
		return []*ir.Route{base}
	}
	if cfg.mirror != nil {
		if slices.Contains(hb.opts.MirrorTargetHosts, ir.LowerASCII(cfg.mirror.Hostname())) {
			base.Mirrors = []ir.Mirror{{BackendName: hb.mirrorBackend(c.e, cfg.mirror)}}
		} else {
			hb.problem(c.e, "metadata.annotations["+AnnotationPrefix+"mirror-target]", "MirrorNotAllowed",
				"requests are not mirrored to %s: the gateway's operator has not allowed that host (MIRROR_TARGET_HOSTS on weir-controller, --mirror-target-host for weir run)", cfg.mirror.Hostname())
		}
	}
	if canary == nil {
		return []*ir.Route{base}
	}
	cc := canary.cfg.canary
	var out []*ir.Route
	with := func(suffix string, h ir.HeaderMatch, to ir.WeightedBackend) {
		r := *base
		r.Name = base.Name + "/canary-" + suffix
		r.Match.Headers = []ir.HeaderMatch{h}
		r.Backends = []ir.WeightedBackend{to}
		r.Provenance = ir.Provenance{c.e.ref, canary.ref}
		out = append(out, &r)
	}
	if cc.header != "" {
		switch {
		case cc.headerValue != "":
			with("header", ir.HeaderMatch{Name: cc.header, Kind: ir.HeaderExact, Value: cc.headerValue}, cb)
		case cc.headerPattern != "":
			with("header", ir.HeaderMatch{Name: cc.header, Kind: ir.HeaderRegex, Value: cc.headerPattern}, cb)
		default:
			with("header-always", ir.HeaderMatch{Name: cc.header, Kind: ir.HeaderExact, Value: "always"}, cb)
			with("header-never", ir.HeaderMatch{Name: cc.header, Kind: ir.HeaderExact, Value: "never"}, main)
		}
	}
	if cc.cookie != "" {
		with("cookie-always", cookieMatch(cc.cookie, "always"), cb)
		with("cookie-never", cookieMatch(cc.cookie, "never"), main)
	}
	if cc.weight > 0 {
		r := *base
		w := main
		w.Weight = cc.weightTotal - cc.weight
		cw := cb
		cw.Weight = cc.weight
		r.Backends = []ir.WeightedBackend{w, cw}
		r.Provenance = ir.Provenance{c.e.ref, canary.ref}
		base = &r
	}
	return append(out, base)
}

// filters are the per-request policies of an Ingress's routes, its
// default backend's included, as ingress-nginx applies an Ingress's
// annotations to every location it makes. backends are where the route
// may send a request.
func (hb *hostBuilder) filters(cfg config, backends ...ir.WeightedBackend) []ir.HTTPFilter {
	var out []ir.HTTPFilter
	if cfg.allow != nil || cfg.deny != nil {
		out = append(out, &ir.SourceRanges{Allow: cfg.allow, Deny: cfg.deny})
	}
	if cfg.cors != nil {
		out = append(out, corsPolicy(cfg.cors))
	}
	if cfg.rateLimit != nil {
		out = append(out, cfg.rateLimit)
	}
	// A gRPC stream cannot be held until it ends.
	grpc := cfg.protocol == "GRPC" || slices.ContainsFunc(backends, func(b ir.WeightedBackend) bool {
		be, ok := hb.backends[b.BackendName]
		return ok && be.Protocol == ir.GRPC
	})
	if cfg.bodyLimit > 0 && !grpc {
		out = append(out, &ir.BodyLimit{MaxBytes: cfg.bodyLimit})
	}
	return out
}

// mirrorBackend is the cluster of a mirror-target: its host, resolved by
// DNS, over TLS for https (verified against the gateway's bundle).
func (hb *hostBuilder) mirrorBackend(e *entry, target *url.URL) string {
	port := 80
	if target.Scheme == "https" {
		port = 443
	}
	if p := target.Port(); p != "" {
		port, _ = strconv.Atoi(p) // validHost checked it is digits
	}
	host := target.Hostname()
	name := fmt.Sprintf("mirror/%s://%s:%d", target.Scheme, host, port)
	if _, ok := hb.backends[name]; !ok {
		// No namespace: Ingresses of every namespace share the cluster.
		be := &ir.Backend{Name: name, ExternalName: host, Service: ir.ServiceRef{Name: name, Port: int32(port)}, //nolint:gosec // 1..65535, checked by validPort
			Provenance: ir.Provenance{e.ref}}
		if target.Scheme == "https" {
			be.TLS = &ir.BackendTLS{ServerName: host}
		}
		hb.backends[name] = be
	}
	return name
}

// canaryFor finds the oldest canary Ingress with the same host, path and
// pathType as c; a younger one for the same path is warned about.
func (hb *hostBuilder) canaryFor(c pathCandidate, canaries []*entry) (*entry, string) {
	var found *entry
	var field string
	for _, e := range canaries {
		for i, r := range e.ing.Spec.Rules {
			if hostOf(r.Host) != hb.host || r.HTTP == nil {
				continue
			}
			for j, p := range r.HTTP.Paths {
				if p.Path != c.path.Path || !samePathType(p.PathType, c.path.PathType) {
					continue
				}
				f := fmt.Sprintf("spec.rules[%d].http.paths[%d]", i, j)
				if found == nil {
					found, field = e, f
				} else if found != e {
					hb.problem(e, f, "CanaryConflict", "canary for path %q of host %s is not served: Ingress %s/%s, which is older, is its canary",
						p.Path, hb.host, found.ing.Namespace, found.ing.Name)
				}
			}
		}
	}
	return found, field
}

func canaryPath(e *entry, host string, c pathCandidate) netv1.HTTPIngressPath {
	for _, r := range e.ing.Spec.Rules {
		if hostOf(r.Host) != host || r.HTTP == nil {
			continue
		}
		for _, p := range r.HTTP.Paths {
			if p.Path == c.path.Path && samePathType(p.PathType, c.path.PathType) {
				return p
			}
		}
	}
	return netv1.HTTPIngressPath{}
}

func samePathType(a, b *netv1.PathType) bool {
	of := func(p *netv1.PathType) netv1.PathType {
		if p == nil {
			return netv1.PathTypeImplementationSpecific
		}
		return *p
	}
	return of(a) == of(b)
}

// cookieMatch matches a Cookie header that sets name to value.
func cookieMatch(name, value string) ir.HeaderMatch {
	return ir.HeaderMatch{Name: "Cookie", Kind: ir.HeaderRegex,
		Value: `(?:.*;\s*)?` + regexp.QuoteMeta(name) + `=` + regexp.QuoteMeta(value) + `(?:\s*;.*)?`}
}

// rewriteOf is ingress-nginx's rewrite: the path, as a regex from the
// start, replaces the whole path with the target, $n being its groups.
func rewriteOf(p netv1.HTTPIngressPath, target string) *ir.PathModifier {
	pattern := "(?i)^(?:" + cmp.Or(p.Path, "/") + ").*"
	groups := -1
	if re, err := regexp.Compile(pattern); err == nil {
		groups = re.NumSubexp()
	}
	sub := strings.ReplaceAll(target, `\`, `\\`)
	sub = dollarGroup.ReplaceAllStringFunc(sub, func(g string) string {
		// As in nginx, a capture the path does not have is empty; RE2
		// (and so Envoy) refuses a rewrite that names one.
		if n := int(g[1] - '0'); groups >= 0 && n > groups {
			return ""
		}
		return `\` + g[1:]
	})
	return &ir.PathModifier{Kind: ir.ReplaceRegex, Pattern: pattern, Value: sub}
}

var dollarGroup = regexp.MustCompile(`\$([0-9])`)

// externalRedirectOf answers with r's URL; without $request_uri the
// request's path and query are dropped, as nginx's return does.
func externalRedirectOf(r *externalRedirect) *ir.Redirect {
	out := &ir.Redirect{Scheme: r.url.Scheme, Host: r.url.Hostname(), StatusCode: r.code}
	if p := r.url.Port(); p != "" {
		var n uint32
		fmt.Sscanf(p, "%d", &n) //nolint:errcheck // parseRedirect checked it
		out.Port = n
	}
	if !r.keepURI {
		path := cmp.Or(r.url.EscapedPath(), "/")
		if r.url.RawQuery != "" {
			path += "?" + r.url.RawQuery
		}
		out.Path = &ir.PathModifier{Kind: ir.ReplaceFullPath, Value: path}
		out.StripQuery = true
	}
	return out
}

// corsPolicy is c for the gateway's CORS filter, which echoes an allowed
// origin instead of sending "*". nginx sends "*" for "*", and browsers then
// refuse credentials whatever cors-allow-credentials says; echoing with
// credentials would let every site read responses with the user's
// cookies. So "*" never allows credentials.
func corsPolicy(c *corsConfig) *ir.CORSPolicy {
	maxAge := c.maxAge
	return &ir.CORSPolicy{
		AllowOrigins: c.origins, AllowMethods: c.methods, AllowHeaders: c.headers, ExposeHeaders: c.expose,
		MaxAge: &maxAge, AllowCredentials: c.credentials && !slices.Contains(c.origins, "*"),
	}
}

// fallback is the host's last route: the default backend of the oldest
// Ingress that has one, for paths no rule matched. Rules without a host
// fall back to an Ingress without rules.
func (hb *hostBuilder) fallback(mains []*entry) (*ir.Route, *entry) {
	for _, e := range mains {
		db := e.ing.Spec.DefaultBackend
		if db == nil || !servesRulesFor(e.ing, hb.host) && !(hb.host == CatchAllHost && len(e.ing.Spec.Rules) == 0) {
			continue
		}
		be := hb.backend(e, "spec.defaultBackend", *db)
		r := &ir.Route{
			Name:        fmt.Sprintf("%s/%s/%s/defaultBackend", hb.host, e.ing.Namespace, e.ing.Name),
			Match:       ir.Match{Path: ir.PathMatch{Kind: ir.PathPrefix, Value: "/"}},
			Retry:       e.cfg.retry,
			IdleTimeout: &e.cfg.idle,
			Backends:    []ir.WeightedBackend{be},
			Filters:     hb.filters(e.cfg, be),
			Provenance:  ir.Provenance{e.ref},
		}
		if ce := hb.customErrors(e, "spec.defaultBackend", *db); ce != nil {
			r.Filters = append(r.Filters, ce)
		}
		hb.withAuth(e, r)
		return r, e
	}
	return nil, nil
}

// backend resolves an Ingress backend. One that does not resolve answers
// 503 on its path, and its Ingress is warned about.
func (hb *hostBuilder) backend(e *entry, field string, ib netv1.IngressBackend) ir.WeightedBackend {
	unresolved := func(format string, args ...any) ir.WeightedBackend {
		hb.problem(e, field, "BackendNotFound", format+"; the path answers 503", args...)
		return ir.WeightedBackend{BackendName: e.ref.String() + "/" + field, Weight: 100, Unresolved: true}
	}
	if ib.Service == nil {
		return unresolved("only Service backends are served")
	}
	ns, name := e.ing.Namespace, ib.Service.Name
	svc, err := hb.listers.Services.Services(ns).Get(name)
	if err != nil {
		if apierrs.IsNotFound(err) {
			return unresolved("Service %s/%s does not exist", ns, name)
		}
		return unresolved("reading Service %s/%s: %v", ns, name, err)
	}
	port := intstr.FromInt32(ib.Service.Port.Number)
	if ib.Service.Port.Name != "" {
		port = intstr.FromString(ib.Service.Port.Name)
	}
	sp, ok := backends.ServicePort(svc, port)
	if !ok {
		return unresolved("Service %s/%s has no port %s", ns, name, port.String())
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		// CVE-2021-25740: an Ingress author could reach any name.
		return unresolved("Service %s/%s is an ExternalName Service, which Weir does not route Ingresses to", ns, name)
	}
	be := &ir.Backend{
		Name:     ir.BackendName(ns, name, sp.Port),
		Service:  ir.ServiceRef{Namespace: ns, Name: name, Port: sp.Port},
		Protocol: backends.ProtocolOf(sp),
	}
	// ingress-nginx speaks HTTP/1.1 unless backend-protocol says otherwise;
	// a protocol other than the port's own gets a cluster of its own.
	want := ir.HTTP1
	switch e.cfg.protocol {
	case "GRPC", "GRPCS":
		want = ir.GRPC
	case "H2C":
		want = ir.H2C
	}
	if want != be.Protocol {
		be.Protocol = want
		be.Name += "/" + want.String()
	}
	if e.cfg.protocol == "HTTPS" || e.cfg.protocol == "GRPCS" {
		t, suffix, problem := hb.upstreamTLS(e)
		if problem != "" {
			hb.problem(e, field, "InvalidBackendTLS", "%s; the path answers 503", problem)
			return ir.WeightedBackend{BackendName: e.ref.String() + "/" + field, Weight: 100, Unresolved: true}
		}
		be.TLS = t
		be.Name += suffix
	}
	if lb := e.cfg.lb; lb != ir.LBRoundRobin {
		// Its own cluster: others reach the Service in turn.
		be.LoadBalancer = lb
		be.Name += "/lb=" + lb.String()
	}
	if d := e.cfg.connectTimeout; d > 0 {
		// Its own cluster: others reach the Service with the default.
		be.ConnectTimeout = d
		be.Name += "/connect-timeout=" + d.String()
	}
	be, err = hb.addBackend(e, be, sp)
	if err != nil {
		return unresolved("%v", err)
	}
	if len(be.Endpoints) == 0 && e.cfg.defaultBackend != "" {
		return hb.defaultBackend(e, field)
	}
	return ir.WeightedBackend{BackendName: be.Name, Weight: 100}
}

// addBackend puts be among the host's backends with the ready endpoints
// of its Service's port sp, and returns it; a backend of the same name
// that is there already is returned instead.
func (hb *hostBuilder) addBackend(e *entry, be *ir.Backend, sp corev1.ServicePort) (*ir.Backend, error) {
	if prev, ok := hb.backends[be.Name]; ok {
		return prev, nil
	}
	slices, err := hb.listers.EndpointSlices(be.Service.Namespace, be.Service.Name)
	if err != nil {
		return nil, fmt.Errorf("listing EndpointSlices of Service %s/%s: %w", be.Service.Namespace, be.Service.Name, err)
	}
	be.Endpoints = backends.Endpoints(slices, sp)
	be.Provenance = ir.Provenance{e.ref}
	hb.backends[be.Name] = be
	return be, nil
}

// defaultBackend is e's default-backend, which ingress-nginx sends a
// path's requests to while the path's Service has no ready endpoints: a
// Service of the Ingress's namespace, on its first port, over HTTP/1.1.
// The Services' endpoints are watched, so the path returns to its own
// Service when it has some again.
func (hb *hostBuilder) defaultBackend(e *entry, field string) ir.WeightedBackend {
	ns, name := e.ing.Namespace, e.cfg.defaultBackend
	unresolved := func(format string, args ...any) ir.WeightedBackend {
		hb.problem(e, "metadata.annotations["+AnnotationPrefix+"default-backend]", "BackendNotFound", format+"; the path answers 503 while its own Service has no ready endpoints", args...)
		return ir.WeightedBackend{BackendName: e.ref.String() + "/" + field + "/default-backend", Weight: 100, Unresolved: true}
	}
	svc, err := hb.listers.Services.Services(ns).Get(name)
	switch {
	case err != nil:
		return unresolved("Service %s/%s of default-backend: %v", ns, name, err)
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		return unresolved("Service %s/%s of default-backend is an ExternalName Service, which Weir does not route Ingresses to", ns, name)
	case len(svc.Spec.Ports) == 0:
		return unresolved("Service %s/%s of default-backend has no port", ns, name)
	}
	sp := svc.Spec.Ports[0]
	be := &ir.Backend{
		Name:     ir.BackendName(ns, name, sp.Port),
		Service:  ir.ServiceRef{Namespace: ns, Name: name, Port: sp.Port},
		Protocol: ir.HTTP1,
	}
	if backends.ProtocolOf(sp) != ir.HTTP1 {
		be.Name += "/" + ir.HTTP1.String()
	}
	if _, err := hb.addBackend(e, be, sp); err != nil {
		return unresolved("%v", err)
	}
	return ir.WeightedBackend{BackendName: be.Name, Weight: 100}
}

// hashPolicyOf is what a path's consistent-hash backends hash: the sticky
// cookie, set for the path itself unless session-cookie-path says
// otherwise (for a regular expression, "/"), or upstream-hash-by's inputs.
func hashPolicyOf(cfg config, m ir.PathMatch) []ir.HashPolicy {
	if a := cfg.affinity; a != nil {
		hp := *a
		if hp.CookiePath == "" {
			hp.CookiePath = "/"
			if m.Kind != ir.PathRegex && m.Value != "" && ir.ValidCookiePath(m.Value) {
				hp.CookiePath = m.Value
			}
		}
		return []ir.HashPolicy{hp}
	}
	return cfg.hashBy
}

// authTimeout bounds each authorization check.
const authTimeout = 10 * time.Second

// withAuth puts e's users and authorization service in front of r. When
// either cannot be served, r answers 503 rather than serve unchecked, and
// withAuth reports false.
func (hb *hostBuilder) withAuth(e *entry, r *ir.Route) bool {
	return hb.withBasicAuth(e, r) && hb.withExtAuth(e, r)
}

// withExtAuth puts e's authorization service in front of r, as withAuth.
func (hb *hostBuilder) withExtAuth(e *entry, r *ir.Route) bool {
	a := e.cfg.auth
	if a == nil {
		return true
	}
	const field = "metadata.annotations[" + AnnotationPrefix + "auth-url]"
	fail := func(format string, args ...any) bool {
		hb.problem(e, field, "AuthServiceNotFound", format+"; the path answers 503 until it does", args...)
		r.Backends = []ir.WeightedBackend{{BackendName: e.ref.String() + "/auth-url", Weight: 100, Unresolved: true}}
		r.Mirrors, r.HashPolicy = nil, nil
		return false
	}
	if a.namespace != e.ing.Namespace && !slices.Contains(hb.opts.AuthServiceNamespaces, a.namespace) && !slices.Contains(hb.opts.AuthServiceNamespaces, "*") {
		return fail("Service %s/%s of auth-url is in another namespace than the Ingress; the gateway's operator allows that only for the namespaces of AUTH_SERVICE_NAMESPACES on weir-controller (--auth-service-namespace for weir run)", a.namespace, a.service)
	}
	svc, err := hb.listers.Services.Services(a.namespace).Get(a.service)
	if err != nil {
		return fail("Service %s/%s of auth-url: %v", a.namespace, a.service, err)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return fail("Service %s/%s of auth-url is an ExternalName Service, which Weir does not send checks to", a.namespace, a.service)
	}
	sp, ok := backends.ServicePort(svc, intstr.FromInt32(a.port))
	if !ok {
		return fail("Service %s/%s of auth-url has no port %d", a.namespace, a.service, a.port)
	}
	be := &ir.Backend{
		Name:     ir.BackendName(a.namespace, a.service, sp.Port),
		Service:  ir.ServiceRef{Namespace: a.namespace, Name: a.service, Port: sp.Port},
		Protocol: ir.HTTP1,
	}
	if backends.ProtocolOf(sp) != ir.HTTP1 {
		be.Name += "/" + ir.HTTP1.String()
	}
	if a.https {
		// nginx does not verify the service's certificate by default.
		be.TLS = &ir.BackendTLS{Verify: ir.VerifyNone, ServerName: a.service + "." + a.namespace + ".svc"}
		be.Name += "+tls,sni=" + be.TLS.ServerName
	}
	if _, err := hb.addBackend(e, be, sp); err != nil {
		return fail("%v", err)
	}
	if len(a.responseHeaders) > 0 {
		// The service's answer sets them; the client's never pass.
		r.Filters = append(r.Filters, &ir.RemoveRequestHeaders{Names: a.responseHeaders})
	}
	r.Filters = append(r.Filters, &ir.ExtAuth{
		BackendName: be.Name,
		Path:        a.path,
		CheckHeaders: []ir.Header{
			{Name: "X-Original-URL", Value: "%REQ(x-forwarded-proto)%://%REQ(:authority)%%REQ(:path)%"},
			{Name: "X-Original-Method", Value: "%REQ(:method)%"},
			{Name: "X-Auth-Request-Redirect", Value: a.redirect},
			// As nginx's $remote_addr: never the client's own claim.
			{Name: "X-Real-IP", Value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
		},
		UpstreamHeaders: a.responseHeaders,
		Timeout:         authTimeout,
	})
	return true
}

// upstreamTLS is how the gateway connects to e's HTTPS and GRPCS
// backends, and the suffix that gives such a backend a cluster of its own.
// Without proxy-ssl-verify nothing is verified, as in ingress-nginx. The
// proxy-ssl-secret's pair is presented as the client certificate.
func (hb *hostBuilder) upstreamTLS(e *entry) (*ir.BackendTLS, string, string) {
	c := e.cfg.upstreamTLS
	t := &ir.BackendTLS{Verify: ir.VerifyNone}
	suffix := "+tls"
	if c.sni && c.name != "" {
		t.ServerName = c.name
		suffix += ",sni=" + c.name
	}
	if c.secret == "" {
		return t, suffix, ""
	}
	ns := e.ing.Namespace
	chain, key, ca, problem := secrets.TLSKeyPairAndCA(hb.listers.Secrets, ns, c.secret)
	if problem != "" {
		return nil, "", "proxy-ssl-secret: " + problem
	}
	name := ns + "/" + c.secret
	if !slices.ContainsFunc(hb.frag.Certificates, func(cert *ir.Certificate) bool { return cert.Name == name }) {
		hb.frag.Certificates = append(hb.frag.Certificates, &ir.Certificate{
			Name: name, CertChain: chain, PrivateKey: key, Provenance: ir.Provenance{e.ref}, Field: "metadata.annotations[" + AnnotationPrefix + "proxy-ssl-secret]",
		})
	}
	t.ClientCertificate = name
	suffix += ",client-cert=" + name
	if !c.verify {
		return t, suffix, ""
	}
	if len(ca) == 0 {
		return nil, "", fmt.Sprintf("proxy-ssl-verify: Secret %s has no ca.crt to verify the backend's certificate against", name)
	}
	t.CACertificates = string(ca)
	t.Verify = ir.VerifyChain
	if c.name != "" {
		t.Verify = ir.VerifyFull
		t.SubjectAltNames = []ir.SubjectAltName{{Value: c.name}}
	}
	return t, suffix + ",verify=" + c.name, ""
}

// certificates adds the host's certificate: from the oldest Ingress with
// a TLS entry for it, its Secret or the default certificate. It is nil
// when the host is not served over TLS.
func (hb *hostBuilder) certificates(mains []*entry) *ir.Certificate {
	for _, e := range mains {
		for i, t := range e.ing.Spec.TLS {
			if !slices.ContainsFunc(t.Hosts, func(h string) bool { return ir.LowerASCII(h) == hb.host }) {
				continue
			}
			field := fmt.Sprintf("spec.tls[%d]", i)
			ns, name := e.ing.Namespace, t.SecretName
			if name == "" {
				if hb.opts.DefaultCertificate == nil {
					hb.problem(e, field, "NoCertificate", "host %s names no Secret and Weir has no default certificate (--default-ssl-certificate); it is not served over HTTPS", hb.host)
					return nil
				}
				ns, name = hb.opts.DefaultCertificate.Namespace, hb.opts.DefaultCertificate.Name
			}
			chain, key, problem := secrets.TLSKeyPair(hb.listers.Secrets, ns, name)
			if problem != "" {
				hb.problem(e, field+".secretName", "InvalidCertificate", "host %s is not served over HTTPS: %s", hb.host, problem)
				return nil
			}
			c := &ir.Certificate{
				Name: ns + "/" + name, Hosts: []string{hb.host}, Listeners: ir.ListenerSet(0).With(ir.ExternalHTTPS),
				CertChain: chain, PrivateKey: key, Provenance: ir.Provenance{e.ref}, Field: field,
			}
			hb.frag.Certificates = append(hb.frag.Certificates, c)
			return c
		}
	}
	return nil
}
