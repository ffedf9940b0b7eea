package dataplane

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	setfilterstatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/set_filter_state/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"google.golang.org/protobuf/proto"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"
	"github.com/weir-dev/weir/pkg/envoycheck"
)

const (
	hcmFilterName          = "envoy.filters.network.http_connection_manager"
	routerFilterName       = "envoy.filters.http.router"
	tlsInspectorName       = "envoy.filters.listener.tls_inspector"
	tlsTransportSocketName = "envoy.transport_sockets.tls"

	// envoyStreamIdleTimeout is Envoy's default HCM stream_idle_timeout.
	envoyStreamIdleTimeout = 5 * time.Minute
	// listenerFiltersTimeout is Envoy's default time for the TLS inspector
	// to see a ClientHello.
	listenerFiltersTimeout = 15 * time.Second
)

// listenerConf is a compiled Listener. Immutable.
type listenerConf struct {
	name     string
	bind     string // host:port to bind
	network  string // "tcp4", "tcp6" (IPv6 only) or "tcp" (both, ipv4_compat)
	tls      bool
	plain    *filterChain
	sniExact map[string]*filterChain
	sniWild  map[string]*filterChain // keyed by the suffix including the dot: ".example.com"
	sniAny   *filterChain
	// passthrough: some chain is a tcp_proxy, so the TLS inspector reads
	// the ClientHello before anything answers it.
	passthrough bool
	stats       *listenerStats
}

// filterChain is an HTTP connection manager or a tcp_proxy, either behind
// TLS terminated with tlsConfig or not; a tcp_proxy without tlsConfig
// forwards TLS as it came (passthrough).
type filterChain struct {
	hcm       *hcmConf
	tlsConfig *tls.Config
	tcp       *tcpProxyConf
	// filterState is what a set_filter_state filter in front of the
	// connection manager puts on each connection: constant strings.
	filterState map[string]string
}

// hcmConf is a compiled HttpConnectionManager.
type hcmConf struct {
	statPrefix   string
	routes       *routeTable
	upgrades     map[string]bool // lower-cased upgrade type -> enabled
	streamIdle   time.Duration   // 0 = disabled
	useRemote    bool
	trustedHops  uint32
	normalize    bool
	mergeSlashes bool
	filters      []*httpFilterConf // http_filters before the router
	codec        codecLimits
	h2base       *http.Server // codec settings for Go's HTTP/2 server
}

// chainForSNI selects the filter chain the way Envoy matches
// filter_chain_match.server_names: exact name, then the longest matching
// "*.suffix" wildcard, then a chain without server_names.
func (l *listenerConf) chainForSNI(sni string) *filterChain {
	if !l.tls {
		return l.plain
	}
	sni = lowerASCII(strings.TrimSuffix(sni, "."))
	if sni != "" {
		if c, ok := l.sniExact[sni]; ok {
			return c
		}
		for i := strings.IndexByte(sni, '.'); i >= 0; {
			if c, ok := l.sniWild[sni[i:]]; ok {
				return c
			}
			j := strings.IndexByte(sni[i+1:], '.')
			if j < 0 {
				break
			}
			i += 1 + j
		}
	}
	return l.sniAny
}

// httpChainForSNI is chainForSNI for HTTP: nil for a tcp_proxy chain, which
// an HTTP connection accepted under an older config may now select.
func (l *listenerConf) httpChainForSNI(sni string) *filterChain {
	if ch := l.chainForSNI(sni); ch != nil && ch.hcm != nil {
		return ch
	}
	return nil
}

type compileEnv struct {
	opts     *Options
	routes   map[string]*routeTable
	secrets  map[string]*tls.Certificate
	clusters map[string]*cluster
	// filterScope is the proxy's, for filters with state.
	filterScope *httpfilter.Scope
}

