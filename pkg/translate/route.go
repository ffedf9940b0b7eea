package translate

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"golang.org/x/net/http/httpguts"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/re2size"
)

// buildVirtualHost translates vh. Routes that cannot be expressed are left
// out with a warning; the virtual host itself is nil when it has no name or
// no usable domain. usesUnavailable reports a route to UnavailableCluster.
func buildVirtualHost(vh *ir.VirtualHost, available nameSet, s *shared, w *warner) (out *routev3.VirtualHost, usesUnavailable bool) {
	if vh.Name == "" || !utf8.ValidString(vh.Name) {
		w.add("left out: no valid name")
		return nil, false
	}
	out = &routev3.VirtualHost{Name: vh.Name, Domains: vhostDomains(vh.Domains, vh.Internal, w)}
	if len(out.Domains) == 0 {
		w.add("left out: no valid domain")
		return nil, false
	}
	for i, r := range vh.Routes {
		label := strconv.Itoa(i)
		if r != nil && r.Name != "" {
			label = strconv.Quote(r.Name)
		}
		if r == nil {
			w.add("route %s: nil route ignored", label)
			continue
		}
		rw := routeWarner(w, r.Provenance)
		route, unavailable, err := buildRoute(r, available, vh.Listener != "", s, rw, label, statName(vh.Name, r.Name, i))
		if err != nil {
			rw.add("route %s left out: %v", label, err)
		}
		if rw != w {
			w.list = append(w.list, rw.list...)
		}
		if err != nil {
			continue
		}
		out.Routes = append(out.Routes, route)
		usesUnavailable = usesUnavailable || unavailable
	}
	return out, usesUnavailable
}

// vhostDomains returns each domain as Envoy compares it (canonicalHost),
// without duplicates. Requests that carry a port match too: route
// configurations set ignore_port_in_host_matching.
func vhostDomains(in []string, internal bool, w *warner) []string {
	out := make([]string, 0, len(in))
	var seen map[string]bool
	if len(in) > 8 {
		seen = make(map[string]bool, len(in))
	}
	for _, d := range in {
		c, err := canonicalHost(d)
		if err == nil {
			err = checkDomainWildcard(c)
		}
		if err == nil && internal != strings.HasSuffix(c, ir.InternalDomainSuffix) {
			err = fmt.Errorf("names under %s are Weir's internal virtual hosts' alone", ir.InternalDomainSuffix)
		}
		if err != nil {
			w.addReason(ReasonInvalidHost, "domain %+q left out: %v", d, err)
			continue
		}
		if c == "*" && len(in) > 1 {
			// Harmless alone; beside other domains it would take their
			// requests too, which is not what a list of hosts means.
			w.addReason(ReasonInvalidHost, `domain "*" left out: it matches every host, so it cannot be one of several`)
			continue
		}
		if seen != nil {
			if seen[c] {
				continue
			}
			seen[c] = true
		} else if slices.Contains(out, c) {
			continue
		}
		out = append(out, c)
	}
	return out
}

