package translate

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	setfilterstatecommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/set_filter_state/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	setfilterstatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/set_filter_state/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weir-dev/weir/pkg/envoycheck"
	"github.com/weir-dev/weir/pkg/ir"
)

// Extension names, as docs/xds-shape.md lists them.
const (
	httpConnectionManagerFilter = "envoy.filters.network.http_connection_manager"
	tcpProxyFilter              = "envoy.filters.network.tcp_proxy"
	routerFilter                = "envoy.filters.http.router"
	tlsInspectorFilter          = "envoy.filters.listener.tls_inspector"
	tlsTransportSocket          = "envoy.transport_sockets.tls"
	httpProtocolOptionsKey      = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

const connectTimeout = 5 * time.Second

var (
	plainRoles = [...]ir.ListenerRole{ir.ExternalHTTP, ir.InternalHTTP}
	tlsRoles   = [...]ir.ListenerRole{ir.ExternalHTTPS, ir.InternalHTTPS}
)

// roleIndex is the position of role in ir.AllRoles.
func roleIndex(role ir.ListenerRole) int {
	return slices.Index(ir.AllRoles, role)
}

// tlsIndex is the position of a TLS role in tlsRoles.
func tlsIndex(role ir.ListenerRole) int {
	return slices.Index(tlsRoles[:], role)
}

// shared holds the protos that depend only on Options, built once and
// embedded in every resource that needs them, and caches for building the
// others. Sharing sub-messages between resources is safe because nothing
// modifies a proto once built.
type shared struct {
	// hcm is the packed HttpConnectionManager filter of each role.
	hcm               map[ir.ListenerRole]*listenerv3.Filter
	plainListeners    map[ir.ListenerRole]*listenerv3.Listener
	tlsInspector      *listenerv3.ListenerFilter
	http2Options      *anypb.Any
	unavailable       *clusterv3.Cluster
	unavailableAssign *endpointv3.ClusterLoadAssignment
	// rateLimit is the rate limit service's cluster, always sent;
	// rateLimitEndpoint is nil without a service.
	rateLimit         *clusterv3.Cluster
	rateLimitEndpoint *endpointv3.LbEndpoint
	rateLimitErr      error
	// noCircuitBreaker lifts Envoy's default circuit breaker (1,024
	// requests, connections and pending requests, 3 retries, per
	// cluster), which would refuse a busy revision's traffic.
	noCircuitBreaker *clusterv3.CircuitBreakers
	opts             Options

	ads            *corev3.ConfigSource
	edsConfig      *clusterv3.Cluster_EdsClusterConfig
	connectTimeout *durationpb.Duration
	zeroTimeout    *durationpb.Duration
	matchAll       *routev3.RouteMatch
	// lowerNames caches lower-cased header names; there are few distinct ones.
	lowerNames map[string]string
	// keyPairs caches checkKeyPair by content: parsing an RSA key takes a
	// third of a millisecond, and one secret often serves many fragments.
	keyPairs map[[sha256.Size]byte]error
}

// checkKeyPair is checkKeyPair, cached.
func (s *shared) checkKeyPair(chain, key []byte) error {
	h := sha256.New()
	h.Write(chain)
	h.Write([]byte{0})
	h.Write(key)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	if err, ok := s.keyPairs[sum]; ok {
		return err
	}
	err := checkKeyPair(chain, key)
	if len(s.keyPairs) >= 10000 {
		clear(s.keyPairs) // crude bound; the cache only saves time
	}
	s.keyPairs[sum] = err
	return err
}

// lower returns s lower-cased with ASCII rules, as Envoy folds header
// names, without allocating for a name seen before. A non-ASCII name stays
// non-ASCII and is then refused as not a token.
func (s *shared) lower(name string) string {
	if l, ok := s.lowerNames[name]; ok {
		return l
	}
	l := ir.LowerASCII(name)
	if len(s.lowerNames) < 4096 {
		s.lowerNames[name] = l
	}
	return l
}

func newShared(opts Options) *shared {
	s := &shared{
		opts:           opts,
		ads:            adsConfigSource(),
		connectTimeout: durationpb.New(connectTimeout),
		zeroTimeout:    durationpb.New(0),
		matchAll:       &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		lowerNames:     map[string]string{},
		keyPairs:       map[[sha256.Size]byte]error{},
		hcm:            map[ir.ListenerRole]*listenerv3.Filter{},
		plainListeners: map[ir.ListenerRole]*listenerv3.Listener{},
	}
	for _, role := range ir.AllRoles {
		s.hcm[role] = &listenerv3.Filter{
			Name:       httpConnectionManagerFilter,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(httpConnectionManager(role.String(), sharedHTTPFilters(), opts))},
		}
	}
	for _, role := range plainRoles {
		s.plainListeners[role] = &listenerv3.Listener{
			Name:         role.String(),
			Address:      listenerAddress(opts, role),
			FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{s.hcm[role]}}},
		}
	}
	s.tlsInspector = &listenerv3.ListenerFilter{
		Name:       tlsInspectorFilter,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})},
	}
	s.http2Options = mustAny(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		},
	})
	s.edsConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: s.ads}
	s.noCircuitBreaker = circuitBreaker(math.MaxUint32)
	s.unavailable = edsCluster(UnavailableCluster, s)
	s.unavailableAssign = &endpointv3.ClusterLoadAssignment{ClusterName: UnavailableCluster}
	if s.rateLimit, s.rateLimitEndpoint, s.rateLimitErr = rateLimitCluster(opts.RateLimitService, s); s.rateLimitErr != nil {
		// A bad address is the operator's; the routes that need the
		// service say so.
		s.rateLimit, _, _ = rateLimitCluster("", s)
	}
	return s
}