func compileListener(l *listenerv3.Listener, env *compileEnv) (*listenerConf, error) {
	if err := pgv(l, ""); err != nil {
		return nil, err
	}
	if err := onlyFields(l, "", "name", "address", "filter_chains", "listener_filters"); err != nil {
		return nil, err
	}
	lc := &listenerConf{name: l.GetName()}
	network, bind, err := bindAddress(l.GetAddress(), env.opts)
	if err != nil {
		return nil, err
	}
	lc.network, lc.bind = network, bind

	inspector := false
	for i, lf := range l.GetListenerFilters() {
		p := idx("listener_filters", i)
		if err := onlyFields(lf, p, "name", "typed_config"); err != nil {
			return nil, err
		}
		if lf.GetTypedConfig() == nil && lf.GetName() != tlsInspectorName {
			return nil, invalid(sub(p, "name"), "listener filter %q is not supported by weir-proxy", lf.GetName())
		}
		if lf.GetTypedConfig() != nil {
			var ti tlsinspectorv3.TlsInspector
			if err := unpack(lf.GetTypedConfig(), &ti, sub(p, "typed_config")); err != nil {
				return nil, err
			}
			if err := onlyFields(&ti, sub(p, "typed_config")); err != nil {
				return nil, err
			}
		}
		inspector = true
	}

	if len(l.GetFilterChains()) == 0 {
		return nil, invalid("filter_chains", "at least one filter chain is required")
	}
	tlsChains := 0
	for i, fc := range l.GetFilterChains() {
		switch {
		case fc.GetTransportSocket() != nil:
			tlsChains++
		case isTCPProxyChain(fc):
			// TLS passthrough: the chain matches the ClientHello's SNI.
			if !inspector || fc.GetFilterChainMatch().GetTransportProtocol() != "tls" {
				return nil, invalid(idx("filter_chains", i), "weir-proxy serves tcp_proxy only for TLS passthrough: transport_protocol \"tls\" behind %s", tlsInspectorName)
			}
			tlsChains++
		}
		// Any tcp_proxy chain, terminating or not, is chosen by the
		// inspector before a handshake starts.
		lc.passthrough = lc.passthrough || isTCPProxyChain(fc)
	}
	switch {
	case tlsChains == 0:
		if len(l.GetFilterChains()) != 1 {
			return nil, invalid("filter_chains", "plain listeners must have exactly one filter chain")
		}
	case tlsChains != len(l.GetFilterChains()):
		return nil, invalid("filter_chains", "mixing TLS and plain filter chains is not supported by weir-proxy")
	default:
		lc.tls = true
		lc.sniExact = map[string]*filterChain{}
		lc.sniWild = map[string]*filterChain{}
		if !inspector {
			// Without the TLS inspector Envoy has no SNI to match on.
			return nil, invalid("listener_filters", "TLS filter chains need %s", tlsInspectorName)
		}
	}

	for i, fc := range l.GetFilterChains() {
		p := idx("filter_chains", i)
		chain, err := compileChain(fc, p, env)
		if err != nil {
			return nil, err
		}
		if !lc.tls {
			if fc.GetFilterChainMatch() != nil {
				return nil, unsupported(sub(p, "filter_chain_match"))
			}
			lc.plain = chain
			continue
		}
		names := fc.GetFilterChainMatch().GetServerNames()
		if len(names) == 0 {
			if lc.sniAny != nil {
				return nil, invalid(p, "multiple filter chains with the same matching rules are defined")
			}
			lc.sniAny = chain
		}
		for j, n := range names {
			// As Envoy's filter chain manager: ASCII lower case, and
			// "*.x" is kept as ".x", the key a literal ".x" also takes,
			// so the two overlap.
			n = lowerASCII(n)
			np := idx(sub(p, "filter_chain_match.server_names"), j)
			target, key := lc.sniExact, n
			switch {
			case strings.HasPrefix(n, "*."):
				target, key = lc.sniWild, n[1:]
			case strings.Contains(n, "*"):
				return nil, invalid(np, "partial wildcards are not supported in \"server_names\", got %q", n)
			case strings.HasPrefix(n, "."):
				target = lc.sniWild
			}
			if _, dup := target[key]; dup {
				return nil, invalid(np, "multiple filter chains with overlapping matching rules are defined (%q)", n)
			}
			target[key] = chain
		}
	}
	return lc, nil
}

