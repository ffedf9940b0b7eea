package dataplane

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// slowBucket holds max tokens and gains one a minute, so that no token
// comes back while a test runs.
func slowBucket(max uint32) *typev3.TokenBucket {
	return &typev3.TokenBucket{MaxTokens: max, TokensPerFill: wrapperspb.UInt32(1), FillInterval: durationpb.New(time.Minute)}
}

func everyRequest() *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{RuntimeKey: "k", DefaultValue: &typev3.FractionalPercent{Numerator: 100}}
}

func entry(key, value string) *ratelimitv3.RateLimitDescriptor_Entry {
	return &ratelimitv3.RateLimitDescriptor_Entry{Key: key, Value: value}
}

func remoteAddressAction() *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RemoteAddress_{RemoteAddress: &routev3.RateLimit_Action_RemoteAddress{}}}
}

func maskedAction(v4 uint32) *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_MaskedRemoteAddress_{MaskedRemoteAddress: &routev3.RateLimit_Action_MaskedRemoteAddress{V4PrefixMaskLen: wrapperspb.UInt32(v4)}}}
}

// TestLocalRateLimit checks Envoy's local_ratelimit semantics on real
// sockets: a route's default bucket, per-client buckets from a wildcard
// remote_address descriptor (clients told apart by X-Forwarded-For, as
// without use_remote_address), an exact descriptor that wins over the
// wildcard, an LRU of max_dynamic_descriptors clients, the status, an
// unenforced limit, and buckets that survive an update which leaves the
// config unchanged. A limited request never reaches the backend.
func TestLocalRateLimit(t *testing.T) {
	b, _ := bodyBackend(t)
	p := newTestProxy(t, Options{})
	route := func(path string, lrl *localratelimitv3.LocalRateLimit) *routev3.Route {
		r := routeTo(prefixMatch(path), b.name)
		if lrl != nil {
			r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.local_ratelimit": mustAny(lrl)}
		}
		return r
	}
	perClient := func(prefix string, enforced bool) *localratelimitv3.LocalRateLimit {
		l := &localratelimitv3.LocalRateLimit{
			StatPrefix: prefix, FilterEnabled: everyRequest(),
			Status:                          &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
			TokenBucket:                     slowBucket(1000),
			AlwaysConsumeDefaultTokenBucket: wrapperspb.Bool(false),
			MaxDynamicDescriptors:           wrapperspb.UInt32(2),
			RateLimits:                      []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{remoteAddressAction()}}},
			Descriptors: []*ratelimitv3.LocalRateLimitDescriptor{
				{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{entry("remote_address", "")}, TokenBucket: slowBucket(2)},
				{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{entry("remote_address", "192.0.2.99")}, TokenBucket: slowBucket(4)},
			},
		}
		if enforced {
			l.FilterEnforced = everyRequest()
		}
		return l
	}
	vh := virtualHost("vh", []string{"*"},
		route("/default", &localratelimitv3.LocalRateLimit{StatPrefix: "default", FilterEnabled: everyRequest(), FilterEnforced: everyRequest(), TokenBucket: slowBucket(3)}),
		route("/per-client", perClient("per-client", true)),
		route("/shadow", perClient("shadow", false)),
		route("/", nil),
	)
	unusedListenerConfig := &hcmv3.HttpFilter{Name: "envoy.filters.http.local_ratelimit", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&localratelimitv3.LocalRateLimit{StatPrefix: "l"})}}
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l", withFilters(unusedListenerConfig), func(h *hcmv3.HttpConnectionManager) {
			h.UseRemoteAddress = wrapperspb.Bool(false)
		})},
		Routes: []*routev3.RouteConfiguration{routeConfig("l", vh)},
	}
	addBackends(res, false, b)
	mustApply(t, p, res)

	get := func(path, client string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, proxyURL(t, p, "l")+path, nil)
		req.Header.Set("X-Forwarded-For", client)
		before := b.hits.Load()
		resp, body := do(t, req)
		if forwarded := b.hits.Load() != before; forwarded != (resp.StatusCode == 200) {
			t.Fatalf("%s from %s: %d, forwarded %v", path, client, resp.StatusCode, forwarded)
		}
		if resp.StatusCode != 200 && body != "local_rate_limited" {
			t.Fatalf("%s from %s: %d %q, want the body local_rate_limited", path, client, resp.StatusCode, body)
		}
		return resp.StatusCode
	}
	expect := func(path, client string, codes ...int) {
		t.Helper()
		for i, want := range codes {
			if got := get(path, client); got != want {
				t.Fatalf("%s from %s, request %d: %d, want %d", path, client, i+1, got, want)
			}
		}
	}

	// The default bucket is every client's: 3 tokens, then 429.
	expect("/default", "192.0.2.1", 200, 200)
	expect("/default", "192.0.2.2", 200, 429)
	// Each client has its own 2; the exact descriptor gives one 4.
	expect("/per-client", "192.0.2.1", 200, 200, 503)
	expect("/per-client", "192.0.2.2", 200, 200, 503)
	expect("/per-client", "192.0.2.99", 200, 200, 200, 200, 503)
	// Counted but not enforced.
	expect("/shadow", "192.0.2.1", 200, 200, 200)
	expect("/", "192.0.2.1", 200, 200, 200)

	// An update that leaves the configs as they were keeps their buckets.
	// (A new proto, as the xDS client hands over: the proxy reuses a host
	// compiled from the very same one.)
	changed := proto.Clone(vh).(*routev3.VirtualHost)
	changed.Routes = append(changed.Routes[:3:3], route("/new", nil), changed.Routes[3])
	res.Routes = []*routev3.RouteConfiguration{routeConfig("l", changed)}
	mustApply(t, p, res)
	expect("/new", "192.0.2.3", 200)
	expect("/default", "192.0.2.3", 429)
	expect("/per-client", "192.0.2.2", 503)

	// Only two clients are remembered: 192.0.2.1 was the least recently
	// used of .1, .2, and comes back with a full bucket after .3 and .4.
	expect("/per-client", "192.0.2.3", 200)
	expect("/per-client", "192.0.2.4", 200)
	expect("/per-client", "192.0.2.1", 200, 200, 503)
}

