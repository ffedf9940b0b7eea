package gateway_test

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/gateway"
	"github.com/weir-dev/weir/pkg/translate"
)

// TestBackendTLSPolicy: a policy makes the backends of the Service port it
// targets connect over TLS with its CA, hostname and SANs; a policy for a
// port wins over one for the whole Service; of two for the same target the
// first by age and name applies and the other is Conflicted; a policy that
// cannot be honoured makes its backend answer 500 (never plaintext) and
// says why, while the route's own references stay resolved; status is per
// Gateway that routes to the Service, and a policy nobody routes to has
// none.
func TestBackendTLSPolicy(t *testing.T) {
	ca, _ := selfSigned(t, "backend-ca")
	svc := func(name string, ports ...string) string {
		var ps []string
		for i, p := range ports {
			ps = append(ps, fmt.Sprintf("{name: %s, port: %d}", p, 443+i))
		}
		return fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: default}\nspec: {ports: [%s]}\n---\n", name, strings.Join(ps, ", "))
	}
	policy := func(name, service, section, validation string) string {
		target := fmt.Sprintf("{group: \"\", kind: Service, name: %s}", service)
		if section != "" {
			target = fmt.Sprintf("{group: \"\", kind: Service, name: %s, sectionName: %s}", service, section)
		}
		return fmt.Sprintf("apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: %s, namespace: default}\nspec:\n  targetRefs: [%s]\n  validation: %s\n---\n", name, target, validation)
	}
	withCA := func(cm, host string) string {
		return fmt.Sprintf("{hostname: %s, caCertificateRefs: [{group: \"\", kind: ConfigMap, name: %s}]}", host, cm)
	}
	rule := func(path, service string, port int) string {
		return fmt.Sprintf("  - matches: [{path: {type: Exact, value: %s}}]\n    backendRefs: [{name: %s, port: %d}]\n", path, service, port)
	}
	docs := fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ca, namespace: default}\ndata:\n  ca.crt: |\n%s\n---\n", indent(ca)) +
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: not-a-ca, namespace: default}\ndata: {ca.crt: hello}\n---\n" +
		svc("secure", "https") + svc("dup", "https") + svc("multi", "p1", "p2") + svc("bad-kind", "https") + svc("bad-ca", "https") + svc("unused", "https") +
		policy("secure", "secure", "https", `{hostname: abc.example.com, caCertificateRefs: [{group: "", kind: ConfigMap, name: ca}], subjectAltNames: [{type: URI, uri: "spiffe://abc.example.com/id"}, {type: Hostname, hostname: alt.example.com}]}`) +
		policy("a-dup", "dup", "", withCA("ca", "first.example.com")) +
		policy("b-dup", "dup", "", withCA("ca", "second.example.com")) +
		policy("multi-port", "multi", "p1", withCA("ca", "port.example.com")) +
		policy("multi-all", "multi", "", withCA("ca", "all.example.com")) +
		policy("bad-kind", "bad-kind", "", `{hostname: abc.example.com, caCertificateRefs: [{group: example.com, kind: Bundle, name: ca}]}`) +
		policy("bad-ca", "bad-ca", "", withCA("not-a-ca", "abc.example.com")) +
		policy("unused", "unused", "", withCA("ca", "abc.example.com")) +
		"apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n---\n" +
		"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n" +
		rule("/secure", "secure", 443) + rule("/dup", "dup", 443) + rule("/p1", "multi", 443) + rule("/p2", "multi", 444) +
		rule("/bad-kind", "bad-kind", 443) + rule("/bad-ca", "bad-ca", 443)
	res := build(t, docs)

	if got := routeCondition(t, res, "default", "r", "ResolvedRefs"); got != "True/ResolvedRefs" {
		t.Errorf("route ResolvedRefs = %s: a policy's problem is the policy's, not the route's", got)
	}
	backends := map[string]*ir.Backend{}
	for _, be := range res.Fragments[0].Backends {
		backends[be.Name] = be
	}
	serverName := func(name string) string {
		be := backends[name]
		if be == nil {
			return "not served"
		}
		if be.TLS == nil {
			return "plaintext"
		}
		return be.TLS.ServerName
	}
	for name, want := range map[string]string{
		"default/secure:443":   "abc.example.com",
		"default/dup:443":      "first.example.com",
		"default/multi:443":    "port.example.com",
		"default/multi:444":    "all.example.com",
		"default/bad-kind:443": "not served",
		"default/bad-ca:443":   "not served",
	} {
		if got := serverName(name); got != want {
			t.Errorf("backend %s connects with TLS to %s, want %s", name, got, want)
		}
	}
	if tls := backends["default/secure:443"].TLS; tls != nil {
		if !strings.Contains(tls.CACertificates, strings.TrimSpace(string(ca))) {
			t.Errorf("CA bundle %q lacks the ConfigMap's certificate", tls.CACertificates)
		}
		want := []ir.SubjectAltName{{URI: true, Value: "spiffe://abc.example.com/id"}, {Value: "alt.example.com"}}
		if fmt.Sprint(tls.SubjectAltNames) != fmt.Sprint(want) {
			t.Errorf("SANs %v, want %v", tls.SubjectAltNames, want)
		}
	}
	// A rule whose only backend is refused answers 500, as with an
	// invalid one.
	refused := 0
	for _, vh := range res.Fragments[0].VirtualHosts {
		for _, r := range vh.Routes {
			if r.Match.Path.Value == "/bad-kind" || r.Match.Path.Value == "/bad-ca" {
				refused++
				if len(r.Backends) != 0 || r.DirectResponse == nil || r.DirectResponse.StatusCode != 500 {
					t.Errorf("route %s backends %+v, direct response %+v, want 500", r.Match.Path.Value, r.Backends, r.DirectResponse)
				}
			}
		}
	}
	if refused != 2 {
		t.Errorf("found %d of the 2 refused routes", refused)
	}

	for _, tc := range []struct{ policy, typ, want string }{
		{"secure", "Accepted", "True/Accepted"},
		{"secure", "ResolvedRefs", "True/ResolvedRefs"},
		{"a-dup", "Accepted", "True/Accepted"},
		{"b-dup", "Accepted", "False/Conflicted"},
		{"multi-port", "Accepted", "True/Accepted"},
		{"multi-all", "Accepted", "True/Accepted"},
		{"bad-kind", "Accepted", "False/NoValidCACertificate"},
		{"bad-kind", "ResolvedRefs", "False/InvalidKind"},
		{"bad-ca", "Accepted", "False/NoValidCACertificate"},
		{"bad-ca", "ResolvedRefs", "False/InvalidCACertificateRef"},
	} {
		st := res.BackendTLSPolicies[types.NamespacedName{Namespace: "default", Name: tc.policy}]
		if st == nil || len(st.Ancestors) != 1 {
			t.Errorf("policy %s status %+v, want one ancestor", tc.policy, st)
			continue
		}
		a := st.Ancestors[0]
		if a.AncestorRef.Name != "gw" || a.ControllerName != gateway.ControllerName {
			t.Errorf("policy %s ancestor %+v", tc.policy, a)
		}
		if got := condition(a.Conditions, tc.typ); got != tc.want {
			t.Errorf("policy %s %s = %s, want %s", tc.policy, tc.typ, got, tc.want)
		}
	}
	if st := res.BackendTLSPolicies[types.NamespacedName{Namespace: "default", Name: "unused"}]; st == nil || len(st.Ancestors) != 0 {
		t.Errorf("unused policy status %+v, want no ancestors", st)
	}
}

