package translate

import (
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	customresponsev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/custom_response/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weir-dev/weir/pkg/ir"
)

// corsFilter is Envoy's CORS filter. Its typed_config has no settings; a
// route's CorsPolicy in typed_per_filter_config is what makes it act.
const corsFilter = "envoy.filters.http.cors"

// httpFilterOf is the Envoy filter that runs each ir.FilterKind: its name
// (the typed_per_filter_config key) and its listener-level typed_config.
var httpFilterOf = map[ir.FilterKind]struct {
	name   string
	config proto.Message
}{
	// Without rules, RBAC lets everything through; a route's rules are
	// its own.
	ir.FilterSourceRanges: {rbacFilter, &rbacv3.RBAC{}},
	ir.FilterCORS:         {corsFilter, &corsv3.Cors{}},
	// Without a matcher the listener's config replaces nothing.
	ir.FilterCustomErrors: {customResponseFilter, &customresponsev3.CustomResponse{}},
	// Without filter_enabled the listener's config limits nothing; a
	// route's config is whole, with its own buckets.
	ir.FilterRateLimit: {localRateLimitFilter, &localratelimitv3.LocalRateLimit{StatPrefix: "local_rate_limit"}},
	// Without rate_limits the listener's configs ask the service nothing.
	ir.FilterGlobalRateLimit:           {globalRateLimitFilter, globalRateLimitConfig(false)},
	ir.FilterGlobalRateLimitFailClosed: {globalRateLimitFailClosedFilter, globalRateLimitConfig(true)},
	ir.FilterBasicAuth:                 {basicAuthFilter, basicAuthListenerConfig()},
	ir.FilterExtAuth:                   {extAuthzFilter, extAuthzListenerConfig()},
	// Without mutations the listener's config changes nothing.
	ir.FilterRemoveRequestHeaders: {headerMutationFilter, &headermutationv3.HeaderMutation{}},
	// The listener's limit is never used: a route turns the filter on
	// with its own.
	ir.FilterBodyLimit: {bufferFilter, &bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(1 << 20)}},
}

// bufferFilter is Envoy's buffer filter, which ir.BodyLimit runs.
const bufferFilter = "envoy.filters.http.buffer"

// rbacFilter is Envoy's RBAC filter, which ir.SourceRanges runs.
const rbacFilter = "envoy.filters.http.rbac"

// filterChainKey is the connection filter state object that names the
// certificate whose filter chain took the connection: set by the chain's
// set_filter_state filter, matched by the routes of hosts that check
// client certificates (ir.Match.ViaCertificate).
const filterChainKey = "weir.filter_chain"

// sourceRanges is an ALLOW policy admitting the clients that r lets in:
// inside Allow (if set) and not inside Deny. remote_ip is the client
// address after X-Forwarded-For, which no hop is trusted for: the peer.
func sourceRanges(r *ir.SourceRanges) (*rbacv3.RBACPerRoute, error) {
	if len(r.Allow) == 0 && len(r.Deny) == 0 {
		return nil, fmt.Errorf("a source range policy without ranges")
	}
	ranges := func(ps []netip.Prefix) *rbacconfigv3.Principal {
		var ids []*rbacconfigv3.Principal
		for _, p := range ps {
			p = p.Masked()
			ids = append(ids, &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_RemoteIp{RemoteIp: &corev3.CidrRange{
				AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits())), //nolint:gosec // 0..128
			}}})
		}
		if len(ids) == 1 {
			return ids[0]
		}
		return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_OrIds{OrIds: &rbacconfigv3.Principal_Set{Ids: ids}}}
	}
	var who []*rbacconfigv3.Principal
	if len(r.Allow) > 0 {
		who = append(who, ranges(r.Allow))
	}
	if len(r.Deny) > 0 {
		who = append(who, &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_NotId{NotId: ranges(r.Deny)}})
	}
	principal := who[0]
	if len(who) > 1 {
		principal = &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_AndIds{AndIds: &rbacconfigv3.Principal_Set{Ids: who}}}
	}
	return &rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{
		Action: rbacconfigv3.RBAC_ALLOW,
		Policies: map[string]*rbacconfigv3.Policy{"source-ranges": {
			Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Any{Any: true}}},
			Principals:  []*rbacconfigv3.Principal{principal},
		}},
	}}}, nil
}