// buildRoute translates r and validates the result, so that one bad route
// cannot make Envoy reject the whole route configuration.
func buildRoute(r *ir.Route, available nameSet, ownListener bool, s *shared, w *warner, label, statID string) (*routev3.Route, bool, error) {
	if err := checkUTF8(r); err != nil {
		return nil, false, err
	}
	match, err := buildMatch(r.Match, s)
	if err != nil {
		return nil, false, err
	}
	out := &routev3.Route{Match: match}
	unavailable := false
	switch {
	case r.Redirect != nil:
		if len(r.Backends) > 0 || r.DirectResponse != nil {
			w.add("route %s: has a redirect and backends or a direct response; the redirect is used", label)
		}
		rd, err := buildRedirect(r.Redirect, r.Match.Path, w, label)
		if err != nil {
			return nil, false, err
		}
		out.Action = &routev3.Route_Redirect{Redirect: rd}
	case r.DirectResponse != nil:
		if len(r.Backends) > 0 {
			w.add("route %s: has both a direct response and backends; the direct response is used", label)
		}
		dr := &routev3.DirectResponseAction{Status: uint32(r.DirectResponse.StatusCode)}
		if r.DirectResponse.Body != "" {
			dr.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: r.DirectResponse.Body}}
		}
		out.Action = &routev3.Route_DirectResponse{DirectResponse: dr}
	default:
		var action *routev3.RouteAction
		action, unavailable, err = buildRouteAction(r, available, ownListener, s, w, label)
		if err != nil {
			return nil, false, err
		}
		out.Action = &routev3.Route_Route{Route: action}
	}
	if len(r.Mirrors) > 0 && out.GetRoute() == nil {
		w.add("route %s: answers without a backend, so its requests are not mirrored", label)
	}
	out.RequestHeadersToAdd, out.RequestHeadersToRemove = buildHeaderMutation(r.RequestHeaders, s, w, label)
	out.ResponseHeadersToAdd, out.ResponseHeadersToRemove = buildHeaderMutation(r.ResponseHeaders, s, w, label)
	if out.TypedPerFilterConfig, err = perFilterConfig(r.Filters, statID, available, s); err != nil {
		// Leaving the route out would hand its requests to a less
		// specific route, without the policy (an authorization check, a
		// source range) this one must apply: answer them 500 instead.
		w.add("route %s answers 500: its policies cannot be served: %v", label, err)
		return &routev3.Route{Match: match, Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: http.StatusInternalServerError,
			Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "the route's policies cannot be served"}},
		}}}, false, nil
	}
	if err := out.ValidateAll(); err != nil {
		return nil, false, err
	}
	return out, unavailable, nil
}

// statName names a route in its filters' stats: its virtual host and its
// own name, or its place when it has none. weir-proxy keeps a filter's
// state (rate limit buckets) across updates that leave it unchanged, so
// the name must differ between routes.
func statName(vhost, route string, index int) string {
	if route == "" {
		route = strconv.Itoa(index)
	}
	return strings.Map(func(r rune) rune {
		if r < 0x21 || r > 0x7e {
			return '_'
		}
		return r
	}, vhost+"/"+route)
}

// checkUTF8 rejects a route with a string that is not UTF-8: protobuf
// cannot marshal it, and the validation rules do not check it.
func checkUTF8(r *ir.Route) error {
	var bad string
	check := func(ss ...string) {
		for _, s := range ss {
			if bad == "" && !utf8.ValidString(s) {
				bad = s
			}
		}
	}
	mutation := func(m ir.HeaderMutation) {
		for _, h := range slices.Concat(m.Set, m.Append) {
			check(h.Name, h.Value)
		}
		check(m.Remove...)
	}
	check(r.Match.Path.Value, r.Match.Method, r.HostRewrite)
	for _, h := range r.Match.Headers {
		check(h.Name, h.Value)
	}
	for _, q := range r.Match.QueryParams {
		check(q.Name, q.Value)
	}
	mutation(r.RequestHeaders)
	mutation(r.ResponseHeaders)
	for _, b := range r.Backends {
		mutation(b.RequestHeaders)
	}
	if r.PathRewrite != nil {
		check(r.PathRewrite.Value)
	}
	if r.DirectResponse != nil {
		check(r.DirectResponse.Body)
	}
	if r.Redirect != nil {
		check(r.Redirect.Scheme, r.Redirect.Host)
		if r.Redirect.Path != nil {
			check(r.Redirect.Path.Value)
		}
	}
	if bad != "" {
		return fmt.Errorf("%q is not valid UTF-8", bad)
	}
	return nil
}

