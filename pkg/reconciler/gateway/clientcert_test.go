package gateway_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/weir-dev/weir/pkg/ir"
)

// selfSigned returns a PEM certificate and key for cn.
func selfSigned(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func indent(b []byte) string {
	return "    " + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n    ")
}

// TestFrontendClientValidation: each HTTPS listener takes the client CA of
// its port (perPort, else default) from a ConfigMap; a reference that
// cannot be read makes the listener's ResolvedRefs false with the spec's
// reason, and with no CA left the listener is not accepted (it would let
// nobody in, or everybody); an HTTP listener is untouched.
func TestFrontendClientValidation(t *testing.T) {
	ca, _ := selfSigned(t, "client-ca")
	crt, key := selfSigned(t, "gw.example.com")
	res := build(t, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: server, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: client-ca, namespace: default}
data:
  ca.crt: |
%s
---
apiVersion: v1
kind: ConfigMap
metadata: {name: other-ca, namespace: team-a}
data:
  ca.crt: |
%s
---
apiVersion: v1
kind: ConfigMap
metadata: {name: not-a-ca, namespace: default}
data: {ca.crt: "hello"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: weir
  tls:
    frontend:
      default:
        validation:
          caCertificateRefs: [{kind: ConfigMap, group: "", name: client-ca}]
      perPort:
      - port: 8443
        tls: {validation: {mode: AllowInsecureFallback, caCertificateRefs: [{kind: ConfigMap, group: "", name: client-ca}]}}
      - port: 7443
        tls: {validation: {caCertificateRefs: [{kind: ConfigMap, group: "", name: missing}]}}
      - port: 6443
        tls: {validation: {caCertificateRefs: [{kind: Service, group: "", name: svc}]}}
      - port: 5443
        tls: {validation: {caCertificateRefs: [{kind: ConfigMap, group: "", name: other-ca, namespace: team-a}]}}
      - port: 4443
        tls: {validation: {caCertificateRefs: [{kind: ConfigMap, group: "", name: not-a-ca}, {kind: ConfigMap, group: "", name: client-ca}]}}
  listeners:
  - {name: default, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: server}]}}
  - {name: fallback, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: server}]}}
  - {name: missing, port: 7443, protocol: HTTPS, tls: {certificateRefs: [{name: server}]}}
  - {name: kind, port: 6443, protocol: HTTPS, tls: {certificateRefs: [{name: server}]}}
  - {name: no-grant, port: 5443, protocol: HTTPS, tls: {certificateRefs: [{name: server}]}}
  - {name: one-bad, port: 4443, protocol: HTTPS, tls: {certificateRefs: [{name: server}]}}
  - {name: plain, port: 80, protocol: HTTP}
`, base64.StdEncoding.EncodeToString(crt), base64.StdEncoding.EncodeToString(key), indent(ca), indent(ca)))

	for _, tc := range []struct{ listener, typ, want string }{
		{"default", "Accepted", "True/Accepted"},
		{"default", "ResolvedRefs", "True/ResolvedRefs"},
		{"fallback", "Programmed", "True/Programmed"},
		{"missing", "ResolvedRefs", "False/InvalidCACertificateRef"},
		{"missing", "Accepted", "False/NoValidCACertificate"},
		{"kind", "ResolvedRefs", "False/InvalidCACertificateKind"},
		{"kind", "Accepted", "False/NoValidCACertificate"},
		{"no-grant", "ResolvedRefs", "False/RefNotPermitted"},
		{"no-grant", "Accepted", "False/NoValidCACertificate"},
		// One CA read: served with it, and the bad reference reported.
		{"one-bad", "ResolvedRefs", "False/InvalidCACertificateRef"},
		{"one-bad", "Programmed", "True/Programmed"},
		{"plain", "Programmed", "True/Programmed"},
	} {
		if got := listenerCondition(t, res, tc.listener, tc.typ); got != tc.want {
			t.Errorf("listener %s %s = %s, want %s", tc.listener, tc.typ, got, tc.want)
		}
	}
	st := res.Gateways[types.NamespacedName{Namespace: "default", Name: "gw"}]
	if got := condition(st.Conditions, "InsecureFrontendValidationMode"); got != "True/ConfigurationChanged" {
		t.Errorf("InsecureFrontendValidationMode = %s", got)
	}
	served := map[string]*ir.ClientValidation{}
	for _, l := range res.Fragments[0].Listeners {
		served[l.Name] = l.ClientValidation
	}
	if cv := served["default"]; cv == nil || cv.AllowInsecureFallback || !strings.Contains(string(cv.CACertificates), strings.TrimSpace(string(ca))) {
		t.Errorf("default listener validation %+v", cv)
	}
	if cv := served["one-bad"]; cv == nil || strings.Contains(string(cv.CACertificates), "hello") || !strings.Contains(string(cv.CACertificates), strings.TrimSpace(string(ca))) {
		t.Errorf("one-bad listener validation %+v, want the readable CA alone", cv)
	}
	if cv := served["fallback"]; cv == nil || !cv.AllowInsecureFallback {
		t.Errorf("fallback listener validation %+v", cv)
	}
	if cv, ok := served["plain"]; !ok || cv != nil {
		t.Errorf("plain listener validation %+v (served %v), want none", cv, ok)
	}
	for _, name := range []string{"missing", "kind", "no-grant"} {
		if _, ok := served[name]; ok {
			t.Errorf("listener %s is served without its client CA", name)
		}
	}
}