// bindAddress returns the network and host:port a listener binds, as
// Envoy binds them: an IPv4 address takes IPv4 only; "::" takes IPv6
// only unless ipv4_compat is set (IPV6_V6ONLY=0), which Envoy allows on
// "::" and IPv4-mapped addresses only. Options.ListenAddress overrides the
// address, with the same rules and ipv4_compat implied for "::".
func bindAddress(a *corev3.Address, opts *Options) (network, bind string, err error) {
	if err := onlyFields(a, "address", "socket_address"); err != nil {
		return "", "", err
	}
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", "", invalid("address", "socket_address is required")
	}
	if err := onlyFields(sa, "address.socket_address", "address", "port_value", "protocol", "ipv4_compat"); err != nil {
		return "", "", err
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return "", "", invalid("address.socket_address.protocol", "only TCP is supported")
	}
	host := sa.GetAddress()
	ip, perr := netip.ParseAddr(host)
	if perr != nil || ip.Zone() != "" {
		return "", "", invalid("address.socket_address.address", "malformed IP address %q", host)
	}
	compat := sa.GetIpv4Compat()
	if compat && !(ip == netip.IPv6Unspecified() || ip.Is4In6()) {
		return "", "", invalid("address.socket_address.ipv4_compat", "only IPv6 address '::' or valid IPv4-mapped IPv6 address can set ipv4_compat: %s", host)
	}
	if opts.ListenAddress != "" {
		host = opts.ListenAddress
		if ip, perr = netip.ParseAddr(host); perr != nil {
			return "", "", invalid("address.socket_address.address", "ListenAddress %q is not an IP address", host)
		}
		compat = ip == netip.IPv6Unspecified()
	}
	switch {
	case ip.Is4():
		network = "tcp4"
	case compat:
		network = "tcp"
	default:
		network = "tcp6"
	}
	port := int(sa.GetPortValue())
	if port != 0 {
		port += opts.PortOffset
		if port <= 0 || port > 65535 {
			return "", "", invalid("address.socket_address.port_value", "port %d with PortOffset %d is out of range", sa.GetPortValue(), opts.PortOffset)
		}
	}
	return network, net.JoinHostPort(host, strconv.Itoa(port)), nil
}

