// Package ratelimit is weir-proxy's envoy.filters.http.ratelimit: each
// request asks a rate limit service (envoy.service.ratelimit.v3, over
// gRPC to an envoy_grpc cluster) whether it is over a limit that every
// gateway shares, with Envoy's semantics.
//
// A request's descriptors come from the route's RateLimitPerRoute
// rate_limits, else the filter's own rate_limits (generic_key,
// remote_address, masked_remote_address and request_headers actions; a
// descriptor any of whose actions has no value is dropped). Without a
// descriptor, or on a route that does not forward (a redirect, a direct
// response), the service is not asked. Over the limit, where
// filter_enforced lets it, the request is answered rate_limited_status (429
// unless it is at least 400) with the service's raw_body and
// response_headers_to_add, the filter's response_headers_to_add and
// x-envoy-ratelimited. When the service fails or does not answer within
// timeout (20 ms by default), the request passes, or with
// failure_mode_deny is answered status_on_error (500 by default). An
// allowed request gets the service's request_headers_to_add upstream and
// its response_headers_to_add downstream.
//
// The gRPC connection is grpc-go's, dialled to an endpoint of the cluster
// (with its upstream TLS) and kept while some config names the cluster; it
// reconnects within a second of a failure.
package ratelimit

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"
)

func init() { httpfilter.Register(factory{}) }

type factory struct{}

func (factory) ConfigType() proto.Message      { return &ratelimitv3.RateLimit{} }
func (factory) RouteConfigType() proto.Message { return &ratelimitv3.RateLimitPerRoute{} }

// defaultTimeout is Envoy's for the service's answer.
const defaultTimeout = 20 * time.Millisecond

func (factory) NewConfig(m proto.Message, scope *httpfilter.Scope) (httpfilter.Config, error) {
	rl := m.(*ratelimitv3.RateLimit)
	if bad := httpfilter.UnsupportedField(rl, "domain", "stage", "timeout", "failure_mode_deny", "rate_limit_service",
		"rate_limited_status", "response_headers_to_add", "status_on_error", "stat_prefix", "filter_enabled",
		"filter_enforced", "disable_x_envoy_ratelimited_header", "rate_limits"); bad != "" {
		return nil, fmt.Errorf("%s: not supported by weir-proxy", bad)
	}
	if rl.GetStage() != 0 {
		return nil, fmt.Errorf("stage: only 0 is supported by weir-proxy")
	}
	c := &config{
		domain:        rl.GetDomain(),
		timeout:       defaultTimeout,
		failureDeny:   rl.GetFailureModeDeny(),
		limitedStatus: http.StatusTooManyRequests,
		errorStatus:   http.StatusInternalServerError,
		xEnvoyHeader:  !rl.GetDisableXEnvoyRatelimitedHeader(),
	}
	if c.domain == "" {
		return nil, fmt.Errorf("domain: required")
	}
	if t := rl.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil {
			return nil, fmt.Errorf("timeout: %w", err)
		}
		c.timeout = t.AsDuration() // 0: none
	}
	if code := int(rl.GetRateLimitedStatus().GetCode()); code >= 400 {
		c.limitedStatus = code
	}
	if code := int(rl.GetStatusOnError().GetCode()); code != 0 {
		c.errorStatus = code
	}
	var err error
	// Unset, Envoy's runtime defaults are 100%.
	if c.enabled, err = httpfilter.CompileFraction(rl.GetFilterEnabled(), httpfilter.All, "filter_enabled"); err != nil {
		return nil, err
	}
	if c.enforced, err = httpfilter.CompileFraction(rl.GetFilterEnforced(), httpfilter.All, "filter_enforced"); err != nil {
		return nil, err
	}
	for i, h := range rl.GetResponseHeadersToAdd() {
		if bad := httpfilter.UnsupportedField(h, "header"); bad != "" {
			return nil, fmt.Errorf("response_headers_to_add[%d].%s: not supported by weir-proxy", i, bad)
		}
		if h.GetHeader().GetKey() == "" {
			return nil, fmt.Errorf("response_headers_to_add[%d].header.key: required", i)
		}
		c.headers = append(c.headers, [2]string{h.GetHeader().GetKey(), h.GetHeader().GetValue()})
	}
	if c.limits, err = compileLimits(rl.GetRateLimits(), "rate_limits"); err != nil {
		return nil, err
	}
	svc := rl.GetRateLimitService()
	if bad := httpfilter.UnsupportedField(svc, "grpc_service", "transport_api_version"); bad != "" {
		return nil, fmt.Errorf("rate_limit_service.%s: not supported by weir-proxy", bad)
	}
	if svc.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		return nil, fmt.Errorf("rate_limit_service.transport_api_version: only V3 is supported")
	}
	gs := svc.GetGrpcService()
	// Envoy's filter waits for its own timeout, not the gRPC service's.
	if bad := httpfilter.UnsupportedField(gs, "envoy_grpc"); bad != "" {
		return nil, fmt.Errorf("rate_limit_service.grpc_service.%s: not supported by weir-proxy", bad)
	}
	eg := gs.GetEnvoyGrpc()
	if bad := httpfilter.UnsupportedField(eg, "cluster_name"); bad != "" {
		return nil, fmt.Errorf("rate_limit_service.grpc_service.envoy_grpc.%s: not supported by weir-proxy", bad)
	}
	if eg.GetClusterName() == "" {
		return nil, fmt.Errorf("rate_limit_service.grpc_service.envoy_grpc.cluster_name: required")
	}
	if c.service, err = httpfilter.Shared(scope, "ratelimit-grpc\x00"+eg.GetClusterName(), func() (*service, error) {
		return dial(scope, eg.GetClusterName())
	}); err != nil {
		return nil, err
	}
	return c, nil
}