// TestGatewayBackendClientCertificate: a Gateway's
// spec.tls.backend.clientCertificateRef is presented on its TLS backend
// connections (and only its: another Gateway routing to the same
// Service presents none); a reference that cannot be used makes the
// Gateway's ResolvedRefs false with the spec's reason, and the Gateway
// stays Accepted.
func TestGatewayBackendClientCertificate(t *testing.T) {
	ca, _ := selfSigned(t, "backend-ca")
	crt, key := selfSigned(t, "gateway-client")
	crt2, key2 := selfSigned(t, "other-gateway-client")
	gw := func(name, ref string) string {
		return fmt.Sprintf("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: %s, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n  tls: {backend: {clientCertificateRef: %s}}\n---\n", name, ref)
	}
	docs := fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ca, namespace: default}\ndata:\n  ca.crt: |\n%s\n---\n", indent(ca)) +
		fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: client, namespace: default}\ntype: kubernetes.io/tls\ndata: {tls.crt: %s, tls.key: %s}\n---\n", base64.StdEncoding.EncodeToString(crt), base64.StdEncoding.EncodeToString(key)) +
		fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: elsewhere, namespace: other}\ntype: kubernetes.io/tls\ndata: {tls.crt: %s, tls.key: %s}\n---\n", base64.StdEncoding.EncodeToString(crt), base64.StdEncoding.EncodeToString(key)) +
		"apiVersion: v1\nkind: Secret\nmetadata: {name: opaque, namespace: default}\ntype: Opaque\ndata: {}\n---\n" +
		"apiVersion: v1\nkind: Service\nmetadata: {name: secure, namespace: default}\nspec: {ports: [{name: https, port: 443}]}\n---\n" +
		"apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: secure, namespace: default}\nspec:\n  targetRefs: [{group: \"\", kind: Service, name: secure}]\n  validation: {hostname: secure.example.com, caCertificateRefs: [{group: \"\", kind: ConfigMap, name: ca}]}\n---\n" +
		fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: other-client, namespace: default}\ntype: kubernetes.io/tls\ndata: {tls.crt: %s, tls.key: %s}\n---\n", base64.StdEncoding.EncodeToString(crt2), base64.StdEncoding.EncodeToString(key2)) +
		gw("with-cert", "{name: client}") + gw("other-cert", "{name: other-client}") +
		"apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: without, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n---\n" +
		gw("missing", "{name: nope}") + gw("opaque", "{name: opaque}") + gw("kind", "{kind: ConfigMap, group: \"\", name: ca}") +
		gw("no-grant", "{name: elsewhere, namespace: other}") +
		"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: with-cert}, {name: other-cert}, {name: without}]\n  rules: [{backendRefs: [{name: secure, port: 443}]}]\n"
	res := build(t, docs)

	for _, tc := range []struct{ gateway, want string }{
		{"with-cert", "True/ResolvedRefs"},
		{"other-cert", "True/ResolvedRefs"},
		{"without", "True/ResolvedRefs"},
		{"missing", "False/InvalidClientCertificateRef"},
		{"opaque", "False/InvalidClientCertificateRef"},
		{"kind", "False/InvalidClientCertificateRef"},
		{"no-grant", "False/RefNotPermitted"},
	} {
		st := res.Gateways[types.NamespacedName{Namespace: "default", Name: tc.gateway}]
		if got := condition(st.Conditions, "ResolvedRefs"); got != tc.want {
			t.Errorf("Gateway %s ResolvedRefs = %s, want %s", tc.gateway, got, tc.want)
		}
		if got := condition(st.Conditions, "Accepted"); got != "True/Accepted" {
			t.Errorf("Gateway %s Accepted = %s", tc.gateway, got)
		}
	}
	// Each Gateway's route goes to a backend of its own fragment that
	// presents that Gateway's certificate (or none).
	presented := map[string]string{}
	for _, f := range res.Fragments {
		if f.Source.Name != "with-cert" && f.Source.Name != "other-cert" && f.Source.Name != "without" {
			continue
		}
		ref := f.VirtualHosts[0].Routes[0].Backends[0].BackendName
		i := slices.IndexFunc(f.Backends, func(be *ir.Backend) bool { return be.Name == ref })
		if i < 0 || f.Backends[i].TLS == nil {
			t.Errorf("Gateway %s routes to %q, which its fragment does not hold with TLS", f.Source.Name, ref)
			continue
		}
		c := f.Backends[i].TLS.ClientCertificate
		presented[f.Source.Name] = ref + " presents " + c
		if c != "" && !slices.ContainsFunc(f.Certificates, func(fc *ir.Certificate) bool { return fc.Name == c }) {
			t.Errorf("Gateway %s presents %q, which its fragment does not hold", f.Source.Name, c)
		}
	}
	want := map[string]string{
		"with-cert":  "default/secure:443+client-cert=default/client presents default/client",
		"other-cert": "default/secure:443+client-cert=default/other-client presents default/other-client",
		"without":    "default/secure:443 presents ",
	}
	if fmt.Sprint(presented) != fmt.Sprint(want) {
		t.Errorf("client certificates presented\n got %v\nwant %v", presented, want)
	}

	// weir run translates every Gateway into one cluster table: each
	// cluster must still carry its own Gateway's certificate.
	tr, err := translate.New(translate.DefaultOptions()).Translate(res.Fragments)
	if err != nil {
		t.Fatal(err)
	}
	sdsOf := map[string]string{}
	for _, c := range tr.Clusters {
		if !strings.HasPrefix(c.GetName(), "default/secure:443") {
			continue
		}
		var ctx tlsv3.UpstreamTlsContext
		if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&ctx); err != nil {
			t.Fatalf("cluster %s: %v", c.GetName(), err)
		}
		var names []string
		for _, s := range ctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
			names = append(names, s.GetName())
		}
		sdsOf[c.GetName()] = strings.Join(names, ",")
	}
	if len(sdsOf) != 3 || strings.Contains(sdsOf["default/secure:443"], "client") ||
		!strings.HasSuffix(sdsOf["default/secure:443+client-cert=default/client"], "default/client") ||
		!strings.HasSuffix(sdsOf["default/secure:443+client-cert=default/other-client"], "default/other-client") {
		t.Errorf("clusters and the client certificates they present: %v", sdsOf)
	}
	for _, p := range tr.Problems {
		if strings.Contains(p.Message, "secure") {
			t.Errorf("problem: %v", p)
		}
	}
}

// TestXDSCredentialsAreNeverServed: a Secret that holds Weir's own xDS
// credentials cannot be a listener's certificate, even in its namespace.
func TestXDSCredentialsAreNeverServed(t *testing.T) {
	crt, key := selfSigned(t, "weir xDS CA")
	res := build(t, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: weir-gateway-xds, namespace: default, labels: {weir.dev/xds-identity: gateway}}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: weir
  listeners:
  - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: weir-gateway-xds}]}}
`, base64.StdEncoding.EncodeToString(crt), base64.StdEncoding.EncodeToString(key)))
	if got := listenerCondition(t, res, "https", "ResolvedRefs"); got != "False/InvalidCertificateRef" {
		t.Errorf("listener ResolvedRefs = %s, want False/InvalidCertificateRef", got)
	}
	for _, f := range res.Fragments {
		if len(f.Certificates) > 0 {
			t.Errorf("Gateway %s serves %d certificates", f.Source.Name, len(f.Certificates))
		}
	}
}