func buildMatch(m ir.Match, s *shared) (*routev3.RouteMatch, error) {
	if m.Method == "" && len(m.Headers) == 0 && len(m.QueryParams) == 0 && m.ViaCertificate == "" && matchesEveryPath(m.Path) {
		return s.matchAll, nil
	}
	out := &routev3.RouteMatch{}
	if m.ViaCertificate != "" {
		out.FilterState = []*matcherv3.FilterStateMatcher{{
			Key:     filterChainKey,
			Matcher: &matcherv3.FilterStateMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m.ViaCertificate}}},
		}}
	}
	switch v := m.Path.Value; m.Path.Kind {
	case ir.PathPrefix:
		if v == "" {
			v = "/"
		}
		out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: v}
	case ir.PathSegmentPrefix:
		if matchesEveryPath(m.Path) {
			out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
			break
		}
		// Envoy refuses a trailing "/" here; "/a/" and "/a" match alike.
		v = strings.TrimSuffix(v, "/")
		if !strings.HasPrefix(v, "/") || strings.ContainsAny(v, "?#") {
			return nil, fmt.Errorf("path prefix %q must start with \"/\" and have no \"?\" or \"#\"", m.Path.Value)
		}
		out.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: v}
	case ir.PathExact:
		out.PathSpecifier = &routev3.RouteMatch_Path{Path: v}
	case ir.PathRegex:
		if err := checkRegex(v); err != nil {
			return nil, fmt.Errorf("path regex: %w", err)
		}
		out.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v}}
	default:
		return nil, fmt.Errorf("unknown path match kind %d", m.Path.Kind)
	}
	if m.Method != "" {
		out.Headers = append(out.Headers, exactHeader(":method", m.Method))
	}
	for _, h := range m.Headers {
		name := s.lower(h.Name)
		if !httpguts.ValidHeaderFieldName(name) {
			return nil, fmt.Errorf("header %q: not a valid header name, so no request can match it", h.Name)
		}
		if name == "host" {
			// Envoy keeps the Host header as :authority, for HTTP/1 too.
			name = ":authority"
		}
		switch h.Kind {
		case ir.HeaderExact:
			out.Headers = append(out.Headers, exactHeader(name, h.Value))
		case ir.HeaderRegex:
			if err := checkRegex(h.Value); err != nil {
				return nil, fmt.Errorf("header %q regex: %w", h.Name, err)
			}
			out.Headers = append(out.Headers, &routev3.HeaderMatcher{
				Name: name,
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: h.Value}},
				}},
			})
		case ir.HeaderPresent:
			out.Headers = append(out.Headers, &routev3.HeaderMatcher{
				Name:                 name,
				HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true},
			})
		default:
			return nil, fmt.Errorf("header %q: unknown match kind %d", h.Name, h.Kind)
		}
	}
	for _, q := range m.QueryParams {
		qm := &routev3.QueryParameterMatcher{Name: q.Name}
		switch q.Kind {
		case ir.HeaderExact:
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Exact{Exact: q.Value},
			}}
		case ir.HeaderRegex:
			if err := checkRegex(q.Value); err != nil {
				return nil, fmt.Errorf("query parameter %q regex: %w", q.Name, err)
			}
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: q.Value}},
			}}
		case ir.HeaderPresent:
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		default:
			return nil, fmt.Errorf("query parameter %q: unknown match kind %d", q.Name, q.Kind)
		}
		out.QueryParameters = append(out.QueryParameters, qm)
	}
	return out, nil
}

// matchesEveryPath reports whether a path match takes any path.
func matchesEveryPath(p ir.PathMatch) bool {
	return (p.Kind == ir.PathPrefix || p.Kind == ir.PathSegmentPrefix) && (p.Value == "" || p.Value == "/")
}