// mustAny packs a proto built here from constants; failing is a bug.
func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(fmt.Sprintf("packing %T: %v", m, err))
	}
	return a
}

func adsConfigSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// routerHTTPFilter ends every filter chain.
var routerHTTPFilter = &hcmv3.HttpFilter{
	Name:       routerFilter,
	ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
}

// httpConnectionManager serves the route configuration of that name, which
// is also its stat prefix, through filters (which end with the router).
func httpConnectionManager(name string, filters []*hcmv3.HttpFilter, opts Options) *hcmv3.HttpConnectionManager {
	return &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: name,
			ConfigSource:    adsConfigSource(),
		}},
		HttpFilters:       filters,
		UpgradeConfigs:    []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		StreamIdleTimeout: durationpb.New(opts.StreamIdleTimeout),
		UseRemoteAddress:  wrapperspb.Bool(true),
		XffNumTrustedHops: opts.XffNumTrustedHops,
		NormalizePath:     wrapperspb.Bool(true),
		MergeSlashes:      false,
		// Envoy's edge best practices: bounded by default, so one client
		// cannot hold the gateway's memory or connections.
		RequestHeadersTimeout: durationpb.New(edgeRequestHeadersTimeout),
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
			IdleTimeout:     durationpb.New(time.Hour),
			MaxHeadersCount: wrapperspb.UInt32(edgeMaxHeadersCount),
		},
		Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
			MaxConcurrentStreams:        wrapperspb.UInt32(edgeMaxConcurrentStreams),
			InitialStreamWindowSize:     wrapperspb.UInt32(64 << 10),
			InitialConnectionWindowSize: wrapperspb.UInt32(1 << 20),
		},
	}
}

// The edge bounds of every connection manager.
const (
	edgeRequestHeadersTimeout = 10 * time.Second
	edgeMaxHeadersCount       = 100
	edgeMaxConcurrentStreams  = 100
)

// listenerAddress is where the listener of role binds. On "::" it sets
// ipv4_compat, so one socket takes IPv4 and IPv6 (IPV6_V6ONLY=0): a
// dual-stack or IPv6-only cluster is served, and so is an IPv4-only one
// whose kernel has IPv6, which is nearly all.
func listenerAddress(opts Options, role ir.ListenerRole) *corev3.Address {
	return bindAddress(opts, opts.port(role))
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// tlsListener serves chains, which must not be empty.
func tlsListener(role ir.ListenerRole, chains []*listenerv3.FilterChain, s *shared) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:            role.String(),
		Address:         listenerAddress(s.opts, role),
		ListenerFilters: []*listenerv3.ListenerFilter{s.tlsInspector},
		FilterChains:    chains,
	}
}

// tlsFilterChain serves the certificate secretName for serverNames.
func tlsFilterChain(role ir.ListenerRole, secretName string, serverNames []string, cv *ir.ClientValidation, s *shared) (*listenerv3.FilterChain, error) {
	dtc := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: secretName, SdsConfig: s.ads}},
		AlpnProtocols:                  []string{"h2", "http/1.1"},
	}}
	if err := withClientValidation(dtc, cv); err != nil {
		return nil, err
	}
	ctx, err := anypb.New(dtc)
	if err != nil {
		return nil, err
	}
	filters := []*listenerv3.Filter{s.hcm[role]}
	if cv != nil {
		// Routes of a host whose clients are checked admit only
		// connections this chain took (ir.ViaCertificate).
		filters = []*listenerv3.Filter{filterChainMarker(secretName), s.hcm[role]}
	}
	return &listenerv3.FilterChain{
		FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: serverNames},
		TransportSocket: &corev3.TransportSocket{
			Name:       tlsTransportSocket,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: ctx},
		},
		Filters: filters,
	}, nil
}

