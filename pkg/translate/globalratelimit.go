package translate

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	ratelimitconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weir-dev/weir/pkg/ir"
)

// Envoy's rate limit filter, which ir.GlobalRateLimit runs: one instance
// lets requests pass while the service does not answer, the other refuses
// them.
const (
	globalRateLimitFilter           = "envoy.filters.http.ratelimit"
	globalRateLimitFailClosedFilter = "envoy.filters.http.ratelimit.fail_closed"
)

// RateLimitCluster is the gRPC cluster of Weir's rate limit service
// (Options.RateLimitService), defined when there is a service. Envoy
// looks the cluster up per request, so the filters that name it may be in
// every chain without it: a route that would use it is not served.
const RateLimitCluster = "weir-ratelimit"

// globalRateLimitTimeout bounds each call to the service: past it a
// request passes or is refused as its policy says. It leaves room for a
// throttled request's wait (ir.MaxRateLimitQueueing).
const globalRateLimitTimeout = time.Second

// globalRateLimitConfig is the listener-level config of either filter. It
// has no rate_limits: a route's typed_per_filter_config gives its own.
func globalRateLimitConfig(failClosed bool) *ratelimitv3.RateLimit {
	c := &ratelimitv3.RateLimit{
		Domain:  ir.RateLimitDomain,
		Timeout: durationpb.New(globalRateLimitTimeout),
		RateLimitService: &ratelimitconfigv3.RateLimitServiceConfig{
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: RateLimitCluster},
			}},
			TransportApiVersion: corev3.ApiVersion_V3,
		},
		FailureModeDeny: failClosed,
		StatPrefix:      "global_rate_limit",
	}
	if failClosed {
		c.StatPrefix = "global_rate_limit_fail_closed"
	}
	return c
}

// globalRateLimitPerRoute is a route's descriptor: the limit's name and,
// when it is partitioned, the client's address or the header's value.
func globalRateLimitPerRoute(g *ir.GlobalRateLimit, s *shared) (*ratelimitv3.RateLimitPerRoute, error) {
	if s.rateLimitErr != nil {
		return nil, s.rateLimitErr
	}
	if s.rateLimitEndpoint == nil {
		return nil, fmt.Errorf("a global rate limit, but no rate limit service is configured")
	}
	if g.Name == "" {
		return nil, fmt.Errorf("a global rate limit without a name")
	}
	actions := []*routev3.RateLimit_Action{{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{
		GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorKey: ir.RateLimitNameKey, DescriptorValue: g.Name},
	}}}
	switch g.PartitionBy {
	case ir.PartitionNone:
	case ir.PartitionClient:
		actions = append(actions, &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RemoteAddress_{RemoteAddress: &routev3.RateLimit_Action_RemoteAddress{}}})
	case ir.PartitionHeader:
		name := s.lower(g.Header)
		if !httpguts.ValidHeaderFieldName(name) {
			return nil, fmt.Errorf("rate limit header %q is not a header name", g.Header)
		}
		actions = append(actions, &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{
			RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{HeaderName: name, DescriptorKey: ir.RateLimitHeaderKey},
		}})
	default:
		return nil, fmt.Errorf("rate limit partition %d is not known", g.PartitionBy)
	}
	out := &ratelimitv3.RateLimitPerRoute{RateLimits: []*routev3.RateLimit{{Actions: actions}}}
	return out, out.ValidateAll()
}

// rateLimitCluster is the service's cluster: HTTP/2, at the address
// Options.RateLimitService gives (an IP, or a DNS name resolved per
// connection); nil endpoint
// without an address.
func rateLimitCluster(addr string, s *shared) (*clusterv3.Cluster, *endpointv3.LbEndpoint, error) {
	c := &clusterv3.Cluster{
		Name:                          RateLimitCluster,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:                s.connectTimeout,
		LbPolicy:                      clusterv3.Cluster_ROUND_ROBIN,
		TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptionsKey: s.http2Options},
		LoadAssignment:                &endpointv3.ClusterLoadAssignment{ClusterName: RateLimitCluster},
		// Every gateway request of a limited route asks the service.
		CircuitBreakers: s.noCircuitBreaker,
	}
	if addr == "" {
		return c, nil, nil
	}
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("rate limit service %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return nil, nil, fmt.Errorf("rate limit service %q: port %q", addr, portText)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		// One service behind a name (a Service's): weir-proxy resolves
		// LOGICAL_DNS, as Envoy does, per connection.
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS}
		c.DnsLookupFamily = clusterv3.Cluster_V4_PREFERRED
	}
	ep := lbEndpoint(host, uint32(port))
	c.LoadAssignment.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{ep}}}
	return c, ep, c.ValidateAll()
}
