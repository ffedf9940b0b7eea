package translate

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weir-dev/weir/pkg/ir"
)

// extAuthzFilter is Envoy's external authorization filter, which
// ir.ExtAuth runs.
const extAuthzFilter = "envoy.filters.http.ext_authz"

// extAuthzUnset is the cluster of the listener-level ext_authz config.
// Every route that turns the filter on names its own service
// (check_settings.service_override); this one is never called.
const extAuthzUnset = "weir-ext-authz-unset"

// extAuthzListenerConfig is the listener-level ext_authz. Envoy builds the
// allow-list of request headers sent to the service from it alone, so it
// lists every header, as nginx's auth_request subrequest carries them all.
// An unreachable service answers 500, as nginx's does.
func extAuthzListenerConfig() *extauthzv3.ExtAuthz {
	return &extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_HttpService{HttpService: &extauthzv3.HttpService{
			ServerUri: &corev3.HttpUri{Uri: "http://" + extAuthzUnset, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: extAuthzUnset}, Timeout: durationpb.New(time.Second)},
		}},
		TransportApiVersion: corev3.ApiVersion_V3,
		AllowedHeaders: &matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{
			{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}},
		}},
		StatusOnError: &typev3.HttpStatus{Code: typev3.StatusCode_InternalServerError},
	}
}

// extAuthzPerRoute is a route's ext_authz: its own service.
func extAuthzPerRoute(a *ir.ExtAuth, available nameSet) (*extauthzv3.ExtAuthzPerRoute, error) {
	if a.BackendName == "" || !available.has(a.BackendName) {
		return nil, fmt.Errorf("authorization service %q has no cluster", a.BackendName)
	}
	if !strings.HasPrefix(a.Path, "/") || strings.ContainsAny(a.Path, " \r\n\x00#") {
		return nil, fmt.Errorf("authorization path %q is not a path", a.Path)
	}
	if a.Timeout <= 0 {
		return nil, fmt.Errorf("authorization timeout %v", a.Timeout)
	}
	svc := &extauthzv3.HttpService{
		ServerUri:    &corev3.HttpUri{Uri: "http://" + a.BackendName, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: a.BackendName}, Timeout: durationpb.New(a.Timeout)},
		PathOverride: a.Path,
	}
	if len(a.CheckHeaders) > 0 {
		svc.AuthorizationRequest = &extauthzv3.AuthorizationRequest{}
		for _, h := range a.CheckHeaders {
			if !httpguts.ValidHeaderFieldName(h.Name) || strings.EqualFold(h.Name, "host") || !httpguts.ValidHeaderFieldValue(h.Value) {
				return nil, fmt.Errorf("check header %q: %q", h.Name, h.Value)
			}
			svc.AuthorizationRequest.HeadersToAdd = append(svc.AuthorizationRequest.HeadersToAdd, &corev3.HeaderValue{Key: strings.ToLower(h.Name), Value: h.Value})
		}
	}
	if len(a.UpstreamHeaders) > 0 {
		m := &matcherv3.ListStringMatcher{}
		for _, name := range a.UpstreamHeaders {
			if !httpguts.ValidHeaderFieldName(name) {
				return nil, fmt.Errorf("upstream header %q is not a header name", name)
			}
			m.Patterns = append(m.Patterns, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: http.CanonicalHeaderKey(name)}, IgnoreCase: true})
		}
		svc.AuthorizationResponse = &extauthzv3.AuthorizationResponse{AllowedUpstreamHeaders: m}
	}
	out := &extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{CheckSettings: &extauthzv3.CheckSettings{
		ServiceOverride: &extauthzv3.CheckSettings_HttpService{HttpService: svc},
	}}}
	return out, out.ValidateAll()
}

// headerMutationFilter is Envoy's header mutation filter, which
// ir.RemoveRequestHeaders runs.
const headerMutationFilter = "envoy.filters.http.header_mutation"

func removeRequestHeaders(r *ir.RemoveRequestHeaders) (*headermutationv3.HeaderMutationPerRoute, error) {
	if len(r.Names) == 0 {
		return nil, fmt.Errorf("no header to remove")
	}
	ms := &headermutationv3.Mutations{}
	for _, name := range r.Names {
		if !httpguts.ValidHeaderFieldName(name) || strings.EqualFold(name, "host") {
			return nil, fmt.Errorf("%q cannot be removed", name)
		}
		ms.RequestMutations = append(ms.RequestMutations, &mutationv3.HeaderMutation{Action: &mutationv3.HeaderMutation_Remove{Remove: strings.ToLower(name)}})
	}
	out := &headermutationv3.HeaderMutationPerRoute{Mutations: ms}
	return out, out.ValidateAll()
}