func (factory) NewRouteConfig(m proto.Message, _ *httpfilter.Scope) (any, error) {
	pr := m.(*ratelimitv3.RateLimitPerRoute)
	if bad := httpfilter.UnsupportedField(pr, "rate_limits", "domain"); bad != "" {
		return nil, fmt.Errorf("%s: not supported by weir-proxy", bad)
	}
	limits, err := compileLimits(pr.GetRateLimits(), "rate_limits")
	if err != nil {
		return nil, err
	}
	return &routeConfig{domain: pr.GetDomain(), limits: limits}, nil
}

func compileLimits(rls []*routev3.RateLimit, path string) ([]httpfilter.RateLimitActions, error) {
	var out []httpfilter.RateLimitActions
	for i, rl := range rls {
		acts, err := httpfilter.CompileRateLimit(rl, fmt.Sprintf("%s[%d]", path, i))
		if err != nil {
			return nil, err
		}
		out = append(out, acts)
	}
	return out, nil
}

// service is a gRPC connection to a rate limit service cluster.
type service struct {
	client rlsv3.RateLimitServiceClient
}

// dial makes the cluster's connection, closed once no config holds it.
func dial(scope *httpfilter.Scope, cluster string) (*service, error) {
	conn, err := grpc.NewClient("passthrough:///"+cluster,
		grpc.WithTransportCredentials(insecure.NewCredentials()), // the dialer does the cluster's TLS
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return scope.DialCluster(ctx, cluster) }),
		// A restarted service is found again within a second, not after
		// grpc-go's default backoff of up to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second,
		}, MinConnectTimeout: time.Second}),
	)
	if err != nil {
		return nil, fmt.Errorf("rate_limit_service: %w", err)
	}
	s := &service{client: rlsv3.NewRateLimitServiceClient(conn)}
	runtime.AddCleanup(s, func(c *grpc.ClientConn) { _ = c.Close() }, conn)
	return s, nil
}