func compileChain(fc *listenerv3.FilterChain, path string, env *compileEnv) (*filterChain, error) {
	if err := onlyFields(fc, path, "name", "filter_chain_match", "filters", "transport_socket"); err != nil {
		return nil, err
	}
	if m := fc.GetFilterChainMatch(); m != nil {
		if err := onlyFields(m, sub(path, "filter_chain_match"), "server_names", "transport_protocol"); err != nil {
			return nil, err
		}
		if tp := m.GetTransportProtocol(); tp != "" && tp != "tls" {
			return nil, invalid(sub(path, "filter_chain_match.transport_protocol"), "%q is not supported", tp)
		}
	}
	filters := fc.GetFilters()
	var state map[string]string
	if len(filters) > 1 && !isTCPProxyChain(fc) {
		var err error
		if state, err = compileSetFilterState(filters[:len(filters)-1], sub(path, "filters")); err != nil {
			return nil, err
		}
		filters = filters[len(filters)-1:]
	}
	if len(filters) != 1 {
		return nil, invalid(sub(path, "filters"), "exactly one %s or %s filter is required, after set_filter_state filters", hcmFilterName, tcpProxyFilterName)
	}
	f := filters[0]
	fp := sub(path, fmt.Sprintf("filters[%d]", len(fc.GetFilters())-1))
	if err := onlyFields(f, fp, "name", "typed_config"); err != nil {
		return nil, err
	}
	if isTCPProxyChain(fc) {
		var tp tcpproxyv3.TcpProxy
		if err := unpack(f.GetTypedConfig(), &tp, sub(fp, "typed_config")); err != nil {
			return nil, err
		}
		tc, err := compileTCPProxy(&tp, sub(fp, "typed_config"), env)
		if err != nil {
			return nil, err
		}
		key, err := proto.MarshalOptions{Deterministic: true}.Marshal(fc)
		if err != nil {
			return nil, invalid(path, "%v", err)
		}
		tc.key = string(key)
		chain := &filterChain{tcp: tc}
		if ts := fc.GetTransportSocket(); ts != nil {
			// TLS terminated here; the bytes inside go to the cluster.
			if chain.tlsConfig, err = compileTLS(ts, sub(path, "transport_socket"), env); err != nil {
				return nil, err
			}
		}
		return chain, nil
	}
	var hcm hcmv3.HttpConnectionManager
	if err := unpack(f.GetTypedConfig(), &hcm, sub(fp, "typed_config")); err != nil {
		return nil, err
	}
	hc, err := compileHCM(&hcm, sub(fp, "typed_config"), env)
	if err != nil {
		return nil, err
	}
	chain := &filterChain{hcm: hc, filterState: state}
	if ts := fc.GetTransportSocket(); ts != nil {
		cfg, err := compileTLS(ts, sub(path, "transport_socket"), env)
		if err != nil {
			return nil, err
		}
		chain.tlsConfig = cfg
	}
	return chain, nil
}

// setFilterStateName is Envoy's network filter that puts objects on a
// connection's filter state.
const setFilterStateName = "envoy.filters.network.set_filter_state"

// compileSetFilterState reads set_filter_state filters for what Weir
// emits: on_new_connection values of Envoy's generic string object
// ("envoy.string") whose format string is a constant, read-only and not
// shared with upstreams. Anything else is refused.
func compileSetFilterState(fs []*listenerv3.Filter, path string) (map[string]string, error) {
	out := map[string]string{}
	for i, f := range fs {
		fp := idx(path, i)
		if err := onlyFields(f, fp, "name", "typed_config"); err != nil {
			return nil, err
		}
		var cfg setfilterstatev3.Config
		if f.GetTypedConfig() == nil || unpack(f.GetTypedConfig(), &cfg, sub(fp, "typed_config")) != nil {
			return nil, invalid(fp, "only %s may come before %s", setFilterStateName, hcmFilterName)
		}
		cp := sub(fp, "typed_config")
		if err := onlyFields(&cfg, cp, "on_new_connection"); err != nil {
			return nil, err
		}
		for j, v := range cfg.GetOnNewConnection() {
			vp := idx(sub(cp, "on_new_connection"), j)
			if err := onlyFields(v, vp, "object_key", "factory_key", "format_string", "read_only"); err != nil {
				return nil, err
			}
			if v.GetFactoryKey() != "envoy.string" || v.GetObjectKey() == "" {
				return nil, invalid(vp, "only an object_key with factory_key envoy.string is supported by weir-proxy")
			}
			if !v.GetReadOnly() {
				return nil, invalid(sub(vp, "read_only"), "only read-only values are supported by weir-proxy")
			}
			fsp := sub(vp, "format_string")
			if err := onlyFields(v.GetFormatString(), fsp, "text_format_source"); err != nil {
				return nil, err
			}
			text, ok := v.GetFormatString().GetTextFormatSource().GetSpecifier().(*corev3.DataSource_InlineString)
			if !ok || strings.Contains(strings.ReplaceAll(text.InlineString, "%%", ""), "%") {
				return nil, invalid(fsp, "only a constant inline_string is supported by weir-proxy")
			}
			if _, dup := out[v.GetObjectKey()]; dup {
				// Envoy keeps the first read-only value; a config that
				// sets one twice is a mistake.
				return nil, invalid(sub(vp, "object_key"), "%q is set twice", v.GetObjectKey())
			}
			out[v.GetObjectKey()] = strings.ReplaceAll(text.InlineString, "%%", "%")
		}
	}
	return out, nil
}

