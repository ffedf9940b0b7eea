package translate

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/weir-dev/weir/pkg/ir"
)

// The golden inputs are YAML serializations of []*ir.Fragment. The field
// names are those of package ir; only scalars that would be unreadable as
// plain JSON (durations, roles, enums, byte slices) are spelled as strings.

type fixtureFile struct {
	Fragments []fixtureFragment `json:"fragments"`
}

type fixtureFragment struct {
	Source       ir.ObjectRef         `json:"source"`
	Created      time.Time            `json:"created"`
	VirtualHosts []fixtureVirtualHost `json:"virtualHosts"`
	Backends     []fixtureBackend     `json:"backends"`
	Certificates []fixtureCertificate `json:"certificates"`
}

type fixtureVirtualHost struct {
	Name       string         `json:"name"`
	Domains    []string       `json:"domains"`
	Listeners  []string       `json:"listeners"`
	Routes     []fixtureRoute `json:"routes"`
	Provenance ir.Provenance  `json:"provenance"`
}

type fixtureRoute struct {
	Name             string                   `json:"name"`
	Match            fixtureMatch             `json:"match"`
	Backends         []fixtureWeightedBackend `json:"backends"`
	Redirect         *ir.Redirect             `json:"redirect"`
	RequestHeaders   ir.HeaderMutation        `json:"requestHeaders"`
	HostRewrite      string                   `json:"hostRewrite"`
	Timeout          string                   `json:"timeout"`
	Retry            *fixtureRetry            `json:"retry"`
	WebsocketUpgrade bool                     `json:"websocketUpgrade"`
	Provenance       ir.Provenance            `json:"provenance"`
}

type fixtureMatch struct {
	Path    fixtureKindValue     `json:"path"`
	Headers []fixtureHeaderMatch `json:"headers"`
	Method  string               `json:"method"`
}

type fixtureKindValue struct {
	Kind  string `json:"kind"`
	Value string `json:"value"`
}

type fixtureHeaderMatch struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Value string `json:"value"`
}

type fixtureWeightedBackend struct {
	BackendName    string            `json:"backendName"`
	Weight         uint32            `json:"weight"`
	RequestHeaders ir.HeaderMutation `json:"requestHeaders"`
}

type fixtureRetry struct {
	Attempts      uint32   `json:"attempts"`
	PerTryTimeout string   `json:"perTryTimeout"`
	On            []string `json:"on"`
}

type fixtureBackend struct {
	Name          string        `json:"name"`
	Service       ir.ServiceRef `json:"service"`
	Protocol      string        `json:"protocol"`
	ExternalName  string        `json:"externalName"`
	TLSServerName string        `json:"tlsServerName"`
	Endpoints     []ir.Endpoint `json:"endpoints"`
	Provenance    ir.Provenance `json:"provenance"`
}

type fixtureCertificate struct {
	Name       string        `json:"name"`
	Hosts      []string      `json:"hosts"`
	Listeners  []string      `json:"listeners"`
	CertChain  string        `json:"certChain"`
	PrivateKey string        `json:"privateKey"`
	Provenance ir.Provenance `json:"provenance"`
}

func loadFragments(t testing.TB, path string) []*ir.Fragment {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f fixtureFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	frags, err := f.fragments()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return frags
}

func (f fixtureFile) fragments() ([]*ir.Fragment, error) {
	var out []*ir.Fragment
	for _, ff := range f.Fragments {
		frag := &ir.Fragment{Source: ff.Source, Created: ff.Created}
		for _, fv := range ff.VirtualHosts {
			roles, err := parseRoles(fv.Listeners)
			if err != nil {
				return nil, err
			}
			vh := &ir.VirtualHost{Name: fv.Name, Domains: fv.Domains, Listeners: roles, Provenance: fv.Provenance}
			for _, fr := range fv.Routes {
				r, err := fr.route()
				if err != nil {
					return nil, fmt.Errorf("virtual host %s: %w", fv.Name, err)
				}
				vh.Routes = append(vh.Routes, r)
			}
			frag.VirtualHosts = append(frag.VirtualHosts, vh)
		}
		for _, fb := range ff.Backends {
			p, ok := map[string]ir.Protocol{"": ir.HTTP1, "http1": ir.HTTP1, "h2c": ir.H2C, "grpc": ir.GRPC}[fb.Protocol]
			if !ok {
				return nil, fmt.Errorf("backend %s: unknown protocol %q", fb.Name, fb.Protocol)
			}
			be := &ir.Backend{
				Name: fb.Name, Service: fb.Service, Protocol: p, ExternalName: fb.ExternalName,
				Endpoints: fb.Endpoints, Provenance: fb.Provenance,
			}
			if fb.TLSServerName != "" {
				be.TLS = &ir.BackendTLS{ServerName: fb.TLSServerName}
			}
			frag.Backends = append(frag.Backends, be)
		}
		for _, fc := range ff.Certificates {
			roles, err := parseRoles(fc.Listeners)
			if err != nil {
				return nil, err
			}
			frag.Certificates = append(frag.Certificates, &ir.Certificate{
				Name: fc.Name, Hosts: fc.Hosts, Listeners: roles,
				CertChain: []byte(fc.CertChain), PrivateKey: []byte(fc.PrivateKey), Provenance: fc.Provenance,
			})
		}
		out = append(out, frag)
	}
	return out, nil
}

