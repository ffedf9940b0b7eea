package xds

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	basicauthv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/basic_auth/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// redactedKey replaces private keys in dumps.
const redactedKey = "[redacted]"

// redactSecret returns a copy of a Secret with its private key replaced.
func redactSecret(r types.Resource) types.Resource {
	s, ok := r.(*tlsv3.Secret)
	if !ok || s.GetTlsCertificate().GetPrivateKey() == nil {
		return r
	}
	c := proto.Clone(s).(*tlsv3.Secret)
	c.GetTlsCertificate().PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: redactedKey}}
	return c
}

// basicAuthPerRouteURL is the type of a route's basic_auth users, whose
// hashes (unsalted SHA-1, quick to crack) a dump leaves out.
var basicAuthPerRouteURL = "type.googleapis.com/" + string((&basicauthv3.BasicAuthPerRoute{}).ProtoReflect().Descriptor().FullName())

// redactRoutes returns a copy of a RouteConfiguration with its basic_auth
// users replaced, or r itself when it has none.
func redactRoutes(r types.Resource) types.Resource {
	rc, ok := r.(*routev3.RouteConfiguration)
	if !ok {
		return r
	}
	hasUsers := func(m map[string]*anypb.Any) bool {
		for _, a := range m {
			if a.GetTypeUrl() == basicAuthPerRouteURL {
				return true
			}
		}
		return false
	}
	found := false
	for _, vh := range rc.GetVirtualHosts() {
		found = found || hasUsers(vh.GetTypedPerFilterConfig())
		for _, route := range vh.GetRoutes() {
			found = found || hasUsers(route.GetTypedPerFilterConfig())
			for _, wc := range route.GetRoute().GetWeightedClusters().GetClusters() {
				found = found || hasUsers(wc.GetTypedPerFilterConfig())
			}
		}
	}
	if !found {
		return r
	}
	redacted, err := anypb.New(&basicauthv3.BasicAuthPerRoute{Users: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: redactedKey}}})
	if err != nil {
		return r
	}
	redact := func(m map[string]*anypb.Any) {
		for k, a := range m {
			if a.GetTypeUrl() == basicAuthPerRouteURL {
				m[k] = redacted
			}
		}
	}
	c := proto.Clone(rc).(*routev3.RouteConfiguration)
	for _, vh := range c.GetVirtualHosts() {
		redact(vh.GetTypedPerFilterConfig())
		for _, route := range vh.GetRoutes() {
			redact(route.GetTypedPerFilterConfig())
			for _, wc := range route.GetRoute().GetWeightedClusters().GetClusters() {
				redact(wc.GetTypedPerFilterConfig())
			}
		}
	}
	return c
}