// perFilterConfig is a route's typed_per_filter_config for its filters.
// id names the route in filters' stats.
func perFilterConfig(fs []ir.HTTPFilter, id string, available nameSet, s *shared) (map[string]*anypb.Any, error) {
	if len(fs) == 0 {
		return nil, nil
	}
	out := make(map[string]*anypb.Any, len(fs))
	for _, f := range fs {
		var (
			msg proto.Message
			err error
		)
		switch p := f.(type) {
		case *ir.CORSPolicy:
			msg, err = corsPolicy(p)
		case *ir.CustomErrors:
			msg, err = customErrors(p)
		case *ir.SourceRanges:
			msg, err = sourceRanges(p)
		case *ir.BasicAuth:
			msg, err = basicAuthPerRoute(p)
		case *ir.ExtAuth:
			msg, err = extAuthzPerRoute(p, available)
		case *ir.RemoveRequestHeaders:
			msg, err = removeRequestHeaders(p)
		case *ir.RateLimit:
			var lrl *localratelimitv3.LocalRateLimit
			if lrl, err = localRateLimit(p, id); err == nil && lrl == nil {
				continue // every client is exempt
			}
			msg = lrl
		case *ir.GlobalRateLimit:
			msg, err = globalRateLimitPerRoute(p, s)
		case *ir.BodyLimit:
			if p.MaxBytes == 0 {
				err = fmt.Errorf("a body limit of 0 bytes")
				break
			}
			msg = &bufferv3.BufferPerRoute{Override: &bufferv3.BufferPerRoute_Buffer{Buffer: &bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(p.MaxBytes)}}}
		default:
			err = fmt.Errorf("filter %T is not supported", f)
		}
		if err != nil {
			return nil, err
		}
		name := httpFilterOf[f.FilterKind()].name
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("two %s policies on one route", name)
		}
		// Not mustAny: a value from an object (a string that is not
		// UTF-8) fails this route, not the whole translation.
		a := &anypb.Any{}
		if err := anypb.MarshalFrom(a, msg, proto.MarshalOptions{Deterministic: true}); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out[name] = a
	}
	return out, nil
}

// corsPolicy is Envoy's per-route CorsPolicy for p. Envoy echoes an
// allowed Origin (never "*"), and a lone "*" in allow_methods or
// allow_headers echoes what the preflight asked for, which is what the
// Fetch standard requires of credentialed requests.
func corsPolicy(p *ir.CORSPolicy) (*corsv3.CorsPolicy, error) {
	out := &corsv3.CorsPolicy{
		AllowMethods:  strings.Join(p.AllowMethods, ", "),
		AllowHeaders:  strings.Join(p.AllowHeaders, ", "),
		ExposeHeaders: strings.Join(p.ExposeHeaders, ", "),
		// The route owns its CORS: a preflight from an origin it does
		// not allow is answered (without Allow-Origin) by the gateway,
		// not passed to a backend that may answer it more generously.
		ForwardNotMatchingPreflights: wrapperspb.Bool(false),
	}
	for _, o := range p.AllowOrigins {
		m, err := originMatcher(o)
		if err != nil {
			return nil, err
		}
		out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, m)
	}
	if p.MaxAge != nil {
		out.MaxAge = strconv.Itoa(int(*p.MaxAge))
	}
	if p.AllowCredentials {
		out.AllowCredentials = wrapperspb.Bool(true)
	}
	for _, v := range []string{out.AllowMethods, out.AllowHeaders, out.ExposeHeaders} {
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, fmt.Errorf("CORS header value %q has a control character", v)
		}
	}
	return out, out.ValidateAll()
}

// originMatcher matches one allowed origin. Envoy treats an exact "*" as
// matching every origin; a "*" inside the host matches one or more DNS
// labels, so "https://*.example.com" takes "https://a.b.example.com" but
// not "https://example.com".
func originMatcher(origin string) (*matcherv3.StringMatcher, error) {
	if origin == "" || strings.ContainsAny(origin, "\r\n\x00") {
		return nil, fmt.Errorf("CORS origin %q is not an origin", origin)
	}
	if origin == "*" || !strings.Contains(origin, "*") {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: origin}}, nil
	}
	re := strings.ReplaceAll(regexp.QuoteMeta(origin), `\*`, `[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*`)
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}, nil
}

// sharedHTTPFilters is the filter chain of the shared listeners: every
// filter, disabled, so a route turns one on with its
// typed_per_filter_config. The chain never changes, so a route that
// starts using a filter does not replace the listener and drain its
// connections.
func sharedHTTPFilters() []*hcmv3.HttpFilter {
	var out []*hcmv3.HttpFilter
	for _, kind := range slices.Sorted(maps.Keys(httpFilterOf)) {
		f := httpFilterOf[kind]
		out = append(out, &hcmv3.HttpFilter{Name: f.name, Disabled: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(f.config)}})
	}
	return append(out, routerHTTPFilter)
}

// httpFiltersFor is the filter chain of a connection manager serving
// vhosts: the filters some route of theirs configures, in FilterKind
// order, then the router. Each is disabled, as on the shared listeners,
// so it acts only on the routes that configure it: the listener-level
// configs are placeholders (a body limit of 1 MiB, an authorization
// service that does not exist) that no route may get.
func httpFiltersFor(vhosts []*routev3.VirtualHost) []*hcmv3.HttpFilter {
	used := map[string]bool{}
	for _, vh := range vhosts {
		for _, r := range vh.GetRoutes() {
			for name := range r.GetTypedPerFilterConfig() {
				used[name] = true
			}
		}
	}
	var out []*hcmv3.HttpFilter
	for _, kind := range slices.Sorted(maps.Keys(httpFilterOf)) {
		f := httpFilterOf[kind]
		if used[f.name] {
			out = append(out, &hcmv3.HttpFilter{Name: f.name, Disabled: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(f.config)}})
		}
	}
	return append(out, routerHTTPFilter)
}