func (fr fixtureRoute) route() (*ir.Route, error) {
	r := &ir.Route{
		Name: fr.Name, Redirect: fr.Redirect, RequestHeaders: fr.RequestHeaders, HostRewrite: fr.HostRewrite,
		WebsocketUpgrade: fr.WebsocketUpgrade, Provenance: fr.Provenance,
	}
	pk, ok := map[string]ir.PathMatchKind{"": ir.PathPrefix, "prefix": ir.PathPrefix, "exact": ir.PathExact, "regex": ir.PathRegex}[fr.Match.Path.Kind]
	if !ok {
		return nil, fmt.Errorf("route %s: unknown path kind %q", fr.Name, fr.Match.Path.Kind)
	}
	r.Match = ir.Match{Path: ir.PathMatch{Kind: pk, Value: fr.Match.Path.Value}, Method: fr.Match.Method}
	for _, h := range fr.Match.Headers {
		hk, ok := map[string]ir.HeaderMatchKind{"": ir.HeaderExact, "exact": ir.HeaderExact, "regex": ir.HeaderRegex, "present": ir.HeaderPresent}[h.Kind]
		if !ok {
			return nil, fmt.Errorf("route %s: unknown header kind %q", fr.Name, h.Kind)
		}
		r.Match.Headers = append(r.Match.Headers, ir.HeaderMatch{Name: h.Name, Kind: hk, Value: h.Value})
	}
	for _, b := range fr.Backends {
		r.Backends = append(r.Backends, ir.WeightedBackend{BackendName: b.BackendName, Weight: b.Weight, RequestHeaders: b.RequestHeaders})
	}
	if fr.Timeout != "" {
		d, err := time.ParseDuration(fr.Timeout)
		if err != nil {
			return nil, err
		}
		r.Timeout = &d
	}
	if fr.Retry != nil {
		r.Retry = &ir.RetryPolicy{Attempts: fr.Retry.Attempts, On: fr.Retry.On}
		if fr.Retry.PerTryTimeout != "" {
			d, err := time.ParseDuration(fr.Retry.PerTryTimeout)
			if err != nil {
				return nil, err
			}
			r.Retry.PerTryTimeout = d
		}
	}
	return r, nil
}

func parseRoles(names []string) (ir.ListenerSet, error) {
	var set ir.ListenerSet
	for _, n := range names {
		found := false
		for _, role := range ir.AllRoles {
			if role.String() == n {
				set = set.With(role)
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown listener role %q", n)
		}
	}
	return set, nil
}

// goldenJSON renders res deterministically: every resource as an @type-tagged
// Any in protojson, re-indented by encoding/json (protojson's own spacing is
// deliberately unstable).
func goldenJSON(t testing.TB, res *Resources) []byte {
	t.Helper()
	var doc struct {
		Listeners []json.RawMessage `json:"listeners"`
		Routes    []json.RawMessage `json:"routes"`
		Clusters  []json.RawMessage `json:"clusters"`
		Endpoints []json.RawMessage `json:"endpoints"`
		Secrets   []json.RawMessage `json:"secrets"`
		Warnings  []string          `json:"warnings,omitempty"`
	}
	add := func(dst *[]json.RawMessage, m proto.Message) {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		b, err := protojson.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		*dst = append(*dst, b)
	}
	doc.Listeners, doc.Routes, doc.Clusters, doc.Endpoints, doc.Secrets =
		[]json.RawMessage{}, []json.RawMessage{}, []json.RawMessage{}, []json.RawMessage{}, []json.RawMessage{}
	for _, m := range res.Listeners {
		add(&doc.Listeners, m)
	}
	for _, m := range res.Routes {
		add(&doc.Routes, m)
	}
	for _, m := range res.Clusters {
		add(&doc.Clusters, m)
	}
	for _, m := range res.Endpoints {
		add(&doc.Endpoints, m)
	}
	for _, m := range res.Secrets {
		add(&doc.Secrets, m)
	}
	doc.Warnings = res.Warnings
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// mustTranslate translates frags with a fresh Translator and checks the
// invariants every result must hold.
func mustTranslate(t testing.TB, frags []*ir.Fragment) *Resources {
	t.Helper()
	res, err := New(DefaultOptions()).Translate(frags)
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	if err := res.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return res
}

var (
	keyPairsMu sync.Mutex
	keyPairs   = map[string][2][]byte{}
)

// testKeyPair returns a self-signed certificate and its key, the same for
// the same name within a test run.
func testKeyPair(name string) (chain, key []byte) {
	keyPairsMu.Lock()
	defer keyPairsMu.Unlock()
	if kp, ok := keyPairs[name]; ok {
		return kp[0], kp[1]
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(len(keyPairs) + 1)),
		Subject:      pkix.Name{CommonName: "weir test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		panic(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		panic(err)
	}
	chain = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	key = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	keyPairs[name] = [2][]byte{chain, key}
	return chain, key
}

var rsaPairs sync.Map

// testRSAKeyPair returns a self-signed certificate with an RSA key of the
// given size, the same within a test run.
func testRSAKeyPair(bits int) (chain, key []byte) {
	if kp, ok := rsaPairs.Load(bits); ok {
		p := kp.([2][]byte)
		return p[0], p[1]
	}
	priv, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(bits)), Subject: pkix.Name{CommonName: "weir rsa test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		panic(err)
	}
	p := [2][]byte{pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)})}
	rsaPairs.Store(bits, p)
	return p[0], p[1]
}

func hasWarning(res *Resources, substr string) bool {
	for _, w := range res.Warnings {
		if strings.Contains(w, substr) {
			return true
		}
	}
	return false
}