// isTCPProxyChain reports whether a filter chain's one filter is a
// tcp_proxy, by its config type (or its name without one).
func isTCPProxyChain(fc *listenerv3.FilterChain) bool {
	fs := fc.GetFilters()
	if len(fs) != 1 {
		return false
	}
	if tc := fs[0].GetTypedConfig(); tc != nil {
		return tc.MessageName() == "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
	}
	return fs[0].GetName() == tcpProxyFilterName
}

func compileHCM(h *hcmv3.HttpConnectionManager, path string, env *compileEnv) (*hcmConf, error) {
	if err := pgv(h, path); err != nil {
		return nil, err
	}
	if err := onlyFields(h, path, "stat_prefix", "codec_type", "rds", "http_filters", "upgrade_configs",
		"stream_idle_timeout", "use_remote_address", "xff_num_trusted_hops", "normalize_path", "merge_slashes",
		"request_headers_timeout", "max_request_headers_kb", "common_http_protocol_options", "http2_protocol_options"); err != nil {
		return nil, err
	}
	codec, err := compileCodec(h, path)
	if err != nil {
		return nil, err
	}
	hc := &hcmConf{
		statPrefix:   h.GetStatPrefix(),
		streamIdle:   envoyStreamIdleTimeout,
		useRemote:    h.GetUseRemoteAddress().GetValue(),
		trustedHops:  h.GetXffNumTrustedHops(),
		normalize:    h.GetNormalizePath().GetValue(),
		mergeSlashes: h.GetMergeSlashes(),
		upgrades:     map[string]bool{},
		codec:        codec,
		h2base:       codec.h2Base(env.opts.Logger),
	}
	if h.GetCodecType() != hcmv3.HttpConnectionManager_AUTO {
		return nil, invalid(sub(path, "codec_type"), "%v is not supported by weir-proxy (AUTO only)", h.GetCodecType())
	}
	if d, ok := duration(h.GetStreamIdleTimeout()); ok {
		hc.streamIdle = d
	}
	rds := h.GetRds()
	if rds == nil {
		return nil, invalid(path, "rds is required (inline route_config is not supported by weir-proxy)")
	}
	if err := onlyFields(rds, sub(path, "rds"), "config_source", "route_config_name"); err != nil {
		return nil, err
	}
	if err := checkADS(rds.GetConfigSource(), sub(path, "rds.config_source")); err != nil {
		return nil, err
	}
	rt := env.routes[rds.GetRouteConfigName()]
	if rt == nil {
		return nil, fmt.Errorf("%s: route configuration %q: %w", sub(path, "rds.route_config_name"), rds.GetRouteConfigName(), ErrMissingResource)
	}
	hc.routes = rt

	filters, err := compileHTTPFilters(h.GetHttpFilters(), sub(path, "http_filters"), env.filterScope)
	if err != nil {
		return nil, err
	}
	hc.filters = filters

	for i, uc := range h.GetUpgradeConfigs() {
		p := idx(sub(path, "upgrade_configs"), i)
		if err := onlyFields(uc, p, "upgrade_type", "enabled"); err != nil {
			return nil, err
		}
		t := strings.ToLower(uc.GetUpgradeType())
		if t == "connect" {
			return nil, invalid(sub(p, "upgrade_type"), "CONNECT is not supported by weir-proxy")
		}
		enabled := true
		if uc.GetEnabled() != nil {
			enabled = uc.GetEnabled().GetValue()
		}
		hc.upgrades[t] = enabled
	}
	return hc, nil
}

