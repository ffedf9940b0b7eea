package translate

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/weir-dev/weir/pkg/ir"
)

func TestCanonicalHost(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "Hello.Example.COM", want: "hello.example.com"},
		{in: "*.Wild.example.com", want: "*.wild.example.com"},
		{in: "\u212Aube.example.com", err: "not ASCII"}, // Kelvin sign: strings.ToLower makes it "kube..."
		{in: "b\u00fccher.example", err: "not ASCII"},
		{in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
		{in: "", err: "empty"},
		{in: "a b.example.com", err: "control character or space"},
		{in: "a\r\nb", err: "control character"},
		{in: "\xff.example.com", err: "not ASCII"},
	} {
		got, err := canonicalHost(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("canonicalHost(%q) = %q, %v; want an error with %q", tc.in, got, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("canonicalHost(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestCanonicalServerName: the inputs Envoy's filter chain manager keys
// alike come out equal, and those it refuses are refused.
func TestCanonicalServerName(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "*.x.example.com", want: "*.x.example.com"},
		{in: ".x.example.com", want: "*.x.example.com"}, // Envoy's key for both is ".x.example.com"
		{in: "A.Example.com", want: "a.example.com"},
		{in: "*", err: "wildcard"},
		{in: "*.", err: "wildcard"},
		{in: ".", err: "wildcard"}, // becomes "*.", which matches nothing
		{in: "a.*.example.com", err: "wildcard"},
		{in: "*x.example.com", err: "wildcard"},
		{in: "x.example.*", err: "wildcard"},
	} {
		got, err := canonicalServerName(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("canonicalServerName(%q) = %q, %v; want an error with %q", tc.in, got, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("canonicalServerName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func pairWith(t *testing.T, key crypto.Signer) (chain, keyPEM []byte) {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weir test"},
		DNSNames: []string{"a.example.com"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// TestCheckKeyPair mirrors the key checks of Envoy's TLS context: Go's
// tls.X509KeyPair accepts every one of these.
func TestCheckKeyPair(t *testing.T) {
	rsaKey := func(bits int) crypto.Signer {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	ecKey := func(c elliptic.Curve) crypto.Signer {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		err  string
	}{
		{"RSA 1024", rsaKey(1024), "RSA key of 1024 bits"},
		{"RSA 2048", rsaKey(2048), ""},
		{"ECDSA P-224", ecKey(elliptic.P224()), "curve P-224"},
		{"ECDSA P-256", ecKey(elliptic.P256()), ""},
		{"ECDSA P-384", ecKey(elliptic.P384()), ""},
		{"ECDSA P-521", ecKey(elliptic.P521()), ""},
		{"Ed25519", ed, ""},
	} {
		chain, key := pairWith(t, tc.key)
		err := checkKeyPair(chain, key)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v, want accepted", tc.name, err)
		}
	}
}

// TestRegexProgramSize: a regex over Envoy's default RE2 program size of
// 100 is served (the bootstrap raises the limit), one over the raised
// limit is left out with a problem on its object, and the rest is served.
func TestRegexProgramSize(t *testing.T) {
	f := service("default", "re", 100)
	vh := f.VirtualHosts[0]
	ok := *vh.Routes[0]
	ok.Name, ok.Match.Path = "api", ir.PathMatch{Kind: ir.PathRegex, Value: `^/api/v[0-9]{1,3}/users/[a-z0-9-]{1,64}$`} // 271 in RE2
	huge := *vh.Routes[0]
	huge.Name, huge.Match.Path = "letters", ir.PathMatch{Kind: ir.PathRegex, Value: `/\pL{40}`} // about 48,000 in RE2
	vh.Routes = []*ir.Route{&ok, &huge, vh.Routes[0]}
	res := mustTranslate(t, []*ir.Fragment{f})
	var names []string
	for _, r := range routeConfig(t, res, "external-http").GetVirtualHosts()[0].GetRoutes() {
		names = append(names, r.GetMatch().GetSafeRegex().GetRegex())
	}
	if len(names) != 2 || names[0] != ok.Match.Path.Value {
		t.Errorf("routes' regexes = %q, want the api regex and the prefix route", names)
	}
	ps := res.ProblemsBySource()[f.Source]
	if len(ps) != 1 || !strings.Contains(ps[0].Message, `route "letters" left out`) || !strings.Contains(ps[0].Message, "re2.max_program_size") {
		t.Errorf("problems = %+v, want the letters route left out for its program size", ps)
	}
}

func TestCheckDomainWildcard(t *testing.T) {
	for d, ok := range map[string]bool{
		"*": true, "*.example.com": true, "*-bar.example.com": true, "foo.*": true, "example.com": true,
		"a.*.example.com": false, "*.example.*": false, "**": false, "*foo*": false,
	} {
		if err := checkDomainWildcard(d); (err == nil) != ok {
			t.Errorf("checkDomainWildcard(%q) = %v, want accepted=%v", d, err, ok)
		}
	}
}

// TestCheckLeafNames mirrors Envoy's server context: a certificate needs a
// subject CN or a SAN, and a CN must not be empty.
func TestCheckLeafNames(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		subject pkix.Name
		dns     []string
		err     string
	}{
		{"CN only", pkix.Name{CommonName: "a.example.com"}, nil, ""},
		{"SAN only", pkix.Name{Organization: []string{"weir"}}, []string{"a.example.com"}, ""},
		{"neither", pkix.Name{Organization: []string{"weir"}}, nil, "neither a subject CN nor a SAN"},
		{"empty CN", pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: ""}}}, []string{"a.example.com"}, "CN is empty"},
	} {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: tc.subject, DNSNames: tc.dns,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalPKCS8PrivateKey(key)
		err = checkKeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v, want accepted", tc.name, err)
		}
	}
}

// TestHeaderNamesFoldASCIIOnly: a header name with the Kelvin sign is not
// folded into "key" (Unicode folding would), so it is refused as not a
// token instead of setting another header.
func TestHeaderNamesFoldASCIIOnly(t *testing.T) {
	f := service("default", "hdr", 100)
	f.VirtualHosts[0].Routes[0].RequestHeaders = ir.HeaderMutation{Set: []ir.Header{{Name: "\u212Aey", Value: "v"}, {Name: "X-Ok", Value: "v"}}}
	res := mustTranslate(t, []*ir.Fragment{f})
	var set []string
	for _, h := range routeConfig(t, res, "external-http").GetVirtualHosts()[0].GetRoutes()[0].GetRequestHeadersToAdd() {
		set = append(set, h.GetHeader().GetKey())
	}
	if len(set) != 1 || set[0] != "x-ok" {
		t.Errorf("headers set = %q, want only x-ok", set)
	}
	if !hasWarning(res, "not a valid header name") {
		t.Errorf("warnings = %q, want the Kelvin header refused", res.Warnings)
	}
}
