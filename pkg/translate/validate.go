package translate

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weir-dev/weir/pkg/ir"
)

// Validate checks r the way Envoy checks config before accepting it: it
// calls ValidateAll on every resource and on the typed configs packed inside
// them, checks the rules that span resources, which ValidateAll cannot see
// (unique domains, clusters that routes refer to, unique server names, ...),
// the Envoy acceptance rules of accept.go (server names as Envoy keys
// them, keys Envoy loads, regex program sizes), and that every resource
// marshals. Each error names the resource.
//
// It costs about as much as marshaling everything: it is meant for tests
// and for diagnosing a NACK, not for every push.
func (r *Resources) Validate() error {
	v := validator{clusters: map[string]*clusterv3.Cluster{}, routes: map[string]bool{}, secrets: map[string]bool{}, hcms: map[*anypb.Any]*hcmv3.HttpConnectionManager{}}
	for _, c := range r.Clusters {
		v.check("cluster", c.GetName(), c.ValidateAll())
		for key, opts := range c.GetTypedExtensionProtocolOptions() {
			_, err := unpackAndValidate(opts)
			v.check("cluster", c.GetName(), prefixErr("typed_extension_protocol_options["+key+"]", err))
		}
		v.unique("cluster", c.GetName(), v.clusters[c.GetName()] != nil)
		v.clusters[c.GetName()] = c
	}
	eds := map[string]bool{}
	for _, e := range r.Endpoints {
		name := e.GetClusterName()
		v.check("cluster load assignment", name, e.ValidateAll())
		v.unique("cluster load assignment", name, eds[name])
		eds[name] = true
		if c := v.clusters[name]; c == nil || c.GetType() != clusterv3.Cluster_EDS {
			v.fail("cluster load assignment", name, errors.New("no EDS cluster of that name"))
		}
	}
	for name, c := range v.clusters {
		if c.GetType() == clusterv3.Cluster_EDS && !eds[name] {
			v.fail("cluster", name, errors.New("EDS cluster without a cluster load assignment"))
		}
	}
	for _, s := range r.Secrets {
		v.check("secret", s.GetName(), s.ValidateAll())
		tc := s.GetTlsCertificate()
		v.check("secret", s.GetName(), prefixErr("tls_certificate", checkKeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())))
		v.unique("secret", s.GetName(), v.secrets[s.GetName()])
		v.secrets[s.GetName()] = true
	}
	for name, c := range v.clusters {
		if ts := c.GetTransportSocket(); ts != nil {
			m, err := unpackAndValidate(ts.GetTypedConfig())
			v.check("cluster", name, prefixErr("transport_socket", err))
			if tls, ok := m.(*tlsv3.UpstreamTlsContext); ok {
				for _, sds := range tls.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
					if !v.secrets[sds.GetName()] {
						v.fail("cluster", name, fmt.Errorf("transport_socket: unknown secret %q", sds.GetName()))
					}
				}
			}
		}
	}
	for _, rc := range r.Routes {
		v.check("route configuration", rc.GetName(), rc.ValidateAll())
		v.unique("route configuration", rc.GetName(), v.routes[rc.GetName()])
		v.routes[rc.GetName()] = true
		v.routeConfiguration(rc)
	}
	listeners := map[string]bool{}
	for _, l := range r.Listeners {
		v.check("listener", l.GetName(), l.ValidateAll())
		v.unique("listener", l.GetName(), listeners[l.GetName()])
		listeners[l.GetName()] = true
		v.listener(l.GetName(), l.GetListenerFilters(), l.GetFilterChains())
	}
	for _, m := range slices.Concat(
		asResources(r.Listeners), asResources(r.Routes), asResources(r.Clusters),
		asResources(r.Endpoints), asResources(r.Secrets)) {
		if _, err := proto.Marshal(m); err != nil {
			v.fail(fmt.Sprintf("%T", m), resourceName(m), err)
		}
	}
	return errors.Join(v.errs...)
}