// pathRewrite says how Envoy rewrites a path for m, in a route action or a
// redirect: a full replacement is a regex rewrite of the whole path (the
// query is kept), and a prefix replacement is prefix_rewrite, except where
// that would leave a double slash ("/a" to "/" on "/a/b"), which a regex
// that eats the slashes after the prefix avoids.
func pathRewrite(m *ir.PathModifier, match ir.PathMatch) (prefix string, regex *matcherv3.RegexMatchAndSubstitute, err error) {
	// RE2's rewrite string treats "\" as the escape character.
	literal := strings.ReplaceAll(m.Value, `\`, `\\`)
	switch m.Kind {
	case ir.ReplaceFullPath:
		if !strings.HasPrefix(m.Value, "/") {
			return "", nil, fmt.Errorf("replacement path %q must start with \"/\"", m.Value)
		}
		return "", &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "^/.*$"}, Substitution: literal}, nil
	case ir.ReplacePrefixMatch:
		if match.Kind != ir.PathPrefix && match.Kind != ir.PathSegmentPrefix {
			return "", nil, errors.New("a prefix replacement needs a path prefix match")
		}
		if m.Value != "" && !strings.HasPrefix(m.Value, "/") {
			return "", nil, fmt.Errorf("replacement prefix %q must start with \"/\"", m.Value)
		}
		matched := strings.TrimSuffix(match.Value, "/")
		if matched == "" {
			// Every path matches: the replacement goes in front of the
			// path's first segment, "/users" to "/api/users".
			return "", &matcherv3.RegexMatchAndSubstitute{
				Pattern:      &matcherv3.RegexMatcher{Regex: "^/+"},
				Substitution: strings.TrimSuffix(literal, "/") + "/",
			}, nil
		}
		if match.Kind == ir.PathSegmentPrefix && (m.Value == "" || strings.HasSuffix(m.Value, "/")) {
			return "", &matcherv3.RegexMatchAndSubstitute{
				Pattern:      &matcherv3.RegexMatcher{Regex: "^" + regexp.QuoteMeta(matched) + "/*"},
				Substitution: cmp.Or(literal, "/"),
			}, nil
		}
		if match.Kind == ir.PathSegmentPrefix {
			return m.Value, nil, nil
		}
		return cmp.Or(m.Value, "/"), nil, nil
	case ir.ReplaceRegex:
		if err := checkRegex(m.Pattern); err != nil {
			return "", nil, fmt.Errorf("rewrite pattern %q: %w", m.Pattern, err)
		}
		return "", &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: m.Pattern}, Substitution: m.Value}, nil
	}
	return "", nil, fmt.Errorf("unknown path modifier %d", m.Kind)
}

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{
		Name: name,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value},
		}},
	}
}

// checkRegex rejects what Envoy would: RE2 syntax, which Go's regexp
// implements, and a program no larger than re2.max_program_size
// (source/common/common/regex.cc), which the release bootstrap raises to
// re2size.MaxProgramSize; Envoy's default of 100 refuses ordinary regexes.
func checkRegex(re string) error {
	if re == "" {
		return errors.New("empty regex")
	}
	size, err := re2size.Bound(re)
	if err != nil {
		return err
	}
	if size > re2size.MaxProgramSize {
		return fmt.Errorf("its RE2 program may reach %d instructions, over the %d that the gateway's Envoy accepts (re2.max_program_size.error_level); simplify it, e.g. fewer or smaller repetitions of Unicode classes", size, re2size.MaxProgramSize)
	}
	return nil
}

func buildRouteAction(r *ir.Route, available nameSet, ownListener bool, s *shared, w *warner, label string) (*routev3.RouteAction, bool, error) {
	var total uint64
	out := &routev3.RouteAction{Timeout: routeTimeout(r.Timeout, s, w, label)}
	// Where an unresolved backend's share goes: a cluster without
	// endpoints (503), or one that is not defined, answered with
	// cluster_not_found_response_code.
	unresolved := UnavailableCluster
	if code, ok := clusterNotFoundCodes[r.UnresolvedStatus]; ok && ownListener {
		unresolved = InvalidBackendCluster
		if slices.ContainsFunc(r.Backends, func(b ir.WeightedBackend) bool { return b.Unresolved && b.Weight > 0 }) {
			out.ClusterNotFoundResponseCode = code
		}
	}
	unavailable := false
	for _, b := range r.Backends {
		if !b.Unresolved && !available.has(b.BackendName) {
			return nil, false, fmt.Errorf("backend %q has no cluster", b.BackendName)
		}
		// Even at weight 0 the share names the cluster, so it must exist.
		unavailable = unavailable || b.Unresolved && unresolved == UnavailableCluster
		total += uint64(b.Weight)
	}
	clusterOf := func(b ir.WeightedBackend) string {
		if b.Unresolved {
			return unresolved
		}
		return b.BackendName
	}
	switch {
	case len(r.Backends) == 0:
		w.add("route %s: neither backends nor a redirect; it answers 503", label)
		fallthrough
	case total == 0:
		// Envoy rejects weighted clusters whose weights add up to 0.
		out.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: UnavailableCluster}
		unavailable = true
	case len(r.Backends) == 1 && r.Backends[0].RequestHeaders.Empty():
		out.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: clusterOf(r.Backends[0])}
	default:
		out.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: weightedClusters(r.Backends, clusterOf, total, s, w, label)}
	}
	if r.HostRewrite != "" {
		out.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: r.HostRewrite}
	}
	if r.IdleTimeout != nil {
		if *r.IdleTimeout < 0 {
			return nil, false, fmt.Errorf("negative idle timeout %v", *r.IdleTimeout)
		}
		out.IdleTimeout = durationpb.New(*r.IdleTimeout)
	}
	for _, m := range r.Mirrors {
		if !available.has(m.BackendName) {
			return nil, false, fmt.Errorf("mirror backend %q has no cluster", m.BackendName)
		}
		out.RequestMirrorPolicies = append(out.RequestMirrorPolicies, mirrorPolicy(m))
	}
	if r.Retry != nil {
		out.RetryPolicy = buildRetryPolicy(r.Retry, w, label)
	}
	for _, h := range r.HashPolicy {
		hp, err := hashPolicy(h)
		if err != nil {
			return nil, false, fmt.Errorf("hash policy: %w", err)
		}
		out.HashPolicy = append(out.HashPolicy, hp)
	}
	if r.PathRewrite != nil {
		prefix, regex, err := pathRewrite(r.PathRewrite, r.Match.Path)
		if err != nil {
			return nil, false, fmt.Errorf("path rewrite: %w", err)
		}
		out.PrefixRewrite, out.RegexRewrite = prefix, regex
	}
	return out, unavailable, nil
}

// mirrorPolicy is Envoy's shadowing of m. A fraction Envoy cannot state
// exactly (a denominator other than 100, 10^4 or 10^6) is rounded to
// millionths.
func mirrorPolicy(m ir.Mirror) *routev3.RouteAction_RequestMirrorPolicy {
	out := &routev3.RouteAction_RequestMirrorPolicy{Cluster: m.BackendName}
	if m.Denominator == 0 || m.Numerator >= m.Denominator {
		return out
	}
	fp := &typev3.FractionalPercent{Numerator: m.Numerator}
	switch m.Denominator {
	case 100:
		fp.Denominator = typev3.FractionalPercent_HUNDRED
	case 10_000:
		fp.Denominator = typev3.FractionalPercent_TEN_THOUSAND
	case 1_000_000:
		fp.Denominator = typev3.FractionalPercent_MILLION
	default:
		fp.Denominator = typev3.FractionalPercent_MILLION
		fp.Numerator = uint32((uint64(m.Numerator)*1_000_000 + uint64(m.Denominator)/2) / uint64(m.Denominator))
	}
	out.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: fp}
	return out
}

// weightedClusters lists every backend, weight-0 ones included. Envoy
// rejects a total above 2^32-1, so larger weights are scaled down; the
// largest weight stays positive.
// clusterNotFoundCodes are the UnresolvedStatus values Envoy can answer
// for a cluster that is not defined.
var clusterNotFoundCodes = map[int]routev3.RouteAction_ClusterNotFoundResponseCode{
	500: routev3.RouteAction_INTERNAL_SERVER_ERROR,
	404: routev3.RouteAction_NOT_FOUND,
}

// unresolvedCluster is the cluster of an unresolved backend's share on a
// shared listener (a TLS route's too): one without endpoints.
func unresolvedCluster(b ir.WeightedBackend) string {
	if b.Unresolved {
		return UnavailableCluster
	}
	return b.BackendName
}

func weightedClusters(backends []ir.WeightedBackend, clusterOf func(ir.WeightedBackend) string, total uint64, s *shared, w *warner, label string) *routev3.WeightedCluster {
	out := &routev3.WeightedCluster{Clusters: make([]*routev3.WeightedCluster_ClusterWeight, 0, len(backends))}
	for _, b := range backends {
		weight := b.Weight
		if total > math.MaxUint32 {
			weight = uint32(uint64(b.Weight) * math.MaxUint32 / total)
		}
		cw := &routev3.WeightedCluster_ClusterWeight{Name: clusterOf(b), Weight: wrapperspb.UInt32(weight)}
		cw.RequestHeadersToAdd, cw.RequestHeadersToRemove = buildHeaderMutation(b.RequestHeaders, s, w, label)
		out.Clusters = append(out.Clusters, cw)
	}
	return out
}

// routeTimeout is always set: no timeout is 0s, which switches off Envoy's
// 15 s default.
func routeTimeout(d *time.Duration, s *shared, w *warner, label string) *durationpb.Duration {
	if d == nil || *d == 0 {
		return s.zeroTimeout
	}
	if *d < 0 {
		w.add("route %s: negative timeout %v treated as none", label, *d)
		return s.zeroTimeout
	}
	return durationpb.New(*d)
}

// retryOn are the retry_on conditions both Envoy and weir-proxy accept;
// retriable-status-codes is added for ir.RetryPolicy.StatusCodes.
var retryOn = map[string]bool{"5xx": true, "gateway-error": true, "reset": true, "connect-failure": true}

func buildRetryPolicy(p *ir.RetryPolicy, w *warner, label string) *routev3.RetryPolicy {
	var on []string
	var out []uint32
	for _, c := range p.On {
		c = strings.TrimSpace(c)
		if !retryOn[c] {
			w.add("route %s: unsupported retry condition %q ignored", label, c)
			continue
		}
		on = append(on, c)
	}
	for _, c := range p.StatusCodes {
		if c < 100 || c > 599 {
			w.add("route %s: retriable status code %d ignored: not an HTTP status", label, c)
			continue
		}
		out = append(out, c)
	}
	if len(out) > 0 {
		on = append(on, "retriable-status-codes")
	}
	rp := &routev3.RetryPolicy{RetryOn: strings.Join(on, ","), NumRetries: wrapperspb.UInt32(p.Attempts), RetriableStatusCodes: out}
	if p.PerTryTimeout > 0 {
		rp.PerTryTimeout = durationpb.New(p.PerTryTimeout)
	}
	if p.Backoff > 0 {
		// Envoy's max_interval defaults to 10 times the base.
		rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(p.Backoff)}
	}
	if methods := slices.DeleteFunc(slices.Clone(p.NotForMethods), func(m string) bool {
		if !httpguts.ValidHeaderFieldName(m) {
			w.add("route %s: method %q ignored: not a method", label, m)
			return true
		}
		return false
	}); len(methods) > 0 {
		// Envoy retries only requests one of these matches.
		quoted := make([]string, len(methods))
		for i, m := range methods {
			quoted[i] = regexp.QuoteMeta(m)
		}
		rp.RetriableRequestHeaders = []*routev3.HeaderMatcher{{
			Name:        ":method",
			InvertMatch: true,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: strings.Join(quoted, "|")}},
			}},
		}}
	}
	if p.OtherEndpoints {
		rp.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{
			Name:       "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushostsv3.PreviousHostsPredicate{})},
		}}
		// Envoy's default, 1, would never choose again.
		rp.HostSelectionRetryMaxAttempts = hostSelectionAttempts
	}
	return rp
}

// hostSelectionAttempts is how many times a retry may choose its endpoint
// before taking one already tried.
const hostSelectionAttempts = 5

var redirectCodes = map[int]routev3.RedirectAction_RedirectResponseCode{
	301: routev3.RedirectAction_MOVED_PERMANENTLY,
	302: routev3.RedirectAction_FOUND,
	303: routev3.RedirectAction_SEE_OTHER,
	307: routev3.RedirectAction_TEMPORARY_REDIRECT,
	308: routev3.RedirectAction_PERMANENT_REDIRECT,
}

func buildRedirect(r *ir.Redirect, match ir.PathMatch, w *warner, label string) (*routev3.RedirectAction, error) {
	out := &routev3.RedirectAction{HostRedirect: r.Host}
	switch scheme := strings.ToLower(r.Scheme); scheme {
	case "":
	case "https":
		out.SchemeRewriteSpecifier = &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}
	default:
		out.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: scheme}
	}
	if r.Port > math.MaxUint16 {
		w.add("route %s: redirect port %d out of range; the request's port is kept", label, r.Port)
	} else {
		out.PortRedirect = r.Port
	}
	if r.Path != nil {
		if r.Path.Kind == ir.ReplaceFullPath {
			if !strings.HasPrefix(r.Path.Value, "/") {
				return nil, fmt.Errorf("redirect path %q must start with \"/\"", r.Path.Value)
			}
			out.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: r.Path.Value}
		} else {
			prefix, regex, err := pathRewrite(r.Path, match)
			if err != nil {
				return nil, fmt.Errorf("redirect path: %w", err)
			}
			if regex != nil {
				out.PathRewriteSpecifier = &routev3.RedirectAction_RegexRewrite{RegexRewrite: regex}
			} else {
				out.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: prefix}
			}
		}
	}
	out.StripQuery = r.StripQuery
	if code, ok := redirectCodes[r.StatusCode]; ok {
		out.ResponseCode = code
	} else if r.StatusCode != 0 {
		w.add("route %s: redirect status %d is not a redirect; 301 used", label, r.StatusCode)
	}
	return out, nil
}

// buildHeaderMutation translates m. Envoy rejects changes to pseudo-headers
// and Host, and reads '%' in values as a formatter command, so literal
// values get it doubled.
func buildHeaderMutation(m ir.HeaderMutation, s *shared, w *warner, label string) (add []*corev3.HeaderValueOption, remove []string) {
	if m.Empty() {
		return nil, nil
	}
	addAll := func(hs []ir.Header, action corev3.HeaderValueOption_HeaderAppendAction) {
		for _, h := range hs {
			name := s.lower(h.Name)
			if !modifiableHeader(name) {
				w.add("route %s: header %q cannot be set", label, h.Name)
				continue
			}
			if !httpguts.ValidHeaderFieldName(name) {
				w.add("route %s: header %q cannot be set: not a valid header name (RFC 9110 token)", label, h.Name)
				continue
			}
			add = append(add, &corev3.HeaderValueOption{
				Header:       &corev3.HeaderValue{Key: name, Value: strings.ReplaceAll(h.Value, "%", "%%")},
				AppendAction: action,
			})
		}
	}
	addAll(m.Set, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
	addAll(m.Append, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)
	for _, h := range m.Remove {
		name := s.lower(h)
		if !modifiableHeader(name) || !httpguts.ValidHeaderFieldName(name) {
			w.add("route %s: header %q cannot be removed", label, h)
			continue
		}
		remove = append(remove, name)
	}
	return add, remove
}

func modifiableHeader(lowerName string) bool {
	return lowerName != "" && lowerName[0] != ':' && lowerName != "host"
}

// hashPolicy is Envoy's hash policy for h.
func hashPolicy(h ir.HashPolicy) (*routev3.RouteAction_HashPolicy, error) {
	pseudo := h.Kind == ir.HashHeader && (h.Name == ":path" || h.Name == ":authority" || h.Name == ":method")
	if h.Kind != ir.HashSourceIP && !pseudo && (h.Name == "" || !httpguts.ValidHeaderFieldName(h.Name)) {
		return nil, fmt.Errorf("%q is not a header, cookie or parameter name", h.Name)
	}
	if h.Kind != ir.HashCookie && (h.CookieTTL != nil || h.CookiePath != "" || len(h.CookieAttributes) > 0) {
		return nil, fmt.Errorf("cookie settings on a hash of something else")
	}
	switch h.Kind {
	case ir.HashHeader:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: h.Name}}}, nil
	case ir.HashQueryParameter:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: h.Name}}}, nil
	case ir.HashSourceIP:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}, nil
	case ir.HashCookie:
		c := &routev3.RouteAction_HashPolicy_Cookie{Name: h.Name, Path: h.CookiePath}
		if h.CookieTTL != nil {
			if *h.CookieTTL < 0 {
				return nil, fmt.Errorf("cookie TTL %v is negative", *h.CookieTTL)
			}
			c.Ttl = durationpb.New(*h.CookieTTL)
		}
		for _, a := range h.CookieAttributes {
			if !httpguts.ValidHeaderFieldName(a.Name) || strings.ContainsAny(a.Value, ";\r\n\x00") {
				return nil, fmt.Errorf("cookie attribute %q=%q", a.Name, a.Value)
			}
			c.Attributes = append(c.Attributes, &routev3.RouteAction_HashPolicy_CookieAttribute{Name: a.Name, Value: a.Value})
		}
		if !ir.ValidCookiePath(h.CookiePath) {
			return nil, fmt.Errorf("cookie path %q holds a control character or \";\"", h.CookiePath)
		}
		if strings.ContainsAny(h.Name, "=;") {
			return nil, fmt.Errorf("cookie name %q", h.Name)
		}
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: c}}, nil
	}
	return nil, fmt.Errorf("hash kind %d is not known", h.Kind)
}