// TestLocalRateLimitMaskedRemoteAddress checks masked_remote_address: a
// descriptor for a whole range counts its clients together, and a client
// outside every configured descriptor is not limited.
func TestLocalRateLimitMaskedRemoteAddress(t *testing.T) {
	b, _ := bodyBackend(t)
	p := newTestProxy(t, Options{})
	lrl := &localratelimitv3.LocalRateLimit{
		StatPrefix: "masked", FilterEnabled: everyRequest(), FilterEnforced: everyRequest(),
		TokenBucket:                     slowBucket(1000),
		AlwaysConsumeDefaultTokenBucket: wrapperspb.Bool(false),
		RateLimits:                      []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{maskedAction(24)}}},
		Descriptors: []*ratelimitv3.LocalRateLimitDescriptor{
			{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{entry("masked_remote_address", "198.51.100.0/24")}, TokenBucket: slowBucket(2)},
		},
	}
	r := routeTo(prefixMatch("/"), b.name)
	r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.local_ratelimit": mustAny(lrl)}
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l", withFilters(&hcmv3.HttpFilter{Name: "envoy.filters.http.local_ratelimit", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&localratelimitv3.LocalRateLimit{StatPrefix: "l"})}}), func(h *hcmv3.HttpConnectionManager) {
			h.UseRemoteAddress = wrapperspb.Bool(false)
		})},
		Routes: []*routev3.RouteConfiguration{routeConfig("l", virtualHost("vh", []string{"*"}, r))},
	}
	addBackends(res, false, b)
	mustApply(t, p, res)
	codes := ""
	for _, client := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3", "203.0.113.1", "203.0.113.1", "203.0.113.1"} {
		req, _ := http.NewRequest(http.MethodGet, proxyURL(t, p, "l")+"/", nil)
		req.Header.Set("X-Forwarded-For", client)
		resp, _ := do(t, req)
		codes += fmt.Sprint(resp.StatusCode, " ")
	}
	if want := "200 200 429 200 200 200 "; codes != want {
		t.Fatalf("got %s, want %s", codes, want)
	}
}

// TestLocalRateLimitRefusesWhatItCannotHonour checks that configs
// weir-proxy cannot enforce as Envoy would are NACKed, naming the field.
func TestLocalRateLimitRefusesWhatItCannotHonour(t *testing.T) {
	p := newTestProxy(t, Options{})
	for name, lrl := range map[string]*localratelimitv3.LocalRateLimit{
		"token_bucket: required in a per-route config": {StatPrefix: "x", FilterEnabled: everyRequest()},
		"fill_interval": {StatPrefix: "x", TokenBucket: &typev3.TokenBucket{MaxTokens: 1, FillInterval: durationpb.New(10 * time.Millisecond)}},
		"descriptors[1]: a duplicate descriptor": {StatPrefix: "x", TokenBucket: slowBucket(1), Descriptors: []*ratelimitv3.LocalRateLimitDescriptor{
			{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{entry("remote_address", "")}, TokenBucket: slowBucket(1)},
			{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{entry("remote_address", "")}, TokenBucket: slowBucket(2)},
		}},
		"local_rate_limit_per_downstream_connection": {StatPrefix: "x", TokenBucket: slowBucket(1), LocalRateLimitPerDownstreamConnection: true},
		"rate_limits[0].actions[0]":                  {StatPrefix: "x", TokenBucket: slowBucket(1), RateLimits: []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{{ActionSpecifier: &routev3.RateLimit_Action_DestinationCluster_{DestinationCluster: &routev3.RateLimit_Action_DestinationCluster{}}}}}}},
	} {
		r := routeTo(prefixMatch("/"), "c")
		r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.local_ratelimit": mustAny(lrl)}
		res := &Resources{
			Listeners: []*listenerv3.Listener{plainListener("l")},
			Routes:    []*routev3.RouteConfiguration{routeConfig("l", virtualHost("vh", []string{"*"}, r))},
		}
		err := p.Apply(res)
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: Apply = %v, want a NACK naming it", name, err)
		}
	}
}