// filterChainMarker puts certificate's name on each connection of its
// filter chain, as a read-only string filter state object.
func filterChainMarker(certificate string) *listenerv3.Filter {
	return &listenerv3.Filter{Name: "envoy.filters.network.set_filter_state", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&setfilterstatev3.Config{
		OnNewConnection: []*setfilterstatecommonv3.FilterStateValue{{
			Key:        &setfilterstatecommonv3.FilterStateValue_ObjectKey{ObjectKey: filterChainKey},
			FactoryKey: "envoy.string",
			Value: &setfilterstatecommonv3.FilterStateValue_FormatString{FormatString: &corev3.SubstitutionFormatString{
				Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
					Specifier: &corev3.DataSource_InlineString{InlineString: strings.ReplaceAll(certificate, "%", "%%")},
				}},
			}},
			ReadOnly: true,
		}},
	})}}
}

func edsCluster(name string, s *shared) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     s.edsConfig,
		ConnectTimeout:       s.connectTimeout,
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
}

// circuitBreaker bounds a cluster's requests in flight to maxRequests,
// and nothing else.
func circuitBreaker(maxRequests uint32) *clusterv3.CircuitBreakers {
	unbounded := wrapperspb.UInt32(math.MaxUint32)
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		Priority: corev3.RoutingPriority_DEFAULT, MaxConnections: unbounded, MaxPendingRequests: unbounded,
		MaxRequests: wrapperspb.UInt32(maxRequests), MaxRetries: unbounded,
	}}}
}

// buildCluster translates b and validates the result.
func buildCluster(b *ir.Backend, s *shared) (*clusterv3.Cluster, error) {
	if b.Name == "" {
		return nil, fmt.Errorf("no name")
	}
	if !utf8.ValidString(b.Name) || !utf8.ValidString(b.ExternalName) {
		return nil, fmt.Errorf("not valid UTF-8")
	}
	if b.Name == UnavailableCluster {
		return nil, fmt.Errorf("the name is reserved")
	}
	var c *clusterv3.Cluster
	if b.ExternalName != "" {
		if b.Service.Port <= 0 || b.Service.Port > 65535 {
			return nil, fmt.Errorf("ExternalName service port %d out of range", b.Service.Port)
		}
		c = &clusterv3.Cluster{
			Name:                 b.Name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS},
			DnsLookupFamily:      clusterv3.Cluster_V4_PREFERRED,
			ConnectTimeout:       s.connectTimeout,
			LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
			LoadAssignment: &endpointv3.ClusterLoadAssignment{
				ClusterName: b.Name,
				Endpoints: []*endpointv3.LocalityLbEndpoints{{
					LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(b.ExternalName, uint32(b.Service.Port))},
				}},
			},
		}
	} else {
		c = edsCluster(b.Name, s)
	}
	if b.Protocol == ir.H2C || b.Protocol == ir.GRPC {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: s.http2Options}
	}
	if b.ConnectTimeout > 0 {
		c.ConnectTimeout = durationpb.New(b.ConnectTimeout)
	}
	c.CircuitBreakers = s.noCircuitBreaker
	if b.MaxRequests > 0 {
		c.CircuitBreakers = circuitBreaker(b.MaxRequests)
	}
	switch b.LoadBalancer {
	case ir.LBRoundRobin:
	case ir.LBLeastRequest:
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	case ir.LBConsistentHash:
		// Envoy's defaults, spelt out so both data planes build the
		// same ring.
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
			MinimumRingSize: wrapperspb.UInt64(1024), MaximumRingSize: wrapperspb.UInt64(8 << 20),
		}}
	default:
		return nil, fmt.Errorf("load balancer %d is not known", b.LoadBalancer)
	}
	if b.TLS != nil {
		ts, err := upstreamTLS(b, s)
		if err != nil {
			return nil, err
		}
		c.TransportSocket = ts
	}
	if err := c.ValidateAll(); err != nil {
		return nil, err
	}
	return c, nil
}