// compileCodec reads the HCM fields that bound a connection, with
// Envoy's defaults for those unset.
func compileCodec(h *hcmv3.HttpConnectionManager, path string) (codecLimits, error) {
	c := envoyCodecDefaults
	if d, ok := duration(h.GetRequestHeadersTimeout()); ok {
		c.headersTimeout = d
	}
	if kb := h.GetMaxRequestHeadersKb(); kb != nil {
		c.head.maxBytes = int(kb.GetValue()) << 10
	}
	if o := h.GetCommonHttpProtocolOptions(); o != nil {
		p := sub(path, "common_http_protocol_options")
		if err := onlyFields(o, p, "idle_timeout", "max_headers_count"); err != nil {
			return c, err
		}
		if d, ok := duration(o.GetIdleTimeout()); ok {
			if d == 0 {
				return c, invalid(sub(p, "idle_timeout"), "0 (no idle timeout) is not supported by weir-proxy")
			}
			c.idleTimeout = d
		}
		if n := o.GetMaxHeadersCount(); n != nil {
			c.head.maxHeaders = int(n.GetValue())
		}
	}
	if o := h.GetHttp2ProtocolOptions(); o != nil {
		p := sub(path, "http2_protocol_options")
		if err := onlyFields(o, p, "max_concurrent_streams", "initial_stream_window_size", "initial_connection_window_size"); err != nil {
			return c, err
		}
		if v := o.GetMaxConcurrentStreams(); v != nil {
			c.maxStreams = v.GetValue()
		}
		if v := o.GetInitialStreamWindowSize(); v != nil {
			c.streamWindow = int32(v.GetValue())
		}
		if v := o.GetInitialConnectionWindowSize(); v != nil {
			c.connWindow = int32(v.GetValue())
		}
	}
	return c, nil
}

func compileTLS(ts *corev3.TransportSocket, path string, env *compileEnv) (*tls.Config, error) {
	if err := onlyFields(ts, path, "name", "typed_config"); err != nil {
		return nil, err
	}
	var dtc tlsv3.DownstreamTlsContext
	if err := unpack(ts.GetTypedConfig(), &dtc, sub(path, "typed_config")); err != nil {
		return nil, err
	}
	p := sub(path, "typed_config")
	if err := pgv(&dtc, p); err != nil {
		return nil, err
	}
	if err := onlyFields(&dtc, p, "common_tls_context", "require_client_certificate"); err != nil {
		return nil, err
	}
	ctx := dtc.GetCommonTlsContext()
	cp := sub(p, "common_tls_context")
	if err := onlyFields(ctx, cp, "tls_certificate_sds_secret_configs", "alpn_protocols", "validation_context"); err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: ctx.GetAlpnProtocols()}
	if err := clientValidation(cfg, ctx.GetValidationContext(), dtc.GetRequireClientCertificate().GetValue(), p); err != nil {
		return nil, err
	}
	for i, sds := range ctx.GetTlsCertificateSdsSecretConfigs() {
		sp := idx(sub(cp, "tls_certificate_sds_secret_configs"), i)
		if err := onlyFields(sds, sp, "name", "sds_config"); err != nil {
			return nil, err
		}
		if err := checkADS(sds.GetSdsConfig(), sub(sp, "sds_config")); err != nil {
			return nil, err
		}
		cert := env.secrets[sds.GetName()]
		if cert == nil {
			return nil, fmt.Errorf("%s: secret %q: %w", sub(sp, "name"), sds.GetName(), ErrMissingResource)
		}
		cfg.Certificates = append(cfg.Certificates, *cert)
	}
	if len(cfg.Certificates) == 0 {
		return nil, invalid(cp, "no certificate configured")
	}
	return cfg, nil
}