type config struct {
	domain                     string
	timeout                    time.Duration
	failureDeny                bool
	limitedStatus, errorStatus int
	headers                    [][2]string
	xEnvoyHeader               bool
	enabled, enforced          httpfilter.Fraction
	limits                     []httpfilter.RateLimitActions
	service                    *service
}

type routeConfig struct {
	domain string
	limits []httpfilter.RateLimitActions
}

func (c *config) NewFilter(cb httpfilter.Callbacks) any { return &filter{c: c, cb: cb} }

type filter struct {
	c  *config
	cb httpfilter.Callbacks
	// addResponse are the service's headers for an allowed request's
	// response.
	addResponse []*corev3.HeaderValue
}

func (f *filter) DecodeHeaders(h *httpfilter.RequestHeaders, _ bool) httpfilter.Status {
	c := f.c
	domain, limits := c.domain, c.limits
	if rc, ok := f.cb.PerRouteConfig().(*routeConfig); ok {
		if len(rc.limits) > 0 {
			limits = rc.limits
		}
		if rc.domain != "" {
			domain = rc.domain
		}
	}
	// Envoy asks only for a route that forwards (a route entry).
	if len(limits) == 0 || !f.cb.RouteForwards() || !c.enabled.Sample() {
		return httpfilter.Continue
	}
	req := &rlsv3.RateLimitRequest{Domain: domain}
	client := f.cb.ClientAddr()
	for _, acts := range limits {
		keys, values, ok := acts.Descriptor(client, h)
		if !ok {
			continue
		}
		d := &ratelimitcommonv3.RateLimitDescriptor{}
		for i := range keys {
			d.Entries = append(d.Entries, &ratelimitcommonv3.RateLimitDescriptor_Entry{Key: keys[i], Value: values[i]})
		}
		req.Descriptors = append(req.Descriptors, d)
	}
	if len(req.Descriptors) == 0 {
		return httpfilter.Continue
	}
	ctx := f.cb.Context()
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	resp, err := c.service.client.ShouldRateLimit(ctx, req)
	switch {
	case err != nil:
		if f.cb.Context().Err() != nil {
			return httpfilter.StopIteration // the client is gone
		}
		if c.failureDeny {
			f.cb.SendLocalReply(c.errorStatus, "", nil, "rate_limiter_error")
			return httpfilter.StopIteration
		}
		return httpfilter.Continue
	case resp.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT && c.enforced.Sample():
		hdr := http.Header{}
		for _, hv := range resp.GetResponseHeadersToAdd() {
			hdr.Add(hv.GetKey(), hv.GetValue())
		}
		for _, kv := range c.headers {
			hdr.Add(kv[0], kv[1])
		}
		if c.xEnvoyHeader {
			hdr.Set("X-Envoy-Ratelimited", "true")
		}
		f.cb.SendLocalReply(c.limitedStatus, string(resp.GetRawBody()), hdr, "request_rate_limited")
		return httpfilter.StopIteration
	}
	for _, hv := range resp.GetRequestHeadersToAdd() {
		h.Header.Add(hv.GetKey(), hv.GetValue())
	}
	f.addResponse = resp.GetResponseHeadersToAdd()
	return httpfilter.Continue
}

func (f *filter) DecodeData([]byte, bool) httpfilter.Status    { return httpfilter.Continue }
func (f *filter) DecodeTrailers(http.Header) httpfilter.Status { return httpfilter.Continue }

func (f *filter) EncodeHeaders(h *httpfilter.ResponseHeaders, _ bool) httpfilter.Status {
	for _, hv := range f.addResponse {
		h.Header.Add(hv.GetKey(), hv.GetValue())
	}
	return httpfilter.Continue
}

func (f *filter) EncodeData([]byte, bool) httpfilter.Status    { return httpfilter.Continue }
func (f *filter) EncodeTrailers(http.Header) httpfilter.Status { return httpfilter.Continue }