func resourceName(m proto.Message) string {
	if n, ok := m.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	if n, ok := m.(interface{ GetClusterName() string }); ok {
		return n.GetClusterName()
	}
	return ""
}

type validator struct {
	errs     []error
	clusters map[string]*clusterv3.Cluster
	routes   map[string]bool
	secrets  map[string]bool
	// hcms caches unpacked connection managers; chains share one Any.
	hcms map[*anypb.Any]*hcmv3.HttpConnectionManager
}

func (v *validator) fail(kind, name string, err error) {
	v.errs = append(v.errs, fmt.Errorf("%s %q: %w", kind, name, err))
}

func (v *validator) check(kind, name string, err error) {
	if err != nil {
		v.fail(kind, name, err)
	}
}

func (v *validator) unique(kind, name string, dup bool) {
	if dup {
		v.fail(kind, name, errors.New("duplicate name"))
	}
}

func prefixErr(prefix string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

// unpackAndValidate unpacks a typed config and validates it.
func unpackAndValidate(a *anypb.Any) (any, error) {
	m, err := a.UnmarshalNew()
	if err != nil {
		return nil, err
	}
	if vm, ok := m.(interface{ ValidateAll() error }); ok {
		if err := vm.ValidateAll(); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (v *validator) routeConfiguration(rc *routev3.RouteConfiguration) {
	fail := func(err error) { v.fail("route configuration", rc.GetName(), err) }
	names := map[string]bool{}
	domains := map[string]string{}
	for _, vh := range rc.GetVirtualHosts() {
		if names[vh.GetName()] {
			fail(fmt.Errorf("virtual host %q: duplicate name", vh.GetName()))
		}
		names[vh.GetName()] = true
		for _, d := range vh.GetDomains() {
			// Envoy folds ASCII only; anything else would be a name
			// another tenant's could fold into here.
			if c, err := canonicalHost(d); err != nil || c != d {
				fail(fmt.Errorf("virtual host %q: domain %q is not in canonical form (%v)", vh.GetName(), d, err))
			} else if err := checkDomainWildcard(d); err != nil {
				fail(fmt.Errorf("virtual host %q: domain %q: %w", vh.GetName(), d, err))
			}
			d = ir.LowerASCII(d)
			if other, ok := domains[d]; ok {
				fail(fmt.Errorf("domain %q in virtual hosts %q and %q", d, other, vh.GetName()))
			}
			domains[d] = vh.GetName()
		}
		for i, r := range vh.GetRoutes() {
			if err := v.route(r, rc.GetValidateClusters().GetValue()); err != nil {
				fail(fmt.Errorf("virtual host %q route %d: %w", vh.GetName(), i, err))
			}
		}
	}
}

// route checks what Envoy checks when it loads a route, beyond the protos'
// own rules.
func (v *validator) route(r *routev3.Route, validateClusters bool) error {
	// Without validate_clusters Envoy accepts any name; translate uses
	// that for InvalidBackendCluster alone, so any other is a bug.
	known := func(c string) bool { return v.clusters[c] != nil || !validateClusters && c == InvalidBackendCluster }
	var errs []error
	if re := r.GetMatch().GetSafeRegex(); re != nil {
		errs = append(errs, prefixErr("path regex", checkRegex(re.GetRegex())))
	}
	for _, h := range r.GetMatch().GetHeaders() {
		if re := h.GetStringMatch().GetSafeRegex(); re != nil {
			errs = append(errs, prefixErr("header regex", checkRegex(re.GetRegex())))
		}
	}
	errs = append(errs, checkMutation(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove()))
	if a := r.GetRoute(); a != nil {
		if c := a.GetCluster(); c != "" && !known(c) {
			errs = append(errs, fmt.Errorf("unknown cluster %q", c))
		}
		if wc := a.GetWeightedClusters(); wc != nil {
			var total uint64
			for _, c := range wc.GetClusters() {
				if !known(c.GetName()) {
					errs = append(errs, fmt.Errorf("unknown cluster %q", c.GetName()))
				}
				if c.GetWeight() == nil {
					errs = append(errs, fmt.Errorf("cluster %q: no weight", c.GetName()))
				}
				total += uint64(c.GetWeight().GetValue())
				errs = append(errs, checkMutation(c.GetRequestHeadersToAdd(), c.GetRequestHeadersToRemove()))
			}
			if total == 0 || total > math.MaxUint32 {
				errs = append(errs, fmt.Errorf("weights add up to %d", total))
			}
		}
	}
	return errors.Join(errs...)
}

func checkMutation(add []*corev3.HeaderValueOption, remove []string) error {
	for _, h := range add {
		if !modifiableHeader(h.GetHeader().GetKey()) || !httpguts.ValidHeaderFieldName(h.GetHeader().GetKey()) {
			return fmt.Errorf("header %q cannot be set", h.GetHeader().GetKey())
		}
	}
	for _, h := range remove {
		if !modifiableHeader(h) {
			return fmt.Errorf("header %q cannot be removed", h)
		}
	}
	return nil
}

func (v *validator) listener(name string, filters []*listenerv3.ListenerFilter, chains []*listenerv3.FilterChain) {
	fail := func(err error) { v.fail("listener", name, err) }
	for _, f := range filters {
		if _, err := unpackAndValidate(f.GetTypedConfig()); err != nil {
			fail(fmt.Errorf("listener filter %q: %w", f.GetName(), err))
		}
	}
	if len(chains) == 0 {
		fail(errors.New("no filter chain"))
	}
	serverNames := map[string]int{}
	for i, fc := range chains {
		for _, sn := range fc.GetFilterChainMatch().GetServerNames() {
			// Envoy's filter chain manager keys "*.x" as ".x", the key of
			// a literal ".x" too, after ASCII lower-casing.
			key := ir.LowerASCII(sn)
			if strings.HasPrefix(key, "*.") {
				key = key[1:]
			} else if strings.Contains(key, "*") {
				fail(fmt.Errorf("server name %q: partial wildcards are not supported", sn))
			}
			if j, ok := serverNames[key]; ok {
				fail(fmt.Errorf("server name %q in filter chains %d and %d: multiple filter chains with overlapping matching rules", sn, j, i))
			}
			serverNames[key] = i
		}
		if ts := fc.GetTransportSocket(); ts != nil {
			m, err := unpackAndValidate(ts.GetTypedConfig())
			if err != nil {
				fail(fmt.Errorf("filter chain %d transport socket: %w", i, err))
			} else if tls, ok := m.(*tlsv3.DownstreamTlsContext); ok {
				for _, sds := range tls.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
					if !v.secrets[sds.GetName()] {
						fail(fmt.Errorf("filter chain %d: unknown secret %q", i, sds.GetName()))
					}
				}
			}
		}
		for _, f := range fc.GetFilters() {
			a := f.GetTypedConfig()
			hcm, seen := v.hcms[a]
			if !seen {
				m, err := unpackAndValidate(a)
				if err != nil {
					fail(fmt.Errorf("filter chain %d filter %q: %w", i, f.GetName(), err))
					continue
				}
				hcm, _ = m.(*hcmv3.HttpConnectionManager)
				v.hcms[a] = hcm
				for _, hf := range hcm.GetHttpFilters() {
					if _, err := unpackAndValidate(hf.GetTypedConfig()); err != nil {
						fail(fmt.Errorf("http filter %q: %w", hf.GetName(), err))
					}
				}
			}
			if rds := hcm.GetRds(); rds != nil && !v.routes[rds.GetRouteConfigName()] {
				fail(fmt.Errorf("unknown route configuration %q", rds.GetRouteConfigName()))
			}
		}
	}
}