// clientValidation asks clients for a certificate as Envoy's
// validation_context and require_client_certificate say: with trusted_ca a
// presented certificate must chain to it, for client use (Envoy checks the
// "ssl_client" purpose: an extended key usage, if any, must allow
// clientAuth), or is taken either way (ACCEPT_UNTRUSTED);
// require_client_certificate refuses a handshake without one. The check
// runs in VerifyConnection, which Go also calls on a resumed session, and
// the chain has session ticket keys of its own, so a ticket from another
// chain or an earlier configuration cannot skip it.
func clientValidation(cfg *tls.Config, vc *tlsv3.CertificateValidationContext, require bool, path string) error {
	if vc == nil {
		if require {
			return invalid(sub(path, "require_client_certificate"), "needs common_tls_context.validation_context")
		}
		return nil
	}
	vp := sub(path, "common_tls_context.validation_context")
	if err := onlyFields(vc, vp, "trusted_ca", "trust_chain_verification", "max_verify_depth"); err != nil {
		return err
	}
	// Envoy's max_verify_depth counts the chain's certificates after the
	// leaf, the trust anchor included: 1 takes a leaf its CA signed.
	maxDepth := -1
	if d := vc.GetMaxVerifyDepth(); d != nil {
		// Envoy sets BoringSSL's depth to one less, and 0 acts as 1.
		maxDepth = max(int(d.GetValue()), 1)
	}
	pemData, err := inlineData(vc.GetTrustedCa(), sub(vp, "trusted_ca"))
	if err != nil {
		return err
	}
	roots, err := envoycheck.CABundle(pemData)
	if err != nil {
		return invalid(sub(vp, "trusted_ca"), "%v", err)
	}
	var ticketKey [32]byte
	if _, err := rand.Read(ticketKey[:]); err != nil {
		return err
	}
	cfg.SetSessionTicketKeys([][32]byte{ticketKey})
	// The CA names go in the certificate request, as Envoy sends them,
	// so a client with several certificates picks the right one.
	cfg.ClientCAs = roots
	cfg.ClientAuth = tls.RequestClientCert
	if require {
		cfg.ClientAuth = tls.RequireAnyClientCert
	}
	if vc.GetTrustChainVerification() == tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED {
		return nil
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil // only reached without require_client_certificate
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		chains, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			return err
		}
		if maxDepth >= 0 && !slices.ContainsFunc(chains, func(c []*x509.Certificate) bool { return len(c)-1 <= maxDepth }) {
			return fmt.Errorf("the client certificate's chain is longer than max_verify_depth %d", maxDepth)
		}
		return nil
	}
	return nil
}

// compileSecret parses a TLS certificate secret.
func compileSecret(s *tlsv3.Secret) (*tls.Certificate, error) {
	if err := pgv(s, ""); err != nil {
		return nil, err
	}
	if err := onlyFields(s, "", "name", "tls_certificate"); err != nil {
		return nil, err
	}
	tc := s.GetTlsCertificate()
	if tc == nil {
		return nil, invalid("tls_certificate", "required")
	}
	if err := onlyFields(tc, "tls_certificate", "certificate_chain", "private_key"); err != nil {
		return nil, err
	}
	chain, err := inlineData(tc.GetCertificateChain(), "tls_certificate.certificate_chain")
	if err != nil {
		return nil, err
	}
	key, err := inlineData(tc.GetPrivateKey(), "tls_certificate.private_key")
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, invalid("tls_certificate", "invalid certificate or key: %v", err)
	}
	if err := envoycheck.Certificate(cert.Leaf); err != nil {
		return nil, invalid("tls_certificate.certificate_chain", "%v", err)
	}
	return &cert, nil
}

func inlineData(ds *corev3.DataSource, path string) ([]byte, error) {
	if ds == nil {
		return nil, invalid(path, "required")
	}
	if err := onlyFields(ds, path, "inline_bytes", "inline_string"); err != nil {
		return nil, err
	}
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	}
	return nil, invalid(path, "only inline_bytes and inline_string are supported by weir-proxy")
}