// upstreamTLS originates TLS to b: SNI, ALPN for its protocol, and the
// certificate checked against its CA bundle (inline, or the gateway's
// trusted bundle) and its names, as b.TLS.Verify asks. Envoy verifies
// nothing without a validation_context, and refuses a SAN match without a
// trusted CA, so a verifying config always sets both.
func upstreamTLS(b *ir.Backend, s *shared) (*corev3.TransportSocket, error) {
	var name string
	if b.TLS.ServerName != "" || b.TLS.Verify == ir.VerifyFull && len(b.TLS.SubjectAltNames) == 0 {
		var err error
		if name, err = canonicalHost(b.TLS.ServerName); err != nil {
			return nil, fmt.Errorf("TLS server name %q: %w", b.TLS.ServerName, err)
		}
	}
	alpn := []string{"http/1.1"}
	if b.Protocol == ir.H2C || b.Protocol == ir.GRPC {
		alpn = []string{"h2"}
	}
	if b.TLS.Verify == ir.VerifyNone {
		if b.TLS.CACertificates != "" || len(b.TLS.SubjectAltNames) > 0 {
			return nil, fmt.Errorf("TLS that verifies nothing has CA certificates or names to verify")
		}
		return upstreamTLSSocket(name, &tlsv3.CommonTlsContext{AlpnProtocols: alpn}, b.TLS.ClientCertificate, s)
	}
	ca := &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: s.opts.UpstreamTrustedCA}}
	if b.TLS.CACertificates != "" {
		if _, err := envoycheck.CABundle([]byte(b.TLS.CACertificates)); err != nil {
			return nil, fmt.Errorf("CA certificates: %w", err)
		}
		ca = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: b.TLS.CACertificates}}
	}
	var sans []*tlsv3.SubjectAltNameMatcher
	if b.TLS.Verify == ir.VerifyFull {
		sans = []*tlsv3.SubjectAltNameMatcher{{
			SanType: tlsv3.SubjectAltNameMatcher_DNS,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: name}},
		}}
	}
	if len(b.TLS.SubjectAltNames) > 0 {
		if b.TLS.Verify != ir.VerifyFull {
			return nil, fmt.Errorf("TLS that does not verify the name has names to verify")
		}
		sans = sans[:0]
		for _, san := range b.TLS.SubjectAltNames {
			var err error
			typ, value := tlsv3.SubjectAltNameMatcher_DNS, san.Value
			if san.URI {
				typ = tlsv3.SubjectAltNameMatcher_URI
			} else if value, err = canonicalHost(san.Value); err != nil {
				return nil, fmt.Errorf("subject alternative name %q: %w", san.Value, err)
			}
			sans = append(sans, &tlsv3.SubjectAltNameMatcher{
				SanType: typ,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}},
			})
		}
	}
	common := &tlsv3.CommonTlsContext{
		AlpnProtocols: alpn,
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa:                 ca,
			MatchTypedSubjectAltNames: sans,
		}},
	}
	return upstreamTLSSocket(name, common, b.TLS.ClientCertificate, s)
}

// upstreamTLSSocket is the transport socket sending sni (none when empty)
// and presenting the SDS secret clientCert, if set.
func upstreamTLSSocket(sni string, common *tlsv3.CommonTlsContext, clientCert string, s *shared) (*corev3.TransportSocket, error) {
	if clientCert != "" {
		// By SDS, as listener certificates: the key is not in CDS.
		common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: clientCert, SdsConfig: s.ads}}
	}
	ctx, err := anypb.New(&tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: common})
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: tlsTransportSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: ctx}}, nil
}

func lbEndpoint(host string, port uint32) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
		Endpoint: &endpointv3.Endpoint{Address: socketAddress(host, port)},
	}}
}

// buildLoadAssignment lists the endpoints sorted and de-duplicated, so that
// the same set always yields the same proto. EDS takes only IP addresses;
// anything else is left out with a warning.
func buildLoadAssignment(name string, endpoints []ir.Endpoint, source ir.ObjectRef) (*endpointv3.ClusterLoadAssignment, []Problem) {
	out := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	w := warner{source: source}
	valid := make([]ir.Endpoint, 0, len(endpoints))
	for _, ep := range endpoints {
		addr, err := netip.ParseAddr(ep.Address)
		if err != nil || addr.Zone() != "" || ep.Port == 0 || ep.Port > 65535 {
			w.add("backend %q: endpoint %s:%d left out: not an IP address and port", name, ep.Address, ep.Port)
			continue
		}
		valid = append(valid, ep)
	}
	if len(valid) == 0 {
		return out, w.list
	}
	slices.SortFunc(valid, func(a, b ir.Endpoint) int {
		return cmp.Or(cmp.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port))
	})
	valid = slices.Compact(valid)
	lbs := make([]*endpointv3.LbEndpoint, len(valid))
	for i, ep := range valid {
		lbs[i] = lbEndpoint(ep.Address, ep.Port)
	}
	out.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
	return out, w.list
}

func buildSecret(name string, chain, key []byte) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: chain}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: key}},
		}},
	}
}
