package ingress_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/ingress"
)

// selfSigned returns a PEM certificate and key for host.
func selfSigned(t *testing.T, host string) (chain, key []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// objects decodes YAML documents into Ingresses, IngressClasses and
// listers over the rest.
func objects(t *testing.T, docs string) ([]*netv1.Ingress, []*netv1.IngressClass, ingress.Listers) {
	t.Helper()
	idx := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	svcs, secrets, slices := idx(), idx(), map[string][]*discoveryv1.EndpointSlice{}
	var ings []*netv1.Ingress
	var classes []*netv1.IngressClass
	for i, doc := range strings.Split(docs, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if m, ok := obj.(metav1.Object); ok && m.GetNamespace() == "" {
			if _, cluster := obj.(*netv1.IngressClass); !cluster {
				m.SetNamespace("default")
			}
		}
		switch o := obj.(type) {
		case *netv1.Ingress:
			ings = append(ings, o)
		case *netv1.IngressClass:
			classes = append(classes, o)
		case *corev1.Service:
			_ = svcs.Add(o)
		case *corev1.Secret:
			_ = secrets.Add(o)
		case *discoveryv1.EndpointSlice:
			k := o.Namespace + "/" + o.Labels[discoveryv1.LabelServiceName]
			slices[k] = append(slices[k], o)
		default:
			t.Fatalf("document %d: unexpected %T", i, runtime.Object(o))
		}
	}
	return ings, classes, ingress.Listers{
		Services:    corelisters.NewServiceLister(svcs),
		Secrets:     corelisters.NewSecretLister(secrets),
		AuthSecrets: corelisters.NewSecretLister(secrets),
		EndpointSlices: func(ns, name string) ([]*discoveryv1.EndpointSlice, error) {
			return slices[ns+"/"+name], nil
		},
	}
}

const services = `apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{name: http, port: 80}, {name: grpc, port: 9000, appProtocol: grpc}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
---
apiVersion: v1
kind: Service
metadata: {name: old}
spec: {ports: [{name: http, port: 80}]}
`

func build(t *testing.T, docs string, extra ...string) *ingress.Result {
	t.Helper()
	ings, classes, l := objects(t, services+"\n---\n"+docs)
	return ingress.NewBuilder().Build(ings, ingress.ClassesOf(classes, extra), l, ingress.Options{})
}

func ing(name, created string, annotations map[string]string, rules string) string {
	var a []string
	for k, v := range annotations {
		a = append(a, fmt.Sprintf("%q: %q", k, v))
	}
	slices.Sort(a)
	return fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: %s, creationTimestamp: %q, annotations: {%s}}
spec:
  ingressClassName: weir
  rules:
%s
`, name, created, strings.Join(a, ", "), rules)
}

const weirClass = `apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: weir}
spec: {controller: weir.dev/ingress-controller}
`

func routeSummary(f *ir.Fragment, listener ir.ListenerRole) []string {
	var out []string
	for _, vh := range f.VirtualHosts {
		if !vh.Listeners.Has(listener) {
			continue
		}
		for _, r := range vh.Routes {
			s := fmt.Sprintf("%d:%s", r.Match.Path.Kind, r.Match.Path.Value)
			for _, h := range r.Match.Headers {
				s += fmt.Sprintf(" %s~%s", h.Name, h.Value)
			}
			switch {
			case r.Redirect != nil:
				s += fmt.Sprintf(" -> redirect %s %d", r.Redirect.Scheme, r.Redirect.StatusCode)
			default:
				for _, b := range r.Backends {
					s += fmt.Sprintf(" -> %s*%d", b.BackendName, b.Weight)
					if b.Unresolved {
						s += "(unresolved)"
					}
				}
			}
			out = append(out, s)
		}
	}
	return out
}

func fragment(t *testing.T, res *ingress.Result, host string) *ir.Fragment {
	t.Helper()
	for _, f := range res.Fragments {
		if f.Source.Name == host {
			return f
		}
	}
	t.Fatalf("no fragment for host %s among %d", host, len(res.Fragments))
	return nil
}

func problems(res *ingress.Result, name string) []string {
	var out []string
	r := res.Ingresses[types.NamespacedName{Namespace: "default", Name: name}]
	if r == nil {
		return []string{"not built"}
	}
	for _, p := range r.Problems {
		out = append(out, p.Reason+" "+p.String())
	}
	return out
}

// TestPathsOfAHostMerge: the paths of several Ingresses for one host merge
// as ingress-nginx merges them: Exact first, then the longest path, an
// element-wise Prefix counting as longer than the same plain prefix; a
// path two Ingresses serve goes to the older, and the younger is warned.
func TestPathsOfAHostMerge(t *testing.T) {
	backend := func(path, kind, svc string) string {
		return fmt.Sprintf("      - {path: %s, pathType: %s, backend: {service: {name: %s, port: {number: 80}}}}\n", path, kind, svc)
	}
	rules := func(paths ...string) string {
		return "  - host: Shop.Example.com\n    http:\n      paths:\n" + strings.Join(paths, "")
	}
	res := build(t, weirClass+"---\n"+
		ing("young", "2026-01-02T00:00:00Z", nil, rules(backend("/api", "Prefix", "web"), backend("/", "Prefix", "web"), backend("/x", "Exact", "missing")))+"---\n"+
		ing("elder", "2026-01-01T00:00:00Z", nil, rules(backend("/api", "Prefix", "old"), backend("/api", "ImplementationSpecific", "old"), backend("/api/v1/long", "Prefix", "old"))))
	f := fragment(t, res, "shop.example.com")
	want := []string{
		"1:/x -> Ingress/default/young/spec.rules[0].http.paths[2].backend*100(unresolved)",
		"3:/api/v1/long -> default/old:80*100",
		"3:/api -> default/old:80*100",
		"0:/api -> default/old:80*100",
		"3:/ -> default/web:80*100",
	}
	if got := routeSummary(f, ir.ExternalHTTP); !slices.Equal(got, want) {
		t.Errorf("routes\n got %q\nwant %q", got, want)
	}
	if !f.Created.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("the host's fragment is as old as %v, want its oldest Ingress's age", f.Created)
	}
	if got := problems(res, "young"); len(got) != 2 || !slices.ContainsFunc(got, func(p string) bool {
		return strings.HasPrefix(p, "BackendNotFound spec.rules[0].http.paths[2].backend: Service default/missing does not exist; the path answers 503")
	}) || !slices.Contains(got, `PathConflict spec.rules[0].http.paths[0]: path "/api" of host shop.example.com is not served: Ingress default/elder, which is older, serves it`) {
		t.Errorf("young's problems: %q", got)
	}
	if got := problems(res, "elder"); len(got) != 0 {
		t.Errorf("elder's problems: %q", got)
	}
	if be := f.Backends; len(be) != 2 || be[1].Name != "default/web:80" || len(be[1].Endpoints) != 1 || be[1].Endpoints[0].Port != 8080 {
		t.Errorf("backends: %+v", be)
	}
}

// TestIngressClasses: an Ingress is Weir's by its legacy annotation, which
// wins over spec.ingressClassName, or by the field, or, naming neither,
// when an IngressClass of Weir's is the default; an extra class name
// (--ingress-class) is served with or without an IngressClass.
func TestIngressClasses(t *testing.T) {
	class := func(name, controller string, def bool) *netv1.IngressClass {
		ic := &netv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: netv1.IngressClassSpec{Controller: controller}}
		if def {
			ic.Annotations = map[string]string{ingress.DefaultClassAnnotation: "true"}
		}
		return ic
	}
	ingOf := func(field, annotation *string) *netv1.Ingress {
		i := &netv1.Ingress{Spec: netv1.IngressSpec{IngressClassName: field}}
		if annotation != nil {
			i.Annotations = map[string]string{ingress.LegacyClassAnnotation: *annotation}
		}
		return i
	}
	s := func(v string) *string { return &v }
	for _, tc := range []struct {
		name          string
		classes       []*netv1.IngressClass
		extra         []string
		field, legacy *string
		want          bool
	}{
		{"ours by field", []*netv1.IngressClass{class("weir", ingress.ControllerName, false)}, nil, s("weir"), nil, true},
		{"another controller's class", []*netv1.IngressClass{class("nginx", "k8s.io/ingress-nginx", false)}, nil, s("nginx"), nil, false},
		{"an extra class", []*netv1.IngressClass{class("nginx", "k8s.io/ingress-nginx", false)}, []string{"nginx"}, s("nginx"), nil, true},
		{"legacy annotation wins", []*netv1.IngressClass{class("weir", ingress.ControllerName, false)}, nil, s("weir"), s("nginx"), false},
		{"legacy annotation ours", []*netv1.IngressClass{class("weir", ingress.ControllerName, false)}, nil, s("nginx"), s("weir"), true},
		{"no class, ours is default", []*netv1.IngressClass{class("weir", ingress.ControllerName, true)}, nil, nil, nil, true},
		{"no class, no default", []*netv1.IngressClass{class("weir", ingress.ControllerName, false)}, nil, nil, nil, false},
		{"no class, another default", []*netv1.IngressClass{class("weir", ingress.ControllerName, false), class("nginx", "k8s.io/ingress-nginx", true)}, nil, nil, nil, false},
		{"a class that does not exist", nil, nil, s("weir"), nil, false},
	} {
		cs := ingress.ClassesOf(tc.classes, tc.extra)
		if got := cs.Serves(ingOf(tc.field, tc.legacy)); got != tc.want {
			t.Errorf("%s: served %v, want %v", tc.name, got, tc.want)
		}
		// Status is written only for Weir's own classes.
		if got, want := cs.Owns(ingOf(tc.field, tc.legacy)), tc.want && tc.extra == nil; got != want {
			t.Errorf("%s: owned %v, want %v", tc.name, got, want)
		}
	}
}

// TestAnnotations: each annotation's defaults and invalid values. An
// invalid value or a refused key refuses the whole Ingress, naming the
// key and the value; an unknown or unimplemented key is ignored with a
// warning, and the rest is served.
func TestAnnotations(t *testing.T) {
	const p = ingress.AnnotationPrefix
	rule := "  - host: a.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}"
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		refused     string // the refused key's message, or ""
		ignored     string
		different   string // a finding honoured with a difference
		check       func(t *testing.T, r *ir.Route)
	}{
		// "*" with credentials would let any site read with the user's
		// cookies; nginx's "*" never does, as browsers refuse it.
		{name: "CORS defaults", annotations: map[string]string{p + "enable-cors": "true"}, check: func(t *testing.T, r *ir.Route) {
			c := r.Filters[0].(*ir.CORSPolicy)
			if !slices.Equal(c.AllowOrigins, []string{"*"}) || len(c.AllowMethods) != 6 || len(c.AllowHeaders) != 9 || c.AllowCredentials || *c.MaxAge != 1728000 || len(c.ExposeHeaders) != 0 {
				t.Errorf("CORS defaults: %+v", c)
			}
		}},
		{name: "CORS set", annotations: map[string]string{p + "enable-cors": "true", p + "cors-allow-origin": "https://a.example.com, https://b.example.com:8443",
			p + "cors-allow-credentials": "false", p + "cors-max-age": "60", p + "cors-expose-headers": "X-A,X-B", p + "cors-allow-methods": "GET"}, check: func(t *testing.T, r *ir.Route) {
			c := r.Filters[0].(*ir.CORSPolicy)
			if len(c.AllowOrigins) != 2 || c.AllowOrigins[1] != "https://b.example.com:8443" || c.AllowCredentials || *c.MaxAge != 60 || !slices.Equal(c.ExposeHeaders, []string{"X-A", "X-B"}) || !slices.Equal(c.AllowMethods, []string{"GET"}) {
				t.Errorf("CORS: %+v", c)
			}
		}},
		{name: "CORS off by default", annotations: map[string]string{p + "cors-allow-origin": "https://a.example.com"}, check: func(t *testing.T, r *ir.Route) {
			if slices.ContainsFunc(r.Filters, func(f ir.HTTPFilter) bool { return f.FilterKind() == ir.FilterCORS }) {
				t.Errorf("CORS without enable-cors: %+v", r.Filters)
			}
		}},
		{name: "body size default", check: func(t *testing.T, r *ir.Route) {
			if len(r.Filters) != 1 || *r.Filters[0].(*ir.BodyLimit) != (ir.BodyLimit{MaxBytes: 1 << 20}) {
				t.Errorf("filters %+v, want ingress-nginx's 1m body limit", r.Filters)
			}
		}},
		{name: "body size set", annotations: map[string]string{p + "proxy-body-size": "8K"}, check: func(t *testing.T, r *ir.Route) {
			if len(r.Filters) != 1 || r.Filters[0].(*ir.BodyLimit).MaxBytes != 8192 {
				t.Errorf("filters %+v", r.Filters)
			}
		}},
		{name: "body size huge", annotations: map[string]string{p + "proxy-body-size": "10g"}, check: func(t *testing.T, r *ir.Route) {
			if len(r.Filters) != 1 || r.Filters[0].(*ir.BodyLimit).MaxBytes != 1<<32-1 {
				t.Errorf("filters %+v", r.Filters)
			}
		}},
		{name: "body size off", annotations: map[string]string{p + "proxy-body-size": "0"}, check: func(t *testing.T, r *ir.Route) {
			if len(r.Filters) != 0 {
				t.Errorf("filters %+v, want none", r.Filters)
			}
		}},
		{name: "body size for gRPC", annotations: map[string]string{p + "backend-protocol": "GRPC", p + "proxy-body-size": "1k"}, check: func(t *testing.T, r *ir.Route) {
			if len(r.Filters) != 0 {
				t.Errorf("filters %+v: a gRPC stream cannot be held", r.Filters)
			}
		}},
		{name: "timeouts default", check: func(t *testing.T, r *ir.Route) {
			if r.IdleTimeout == nil || *r.IdleTimeout != time.Minute || r.Backends[0].BackendName != "default/web:80" {
				t.Errorf("idle %v, backend %q; want ingress-nginx's 60 s and the default connect timeout", r.IdleTimeout, r.Backends[0].BackendName)
			}
		}},
		{name: "timeouts set", annotations: map[string]string{p + "proxy-read-timeout": "3600", p + "proxy-send-timeout": "120", p + "proxy-connect-timeout": "2"}, check: func(t *testing.T, r *ir.Route) {
			if *r.IdleTimeout != time.Hour || r.Backends[0].BackendName != "default/web:80/connect-timeout=2s" {
				t.Errorf("idle %v, backend %q", *r.IdleTimeout, r.Backends[0].BackendName)
			}
		}},
		{name: "connect timeout as the default", annotations: map[string]string{p + "proxy-connect-timeout": "5"}, check: func(t *testing.T, r *ir.Route) {
			if r.Backends[0].BackendName != "default/web:80" {
				t.Errorf("backend %q: 5 s is the default and shares the cluster", r.Backends[0].BackendName)
			}
		}},
		{name: "bad timeout", annotations: map[string]string{p + "proxy-read-timeout": "60s"}, refused: `invalid value: "60s" is not a whole number of seconds`},
		// A target is any address the gateway reaches: none unless the
		// operator allows it (TestMirrorTargetHosts).
		{name: "mirror not allowed", annotations: map[string]string{p + "mirror-target": "https://mirror.example.com$request_uri", p + "mirror-request-body": "off"},
			different: `Envoy always copies the body`, check: func(t *testing.T, r *ir.Route) {
				if len(r.Mirrors) != 0 {
					t.Errorf("mirrored to a host nobody allowed: %+v", r.Mirrors)
				}
			}},
		{name: "mirror over https to an address", annotations: map[string]string{p + "mirror-target": "https://10.0.0.1$request_uri"}, refused: "an https target needs a host name"},
		{name: "mirror with a path", annotations: map[string]string{p + "mirror-target": "http://mirror.example.com/copy"}, refused: "must end in $request_uri"},
		{name: "mirror with a bad port", annotations: map[string]string{p + "mirror-target": "http://mirror.example.com:70000/$request_uri"}, refused: "with a port from 1 to 65535"},
		{name: "bad body size", annotations: map[string]string{p + "proxy-body-size": "1t"}, refused: `invalid value: "1t" is not a size`},
		{name: "bad origin", annotations: map[string]string{p + "enable-cors": "true", p + "cors-allow-origin": "a.example.com"}, refused: `invalid value: "a.example.com" is not an origin`},
		{name: "bad max age", annotations: map[string]string{p + "enable-cors": "true", p + "cors-max-age": "-1"}, refused: `invalid value: "-1" is not a number of seconds`},
		{name: "bad bool", annotations: map[string]string{p + "ssl-redirect": "yes"}, refused: `invalid value: "yes" is not true or false`},
		{name: "upstream-vhost", annotations: map[string]string{p + "upstream-vhost": "internal.example.com"}, check: func(t *testing.T, r *ir.Route) {
			if r.HostRewrite != "internal.example.com" {
				t.Errorf("HostRewrite %q", r.HostRewrite)
			}
		}},
		{name: "bad upstream-vhost", annotations: map[string]string{p + "upstream-vhost": "a b"}, refused: `invalid value: "a b" is not a host name`},
		{name: "x-forwarded-prefix", annotations: map[string]string{p + "x-forwarded-prefix": "/shop"}, check: func(t *testing.T, r *ir.Route) {
			if len(r.RequestHeaders.Set) != 1 || r.RequestHeaders.Set[0] != (ir.Header{Name: "X-Forwarded-Prefix", Value: "/shop"}) {
				t.Errorf("request headers %+v", r.RequestHeaders)
			}
		}},
		{name: "permanent redirect", annotations: map[string]string{p + "permanent-redirect": "https://new.example.com:8443/x?y=1"}, check: func(t *testing.T, r *ir.Route) {
			rd := r.Redirect
			if rd == nil || rd.Scheme != "https" || rd.Host != "new.example.com" || rd.Port != 8443 || rd.Path.Value != "/x?y=1" || !rd.StripQuery || rd.StatusCode != 301 {
				t.Errorf("redirect %+v", rd)
			}
		}},
		{name: "permanent redirect code", annotations: map[string]string{p + "permanent-redirect": "https://n.example.com", p + "permanent-redirect-code": "308"}, check: func(t *testing.T, r *ir.Route) {
			if r.Redirect.StatusCode != 308 || r.Redirect.Path.Value != "/" {
				t.Errorf("redirect %+v", r.Redirect)
			}
		}},
		{name: "temporal wins", annotations: map[string]string{p + "permanent-redirect": "https://p.example.com", p + "temporal-redirect": "https://t.example.com$request_uri"}, check: func(t *testing.T, r *ir.Route) {
			if r.Redirect.Host != "t.example.com" || r.Redirect.StatusCode != 302 || r.Redirect.Path != nil || r.Redirect.StripQuery {
				t.Errorf("redirect %+v", r.Redirect)
			}
		}},
		// ingress-nginx uses the default for a code it does not take, and
		// Envoy sends only 301, 302, 303, 307 and 308.
		{name: "invalid redirect code", annotations: map[string]string{p + "permanent-redirect": "https://n.example.com", p + "permanent-redirect-code": "399"},
			different: `"399" is not a valid code here; the default 301 is used`, check: func(t *testing.T, r *ir.Route) {
				if r.Redirect.StatusCode != 301 {
					t.Errorf("redirect %+v", r.Redirect)
				}
			}},
		{name: "temporal 308", annotations: map[string]string{p + "temporal-redirect": "https://n.example.com", p + "temporal-redirect-code": "308"},
			different: `"308" is not a valid code here; the default 302 is used`, check: func(t *testing.T, r *ir.Route) {
				if r.Redirect.StatusCode != 302 {
					t.Errorf("redirect %+v", r.Redirect)
				}
			}},
		{name: "code Envoy cannot send", annotations: map[string]string{p + "temporal-redirect": "https://n.example.com", p + "temporal-redirect-code": "305"},
			different: "Envoy cannot send 305; the default 302 is used"},
		{name: "temporal 307", annotations: map[string]string{p + "temporal-redirect": "https://n.example.com", p + "temporal-redirect-code": "307"}, check: func(t *testing.T, r *ir.Route) {
			if r.Redirect.StatusCode != 307 {
				t.Errorf("redirect %+v", r.Redirect)
			}
		}},
		// A "*" anywhere but a leading "*." of two or more labels would
		// let every site read with the user's cookies.
		{name: "origin wildcard everything", annotations: map[string]string{p + "enable-cors": "true", p + "cors-allow-origin": "https://*"}, refused: "is not an origin"},
		{name: "origin wildcard TLD", annotations: map[string]string{p + "enable-cors": "true", p + "cors-allow-origin": "https://*.com"}, refused: "is not an origin"},
		{name: "origin wildcard inside", annotations: map[string]string{p + "enable-cors": "true", p + "cors-allow-origin": "https://a.*.example.com"}, refused: "is not an origin"},
		{name: "origin wildcard subdomains", annotations: map[string]string{p + "enable-cors": "true", p + "cors-allow-origin": "https://*.example.com, http://localhost:3000"}, check: func(t *testing.T, r *ir.Route) {
			c := r.Filters[0].(*ir.CORSPolicy)
			if !slices.Equal(c.AllowOrigins, []string{"https://*.example.com", "http://localhost:3000"}) || !c.AllowCredentials {
				t.Errorf("CORS: %+v", c)
			}
		}},
		{name: "nginx variable", annotations: map[string]string{p + "permanent-redirect": "https://$host/x"}, refused: `holds an nginx variable other than a trailing $request_uri`},
		{name: "relative redirect", annotations: map[string]string{p + "temporal-redirect": "/elsewhere"}, refused: `is not an absolute http or https URL`},
		{name: "backend-protocol GRPC", annotations: map[string]string{p + "backend-protocol": "grpc"}, check: func(t *testing.T, r *ir.Route) {
			if r.Backends[0].BackendName != "default/web:80/grpc" {
				t.Errorf("backend %q", r.Backends[0].BackendName)
			}
		}},
		// ingress-nginx verifies nothing and sends no SNI by default.
		{name: "backend-protocol HTTPS", annotations: map[string]string{p + "backend-protocol": "HTTPS"}, check: func(t *testing.T, r *ir.Route) {
			if r.Backends[0].BackendName != "default/web:80+tls" {
				t.Errorf("backend %q, want a cluster of its own", r.Backends[0].BackendName)
			}
		}},
		{name: "backend-protocol GRPCS with SNI", annotations: map[string]string{p + "backend-protocol": "GRPCS", p + "proxy-ssl-server-name": "on", p + "proxy-ssl-name": "api.internal"}, check: func(t *testing.T, r *ir.Route) {
			if r.Backends[0].BackendName != "default/web:80/grpc+tls,sni=api.internal" {
				t.Errorf("backend %q", r.Backends[0].BackendName)
			}
		}},
		{name: "backend-protocol FCGI", annotations: map[string]string{p + "backend-protocol": "FCGI"}, refused: "FCGI backends are not served by Weir"},
		{name: "proxy-ssl-secret elsewhere", annotations: map[string]string{p + "backend-protocol": "HTTPS", p + "proxy-ssl-secret": "kube-system/ca"}, refused: "Weir reads only Secrets in the Ingress's own namespace, default"},
		{name: "proxy-ssl-verify without a Secret", annotations: map[string]string{p + "backend-protocol": "HTTPS", p + "proxy-ssl-verify": "on"}, refused: "on needs proxy-ssl-secret"},
		{name: "proxy-ssl-verify not on or off", annotations: map[string]string{p + "proxy-ssl-verify": "yes"}, refused: `"yes" is not on or off`},
		{name: "proxy-ssl-ciphers", annotations: map[string]string{p + "proxy-ssl-ciphers": "HIGH"}, ignored: "Envoy's default TLS versions and ciphers"},
		{name: "snippet", annotations: map[string]string{p + "server-snippet": "return 200;"}, refused: "snippets inject raw proxy configuration"},
		{name: "unknown snippet", annotations: map[string]string{p + "brand-new-snippet": "x"}, refused: "snippets inject raw proxy configuration"},
		{name: "client certificate CN", annotations: map[string]string{p + "auth-tls-secret": "ca", p + "auth-tls-match-cn": "CN=alice"}, refused: "would weaken its security"},
		{name: "client certificate depth", annotations: map[string]string{p + "auth-tls-secret": "ca", p + "auth-tls-verify-depth": "deep"}, refused: `"deep" is not a whole number from 0 to 100`},
		{name: "client certificate mode", annotations: map[string]string{p + "auth-tls-secret": "ca", p + "auth-tls-verify-client": "yes"}, refused: `"yes" is not on, off, optional or optional_no_ca`},
		{name: "client CA of another namespace", annotations: map[string]string{p + "auth-tls-secret": "kube-system/ca"}, refused: "Weir reads only Secrets in the Ingress's own namespace"},
		{name: "allow-list", annotations: map[string]string{p + "whitelist-source-range": "10.0.0.0/8, 192.0.2.7 ,2001:db8::/32", p + "denylist-source-range": "10.1.2.3/16"}, check: func(t *testing.T, r *ir.Route) {
			sr := r.Filters[0].(*ir.SourceRanges)
			if fmt.Sprint(sr.Allow) != "[10.0.0.0/8 192.0.2.7/32 2001:db8::/32]" || fmt.Sprint(sr.Deny) != "[10.1.0.0/16]" {
				t.Errorf("source ranges %+v", sr)
			}
		}},
		{name: "allowlist wins", annotations: map[string]string{p + "whitelist-source-range": "10.0.0.0/8", p + "allowlist-source-range": "192.0.2.0/24"}, check: func(t *testing.T, r *ir.Route) {
			if sr := r.Filters[0].(*ir.SourceRanges); fmt.Sprint(sr.Allow) != "[192.0.2.0/24]" {
				t.Errorf("source ranges %+v", sr)
			}
		}},
		{name: "bad range", annotations: map[string]string{p + "whitelist-source-range": "10.0.0.0/33"}, refused: `invalid value: "10.0.0.0/33" is not an IP address or CIDR range`},
		{name: "empty range", annotations: map[string]string{p + "denylist-source-range": " , "}, refused: "invalid value: no range is listed"},
		{name: "basic auth without a Secret", annotations: map[string]string{p + "auth-type": "basic"}, refused: "basic needs auth-secret"},
		{name: "digest auth", annotations: map[string]string{p + "auth-type": "digest", p + "auth-secret": "users"}, refused: "digest authentication is not served"},
		{name: "auth-secret of another namespace", annotations: map[string]string{p + "auth-type": "basic", p + "auth-secret": "kube-system/users"}, refused: "Weir reads only Secrets in the Ingress's own namespace"},
		{name: "auth-secret without auth-type", annotations: map[string]string{p + "auth-secret": "users"}, ignored: "has no effect without auth-type"},
		{name: "auth-url", annotations: map[string]string{p + "auth-url": "http://web.default.svc.cluster.local/oauth2/auth?x=1", p + "auth-response-headers": "X-Auth-Request-User, X-Auth-Request-Email"}, different: "only a 200 admits", check: func(t *testing.T, r *ir.Route) {
			a := filterOf[*ir.ExtAuth](r)
			if a == nil || a.BackendName != "default/web:80" || a.Path != "/oauth2/auth?x=1" || fmt.Sprint(a.UpstreamHeaders) != "[X-Auth-Request-User X-Auth-Request-Email]" ||
				len(a.CheckHeaders) != 4 || a.CheckHeaders[2] != (ir.Header{Name: "X-Auth-Request-Redirect", Value: "%REQ(:path)%"}) {
				t.Errorf("ext auth %+v", a)
			}
			if rm := filterOf[*ir.RemoveRequestHeaders](r); rm == nil || fmt.Sprint(rm.Names) != "[X-Auth-Request-User X-Auth-Request-Email]" {
				t.Errorf("the client's copies of the service's headers are not removed: %+v", rm)
			}
		}},
		{name: "auth-url with a variable", annotations: map[string]string{p + "auth-url": "https://$host/oauth2/auth"}, refused: "holds an nginx variable"},
		{name: "auth-url with a space", annotations: map[string]string{p + "auth-url": "http://web.default.svc/check?a b"}, refused: "hold a space or a control character"},
		{name: "auth-url outside the cluster", annotations: map[string]string{p + "auth-url": "http://127.0.0.1:9901/quitquitquit"}, refused: "the host must be a Service of the cluster"},
		{name: "auth-url in another namespace", annotations: map[string]string{p + "auth-url": "http://oauth2-proxy.auth-system.svc/auth"}, check: func(t *testing.T, r *ir.Route) {
			if len(r.Backends) != 1 || !r.Backends[0].Unresolved || filterOf[*ir.ExtAuth](r) != nil {
				t.Errorf("a Service of another namespace the operator did not allow was used: %+v", r)
			}
		}},
		{name: "auth-url missing Service", annotations: map[string]string{p + "auth-url": "http://nope.default.svc/auth"}, check: func(t *testing.T, r *ir.Route) {
			if len(r.Backends) != 1 || !r.Backends[0].Unresolved || filterOf[*ir.ExtAuth](r) != nil {
				t.Errorf("a path whose authorization service is missing is served: %+v", r)
			}
		}},
		{name: "unknown", annotations: map[string]string{p + "no-such-thing": "1"}, ignored: "not an annotation Weir knows"},
		{name: "not yet", annotations: map[string]string{p + "limit-rate": "5"}, ignored: "not implemented by Weir yet"},
		// nginx's limit_req with nodelay takes burst+1 requests at once.
		{name: "limit-rps", annotations: map[string]string{p + "limit-rps": "10"}, different: "each path of the Ingress has its own count", check: func(t *testing.T, r *ir.Route) {
			rl := filterOf[*ir.RateLimit](r)
			if rl == nil || !rl.PerClient || rl.Status != 503 || len(rl.Exempt) != 0 || fmt.Sprint(rl.Buckets) != "[{10 1s 51}]" {
				t.Errorf("rate limit %+v", rl)
			}
		}},
		{name: "limit-rps and limit-rpm", annotations: map[string]string{p + "limit-rps": "2", p + "limit-rpm": "30", p + "limit-burst-multiplier": "3", p + "limit-whitelist": "10.0.0.0/8, 192.0.2.7"}, check: func(t *testing.T, r *ir.Route) {
			rl := filterOf[*ir.RateLimit](r)
			if rl == nil || fmt.Sprint(rl.Buckets) != "[{2 1s 7} {30 1m0s 91}]" || fmt.Sprint(rl.Exempt) != "[10.0.0.0/8 192.0.2.7/32]" {
				t.Errorf("rate limit %+v", rl)
			}
		}},
		{name: "limit-rps 0", annotations: map[string]string{p + "limit-rps": "0", p + "limit-whitelist": "10.0.0.0/8"}, check: func(t *testing.T, r *ir.Route) {
			if rl := filterOf[*ir.RateLimit](r); rl != nil {
				t.Errorf("limit-rps 0 made a rate limit %+v; ingress-nginx has none", rl)
			}
		}},
		{name: "limit-rps not a number", annotations: map[string]string{p + "limit-rps": "ten"}, refused: `"ten" is not a whole number of requests`},
		{name: "limit-burst-multiplier 0", annotations: map[string]string{p + "limit-rps": "1", p + "limit-burst-multiplier": "0"}, refused: `"0" is not a whole number from 1 to 65535`},
		{name: "limit-whitelist bad", annotations: map[string]string{p + "limit-rps": "1", p + "limit-whitelist": "10.0.0.300"}, refused: `"10.0.0.300" is not an IP address or CIDR range`},
		{name: "affinity cookie", annotations: map[string]string{p + "affinity": "cookie"}, different: "consistent-hash ring", check: func(t *testing.T, r *ir.Route) {
			if r.Backends[0].BackendName != "default/web:80/lb=consistent-hash" || fmt.Sprint(r.HashPolicy) != "[{2 INGRESSCOOKIE 0s / []}]" {
				t.Errorf("backend %q, hash policy %v", r.Backends[0].BackendName, r.HashPolicy)
			}
		}},
		{name: "affinity cookie set", annotations: map[string]string{p + "affinity": "cookie", p + "affinity-mode": "persistent", p + "session-cookie-name": "route",
			p + "session-cookie-max-age": "3600", p + "session-cookie-expires": "60", p + "session-cookie-path": "/app", p + "session-cookie-samesite": "lax", p + "session-cookie-secure": "true"}, check: func(t *testing.T, r *ir.Route) {
			if fmt.Sprint(r.HashPolicy) != "[{2 route 1h0m0s /app [{SameSite Lax} {Secure }]}]" {
				t.Errorf("hash policy %v", r.HashPolicy)
			}
		}},
		{name: "affinity not cookie", annotations: map[string]string{p + "affinity": "ip"}, refused: `"ip" is not cookie`},
		{name: "upstream-hash-by", annotations: map[string]string{p + "upstream-hash-by": "$remote_addr$request_uri$http_x_user_id$arg_tenant"}, check: func(t *testing.T, r *ir.Route) {
			if r.Backends[0].BackendName != "default/web:80/lb=consistent-hash" || fmt.Sprint(r.HashPolicy) != "[{3  <nil>  []} {1 :path <nil>  []} {1 x-user-id <nil>  []} {4 tenant <nil>  []}]" {
				t.Errorf("backend %q, hash policy %v", r.Backends[0].BackendName, r.HashPolicy)
			}
		}},
		{name: "upstream-hash-by unknown variable", annotations: map[string]string{p + "upstream-hash-by": "$uri"}, ignored: "the backend is balanced without it", check: func(t *testing.T, r *ir.Route) {
			if r.Backends[0].BackendName != "default/web:80" || r.HashPolicy != nil {
				t.Errorf("backend %q, hash policy %v", r.Backends[0].BackendName, r.HashPolicy)
			}
		}},
		{name: "load-balance ewma", annotations: map[string]string{p + "load-balance": "ewma"}, check: func(t *testing.T, r *ir.Route) {
			if r.Backends[0].BackendName != "default/web:80/lb=least-request" {
				t.Errorf("backend %q", r.Backends[0].BackendName)
			}
		}},
		{name: "limit-whitelist too fine", annotations: map[string]string{p + "limit-rps": "1", p + "limit-whitelist": "2001:db8::1"}, refused: "leaves 129 ranges of clients to limit"},
		{name: "proxy-next-upstream default", annotations: map[string]string{p + "enable-cors": "true"}, check: func(t *testing.T, r *ir.Route) {
			if rp := r.Retry; rp == nil || rp.Attempts != 2 || !slices.Equal(rp.On, []string{"connect-failure"}) || len(rp.StatusCodes) != 0 || len(rp.NotForMethods) != 0 || !rp.OtherEndpoints {
				t.Errorf("retry %+v, want nginx's error timeout, 3 tries", rp)
			}
		}},
		{name: "proxy-next-upstream codes", annotations: map[string]string{p + "proxy-next-upstream": "error timeout http_502 http_503", p + "proxy-next-upstream-tries": "5"}, different: "POST, LOCK and PATCH are not retried at all", check: func(t *testing.T, r *ir.Route) {
			if rp := r.Retry; rp == nil || rp.Attempts != 4 || !slices.Equal(rp.On, []string{"connect-failure", "reset"}) || !slices.Equal(rp.StatusCodes, []uint32{502, 503}) ||
				!slices.Equal(rp.NotForMethods, []string{"POST", "LOCK", "PATCH"}) || !rp.OtherEndpoints {
				t.Errorf("retry %+v", rp)
			}
		}},
		{name: "proxy-next-upstream non_idempotent", annotations: map[string]string{p + "proxy-next-upstream": "http_500 non_idempotent", p + "proxy-next-upstream-tries": "0"}, check: func(t *testing.T, r *ir.Route) {
			if rp := r.Retry; rp == nil || rp.Attempts != 9 || len(rp.On) != 0 || !slices.Equal(rp.StatusCodes, []uint32{500}) || rp.NotForMethods != nil {
				t.Errorf("retry %+v", rp)
			}
		}},
		{name: "proxy-next-upstream off", annotations: map[string]string{p + "proxy-next-upstream": "off"}, check: func(t *testing.T, r *ir.Route) {
			if r.Retry != nil {
				t.Errorf("retry %+v, want none", r.Retry)
			}
		}},
		{name: "proxy-next-upstream one try", annotations: map[string]string{p + "proxy-next-upstream-tries": "1"}, check: func(t *testing.T, r *ir.Route) {
			if r.Retry != nil {
				t.Errorf("retry %+v, want none", r.Retry)
			}
		}},
		{name: "proxy-next-upstream unknown", annotations: map[string]string{p + "proxy-next-upstream": "error http_418"}, refused: `"http_418" is not one of error, timeout`},
		{name: "proxy-next-upstream-tries not a number", annotations: map[string]string{p + "proxy-next-upstream-tries": "three"}, refused: `"three" is not a whole number`},
		{name: "limit-connections", annotations: map[string]string{p + "limit-connections": "5"}, ignored: "Envoy has no limit on one client's concurrent connections"},
		{name: "canary weight over total", annotations: map[string]string{p + "canary": "true", p + "canary-weight": "20", p + "canary-weight-total": "10"}, refused: `"20" is not an integer from 0 to 10`},
		{name: "canary pattern", annotations: map[string]string{p + "canary": "true", p + "canary-by-header": "x", p + "canary-by-header-pattern": "(a"}, refused: "is not an RE2 regular expression"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := build(t, weirClass+"---\n"+ing("i", "2026-01-01T00:00:00Z", tc.annotations, rule))
			r := res.Ingresses[types.NamespacedName{Namespace: "default", Name: "i"}]
			var refused, ignored []string
			for _, f := range r.Findings {
				switch f.Support {
				case ingress.Refused:
					refused = append(refused, f.Key+": "+f.Message)
				case ingress.Ignored:
					ignored = append(ignored, f.Key+": "+f.Message)
				}
			}
			if tc.refused != "" {
				if !r.Refused || len(refused) != 1 || !strings.Contains(refused[0], tc.refused) || r.LastGood || len(res.Fragments) != 0 {
					t.Errorf("refused %v (%q), last good %v, %d fragments; want refused with %q and nothing served", r.Refused, refused, r.LastGood, len(res.Fragments), tc.refused)
				}
				return
			}
			if r.Refused || len(refused) != 0 {
				t.Fatalf("refused: %q", refused)
			}
			if tc.ignored != "" && (len(ignored) != 1 || !strings.Contains(ignored[0], tc.ignored)) {
				t.Errorf("ignored %q, want %q", ignored, tc.ignored)
			}
			if tc.different != "" && !slices.ContainsFunc(r.Findings, func(f ingress.Finding) bool {
				return f.Support == ingress.HonouredWithDifference && strings.Contains(f.Message, tc.different)
			}) {
				t.Errorf("findings %+v, want one honoured with the difference %q", r.Findings, tc.different)
			}
			if tc.check != nil {
				tc.check(t, fragment(t, res, "a.example.com").VirtualHosts[0].Routes[0])
			}
		})
	}
}

// filterOf is r's filter of type F, or nil.
func filterOf[F ir.HTTPFilter](r *ir.Route) F {
	for _, f := range r.Filters {
		if f, ok := f.(F); ok {
			return f
		}
	}
	var none F
	return none
}

// TestRefusedIngressKeepsItsLastGoodVersion: a refused version leaves the
// last good one serving, and an Ingress refused from the start serves
// nothing; deleting the Ingress forgets its last good version.
func TestRefusedIngressKeepsItsLastGoodVersion(t *testing.T) {
	rule := func(svc string) string {
		return fmt.Sprintf("  - host: a.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: %s, port: {number: 80}}}}", svc)
	}
	b := ingress.NewBuilder()
	run := func(docs string) *ingress.Result {
		ings, classes, l := objects(t, services+"\n---\n"+weirClass+"---\n"+docs)
		return b.Build(ings, ingress.ClassesOf(classes, nil), l, ingress.Options{})
	}
	snippet := map[string]string{ingress.AnnotationPrefix + "configuration-snippet": "x"}
	backendOf := func(res *ingress.Result) string {
		if len(res.Fragments) == 0 {
			return "none"
		}
		return res.Fragments[0].VirtualHosts[0].Routes[0].Backends[0].BackendName
	}
	if res := run(ing("i", "2026-01-01T00:00:00Z", snippet, rule("web"))); backendOf(res) != "none" {
		t.Errorf("refused from the start: served %s", backendOf(res))
	}
	if res := run(ing("i", "2026-01-01T00:00:00Z", nil, rule("web"))); backendOf(res) != "default/web:80" {
		t.Errorf("good: served %s", backendOf(res))
	}
	res := run(ing("i", "2026-01-01T00:00:00Z", snippet, rule("old")))
	if r := res.Ingresses[types.NamespacedName{Namespace: "default", Name: "i"}]; backendOf(res) != "default/web:80" || !r.Refused || !r.LastGood {
		t.Errorf("refused after a good version: served %s, result %+v", backendOf(res), r)
	}
	run("")
	if res := run(ing("i", "2026-01-01T00:00:00Z", snippet, rule("old"))); backendOf(res) != "none" {
		t.Errorf("refused after deletion: served %s", backendOf(res))
	}

	// An access control Weir cannot enforce fails closed: the last good
	// version, without it, must not stay open.
	run(ing("i", "2026-01-01T00:00:00Z", nil, rule("web")))
	for _, closed := range []map[string]string{
		{ingress.AnnotationPrefix + "auth-tls-secret": "ca", ingress.AnnotationPrefix + "auth-tls-match-cn": "CN=alice"},
		// Basic auth Weir serves, without the Secret of its users.
		{ingress.AnnotationPrefix + "auth-type": "basic"},
		// An allow-list Weir enforces, with a value it cannot read.
		{ingress.AnnotationPrefix + "whitelist-source-range": "10.0.0.0/8,10.0.0"},
	} {
		run(ing("i", "2026-01-01T00:00:00Z", nil, rule("web")))
		res = run(ing("i", "2026-01-01T00:00:00Z", closed, rule("web")))
		if r := res.Ingresses[types.NamespacedName{Namespace: "default", Name: "i"}]; backendOf(res) != "none" || !r.Refused || r.LastGood {
			t.Errorf("%v added to a served Ingress: served %s, result %+v; want nothing served", closed, backendOf(res), r)
		}
		if res := run(ing("i", "2026-01-01T00:00:00Z", nil, rule("old"))); backendOf(res) != "default/old:80" {
			t.Errorf("%v removed again: served %s", closed, backendOf(res))
		}
	}
}

// TestTLSAndRedirects: a TLS host gets its certificate from the Ingress's
// own namespace and is redirected from plain HTTP with 308 unless
// ssl-redirect is false; force-ssl-redirect redirects a host without TLS;
// a Secret that cannot be served is a problem and the host stays on HTTP.
func TestTLSAndRedirects(t *testing.T) {
	secret := `apiVersion: v1
kind: Secret
metadata: {name: opaque}
type: Opaque
`
	tlsIng := func(name, host, secret string, annotations map[string]string) string {
		return ing(name, "2026-01-01T00:00:00Z", annotations, fmt.Sprintf("  - host: %s\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n  tls: [{hosts: [%s], secretName: %s}]", host, host, secret))
	}
	chain, key := selfSigned(t, "s.example.com")
	res := build(t, weirClass+"---\n"+secret+"---\n"+
		fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: good}\ntype: kubernetes.io/tls\ndata: {tls.crt: %s, tls.key: %s}\n---\n",
			base64.StdEncoding.EncodeToString(chain), base64.StdEncoding.EncodeToString(key))+
		tlsIng("secure", "s.example.com", "good", nil)+"---\n"+
		tlsIng("plain-too", "p.example.com", "good", map[string]string{ingress.AnnotationPrefix + "ssl-redirect": "false"})+"---\n"+
		tlsIng("bad-secret", "b.example.com", "opaque", nil)+"---\n"+
		ing("forced", "2026-01-01T00:00:00Z", map[string]string{ingress.AnnotationPrefix + "force-ssl-redirect": "true"},
			"  - host: f.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}"))
	if got := problems(res, "bad-secret"); len(got) != 1 || !strings.Contains(got[0], `InvalidCertificate spec.tls[0].secretName: host b.example.com is not served over HTTPS: Secret default/opaque is of type "Opaque"`) {
		t.Errorf("bad-secret's problems: %q", got)
	}
	if f := fragment(t, res, "b.example.com"); len(f.Certificates) != 0 || len(f.VirtualHosts) != 1 || f.VirtualHosts[0].Listeners.Has(ir.ExternalHTTPS) ||
		routeSummary(f, ir.ExternalHTTP)[0] != "3:/ -> default/web:80*100" {
		t.Errorf("b.example.com: %+v %q", f.VirtualHosts, routeSummary(f, ir.ExternalHTTP))
	}
	if got := routeSummary(fragment(t, res, "f.example.com"), ir.ExternalHTTP); !slices.Equal(got, []string{"3:/ -> redirect https 308"}) {
		t.Errorf("force-ssl-redirect: %q", got)
	}
	s := fragment(t, res, "s.example.com")
	if len(s.Certificates) != 1 || s.Certificates[0].Name != "default/good" || !slices.Equal(s.Certificates[0].Hosts, []string{"s.example.com"}) ||
		!s.Certificates[0].Listeners.Has(ir.ExternalHTTPS) || string(s.Certificates[0].CertChain) != string(chain) {
		t.Errorf("s.example.com's certificate: %v", s.Certificates)
	}
	if got := routeSummary(s, ir.ExternalHTTP); !slices.Equal(got, []string{"3:/ -> redirect https 308"}) {
		t.Errorf("s.example.com over HTTP: %q", got)
	}
	if got := routeSummary(s, ir.ExternalHTTPS); !slices.Equal(got, []string{"3:/ -> default/web:80*100"}) {
		t.Errorf("s.example.com over HTTPS: %q", got)
	}
	p := fragment(t, res, "p.example.com")
	if len(p.VirtualHosts) != 1 || !p.VirtualHosts[0].Listeners.Has(ir.ExternalHTTP) || !p.VirtualHosts[0].Listeners.Has(ir.ExternalHTTPS) ||
		routeSummary(p, ir.ExternalHTTP)[0] != "3:/ -> default/web:80*100" {
		t.Errorf("ssl-redirect false: %q on %v", routeSummary(p, ir.ExternalHTTP), p.VirtualHosts)
	}
}

// TestRegexHost: one Ingress's use-regex makes every path of the host a
// case-insensitive regex from the start, Exact ones included, ordered by
// length as nginx orders its locations; an alternation stays one
// alternative of the whole, in the match and in the rewrite.
func TestRegexHost(t *testing.T) {
	path := func(p, kind string) string {
		return fmt.Sprintf("      - {path: %q, pathType: %s, backend: {service: {name: web, port: {number: 80}}}}\n", p, kind)
	}
	rules := func(paths ...string) string {
		return "  - host: r.example.com\n    http:\n      paths:\n" + strings.Join(paths, "")
	}
	res := build(t, weirClass+"---\n"+
		ing("plain", "2026-01-01T00:00:00Z", nil, rules(path("/x", "Exact"), path("/longer-prefix", "Prefix")))+"---\n"+
		ing("regex", "2026-01-02T00:00:00Z", map[string]string{ingress.AnnotationPrefix + "rewrite-target": "/$1"}, rules(path("/a/(.*)|/b/(.*)", "ImplementationSpecific"))))
	f := fragment(t, res, "r.example.com")
	want := []string{
		"2:(?i)(?:/a/(.*)|/b/(.*)).* -> default/web:80*100",
		"2:(?i)(?:/longer-prefix).* -> default/web:80*100",
		"2:(?i)(?:/x).* -> default/web:80*100",
	}
	if got := routeSummary(f, ir.ExternalHTTP); !slices.Equal(got, want) {
		t.Errorf("routes\n got %q\nwant %q", got, want)
	}
	rw := f.VirtualHosts[0].Routes[0].PathRewrite
	if rw == nil || rw.Kind != ir.ReplaceRegex || rw.Pattern != "(?i)^(?:/a/(.*)|/b/(.*)).*" || rw.Value != `/\1` {
		t.Errorf("rewrite %+v", rw)
	}
	if r := f.VirtualHosts[0].Routes[1]; r.PathRewrite != nil {
		t.Errorf("the plain Ingress's path is rewritten: %+v", r.PathRewrite)
	}
}

// TestDefaultCertificateAndWildcardHosts: a TLS entry without a Secret
// gets the default certificate (--default-ssl-certificate), read from its
// own namespace; without one it is a problem and the host stays on plain
// HTTP. A wildcard host is served as nginx serves it: a suffix match.
func TestDefaultCertificateAndWildcardHosts(t *testing.T) {
	chain, key := selfSigned(t, "default.example.com")
	docs := services + "\n---\n" + weirClass + "---\n" +
		fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: fallback, namespace: ingress-system}\ntype: kubernetes.io/tls\ndata: {tls.crt: %s, tls.key: %s}\n---\n",
			base64.StdEncoding.EncodeToString(chain), base64.StdEncoding.EncodeToString(key)) +
		ing("wild", "2026-01-01T00:00:00Z", nil, "  - host: \"*.shop.example.com\"\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n  tls: [{hosts: [\"*.shop.example.com\"]}]")
	ings, classes, l := objects(t, docs)

	res := ingress.NewBuilder().Build(ings, ingress.ClassesOf(classes, nil), l, ingress.Options{})
	f := fragment(t, res, "*.shop.example.com")
	if len(f.Certificates) != 0 || !slices.Equal(f.VirtualHosts[0].Domains, []string{"*.shop.example.com"}) {
		t.Errorf("without a default certificate: %v, %+v", f.Certificates, f.VirtualHosts[0])
	}
	if got := problems(res, "wild"); len(got) != 1 || !strings.Contains(got[0], "NoCertificate spec.tls[0]: host *.shop.example.com names no Secret and Weir has no default certificate") {
		t.Errorf("problems: %q", got)
	}

	res = ingress.NewBuilder().Build(ings, ingress.ClassesOf(classes, nil), l, ingress.Options{DefaultCertificate: &types.NamespacedName{Namespace: "ingress-system", Name: "fallback"}})
	f = fragment(t, res, "*.shop.example.com")
	if len(f.Certificates) != 1 || f.Certificates[0].Name != "ingress-system/fallback" || !slices.Equal(f.Certificates[0].Hosts, []string{"*.shop.example.com"}) {
		t.Errorf("with a default certificate: %v", f.Certificates)
	}
	if got := routeSummary(f, ir.ExternalHTTP); !slices.Equal(got, []string{"3:/ -> redirect https 308"}) {
		t.Errorf("plain HTTP to a TLS wildcard host: %q", got)
	}
}

// TestAnnotationsReachEveryRoute: an Ingress's allow-list and body limit
// apply to its default backend too (ingress-nginx applies them to every
// location of the Ingress), and a gRPC canary's streams are never held.
func TestAnnotationsReachEveryRoute(t *testing.T) {
	const p = ingress.AnnotationPrefix
	rule := func(svc string, port int) string {
		return fmt.Sprintf("  - host: a.example.com\n    http:\n      paths:\n      - {path: /api, pathType: Prefix, backend: {service: {name: %s, port: {number: %d}}}}", svc, port)
	}
	withDefault := strings.Replace(ing("main", "2026-01-01T00:00:00Z", map[string]string{p + "whitelist-source-range": "10.0.0.0/8"}, rule("web", 80)),
		"  ingressClassName: weir\n", "  ingressClassName: weir\n  defaultBackend: {service: {name: web, port: {number: 80}}}\n", 1)
	res := build(t, weirClass+"---\n"+withDefault+"---\n"+
		ing("canary", "2026-01-02T00:00:00Z", map[string]string{p + "canary": "true", p + "canary-weight": "10", p + "backend-protocol": "GRPC"}, rule("web", 9000)))
	f := fragment(t, res, "a.example.com")
	routes := f.VirtualHosts[0].Routes
	if len(routes) != 2 || routes[1].Match.Path.Value != "/" {
		t.Fatalf("routes: %+v", routes)
	}
	kinds := func(r *ir.Route) []ir.FilterKind {
		var out []ir.FilterKind
		for _, f := range r.Filters {
			out = append(out, f.FilterKind())
		}
		return out
	}
	if got := kinds(routes[1]); !slices.Equal(got, []ir.FilterKind{ir.FilterSourceRanges, ir.FilterBodyLimit}) {
		t.Errorf("the default backend's filters: %v, want the allow-list and the body limit", got)
	}
	// Port 9000 is named grpc: GRPC is its own protocol, so no suffix.
	if got := kinds(routes[0]); !slices.Equal(got, []ir.FilterKind{ir.FilterSourceRanges}) || len(routes[0].Backends) != 2 || routes[0].Backends[1].BackendName != "default/web:9000" {
		t.Errorf("/api with a gRPC canary: filters %v, backends %+v; want no body limit", got, routes[0].Backends)
	}
}

// TestFromToWWWRedirect: from-to-www-redirect makes the other name
// redirect to the Ingress's host with 308, both ways, unless an Ingress
// serves the other name itself.
func TestFromToWWWRedirect(t *testing.T) {
	const p = ingress.AnnotationPrefix
	rule := func(host string) string {
		return fmt.Sprintf("  - host: %s\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}", host)
	}
	on := map[string]string{p + "from-to-www-redirect": "true"}
	res := build(t, weirClass+"---\n"+
		ing("a", "2026-01-01T00:00:00Z", on, rule("www.a.example.com"))+"---\n"+
		ing("b", "2026-01-01T00:00:00Z", on, rule("b.example.com"))+"---\n"+
		ing("c", "2026-01-01T00:00:00Z", on, rule("www.c.example.com"))+"---\n"+
		ing("c-bare", "2026-01-01T00:00:00Z", nil, rule("c.example.com")))
	var got []string
	for _, f := range res.Fragments {
		for _, vh := range f.VirtualHosts {
			for _, r := range vh.Routes {
				if r.Redirect != nil {
					got = append(got, fmt.Sprintf("%s -> %s %d", f.Source.Name, r.Redirect.Host, r.Redirect.StatusCode))
				}
			}
		}
	}
	want := []string{"a.example.com -> www.a.example.com 308", "www.b.example.com -> b.example.com 308"}
	if !slices.Equal(got, want) {
		t.Errorf("redirects %q, want %q (c.example.com is served by its own Ingress)", got, want)
	}
}

// TestMirrorTargetHosts: mirror-target copies requests only to a host the
// operator allowed; to any other, the Ingress gets a problem naming the
// host and how to allow it, and the rest is served.
func TestMirrorTargetHosts(t *testing.T) {
	const p = ingress.AnnotationPrefix
	rule := "  - host: a.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}"
	docs := services + "\n---\n" + weirClass + "---\n" +
		ing("allowed", "2026-01-01T00:00:00Z", map[string]string{p + "mirror-target": "https://Mirror.example.com:8443$request_uri"}, rule) + "---\n" +
		ing("admin", "2026-01-01T00:00:00Z", map[string]string{p + "mirror-target": "http://127.0.0.1:9901$request_uri"}, strings.ReplaceAll(rule, "a.example.com", "b.example.com"))
	ings, classes, l := objects(t, docs)
	res := ingress.NewBuilder().Build(ings, ingress.ClassesOf(classes, nil), l, ingress.Options{MirrorTargetHosts: []string{"mirror.example.com"}})

	a := fragment(t, res, "a.example.com")
	if m := a.VirtualHosts[0].Routes[0].Mirrors; len(m) != 1 || m[0].BackendName != "mirror/https://Mirror.example.com:8443" {
		t.Errorf("a.example.com mirrors %+v", m)
	}
	i := slices.IndexFunc(a.Backends, func(b *ir.Backend) bool { return strings.HasPrefix(b.Name, "mirror/") })
	if i < 0 || a.Backends[i].ExternalName != "Mirror.example.com" || a.Backends[i].Service.Port != 8443 || a.Backends[i].TLS == nil || a.Backends[i].TLS.ServerName != "Mirror.example.com" {
		t.Errorf("the mirror's backend: %+v", a.Backends)
	}
	if m := fragment(t, res, "b.example.com").VirtualHosts[0].Routes[0].Mirrors; len(m) != 0 {
		t.Errorf("mirrored to the gateway's own admin port: %+v", m)
	}
	if got := problems(res, "admin"); len(got) != 1 || !strings.Contains(got[0], "MirrorNotAllowed") || !strings.Contains(got[0], "127.0.0.1") || !strings.Contains(got[0], "MIRROR_TARGET_HOSTS") {
		t.Errorf("admin's problems: %q", got)
	}
}

// TestWWWRedirectYieldsToAnyOwner: the redirect of from-to-www-redirect
// is younger than anything, so a KIngress serving the other name keeps
// it, and the lost redirect is no conflict to report.
func TestWWWRedirectYieldsToAnyOwner(t *testing.T) {
	const p = ingress.AnnotationPrefix
	res := build(t, weirClass+"---\n"+ing("a", "2026-01-01T00:00:00Z", map[string]string{p + "from-to-www-redirect": "true"},
		"  - host: www.a.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}"))
	model := ir.NewModel()
	kin := &ir.Fragment{Source: ir.ObjectRef{Kind: "KIngress", Namespace: "default", Name: "k"}, Created: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
		VirtualHosts: []*ir.VirtualHost{{Name: "k", Domains: []string{"a.example.com"}, Listeners: ir.ListenerSet(0).With(ir.ExternalHTTP)}}}
	if _, _, err := model.Set(kin); err != nil {
		t.Fatal(err)
	}
	served := ingress.Serve(model, res)
	if len(served.Conflicts) != 0 || len(served.Displaced) != 0 {
		t.Errorf("conflicts %v, displaced %v; want the redirect to yield quietly", served.Conflicts, served.Displaced)
	}
	if owner, _ := model.Owner("a.example.com"); owner != kin.Source {
		t.Errorf("a.example.com is owned by %v, want the KIngress", owner)
	}
	if owner, _ := model.Owner("www.a.example.com"); owner.Kind != ingress.HostKind {
		t.Errorf("www.a.example.com is owned by %v, want the Ingress host", owner)
	}
	if got := problems(res, "a"); len(got) != 0 {
		t.Errorf("problems: %q", got)
	}
}

// TestServesOnlyWhatIsServed: an Ingress claims to be served (status) only
// when a version of it is built and one of its hosts is not left out for
// an older KIngress.
func TestServesOnlyWhatIsServed(t *testing.T) {
	rule := func(host string) string {
		return fmt.Sprintf("  - host: %s\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}", host)
	}
	res := build(t, weirClass+"---\n"+
		ing("taken", "2026-01-01T00:00:00Z", nil, rule("taken.example.com"))+"---\n"+
		ing("half", "2026-01-01T00:00:00Z", nil, rule("taken.example.com")+"\n"+rule("free.example.com"))+"---\n"+
		ing("refused", "2026-01-01T00:00:00Z", map[string]string{ingress.AnnotationPrefix + "server-snippet": "x"}, rule("other.example.com")))
	model := ir.NewModel()
	kin := &ir.Fragment{Source: ir.ObjectRef{Kind: "KIngress", Namespace: "default", Name: "k"}, Created: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		VirtualHosts: []*ir.VirtualHost{{Name: "k", Domains: []string{"taken.example.com"}, Listeners: ir.ListenerSet(0).With(ir.ExternalHTTP)}}}
	if _, _, err := model.Set(kin); err != nil {
		t.Fatal(err)
	}
	served := ingress.Serve(model, res)
	for name, want := range map[string]bool{"taken": false, "half": true, "refused": false} {
		if got := served.Serves(res.Ingresses[types.NamespacedName{Namespace: "default", Name: name}]); got != want {
			t.Errorf("%s: served %v, want %v", name, got, want)
		}
	}
	if got := problems(res, "taken"); !slices.ContainsFunc(got, func(p string) bool {
		return strings.HasPrefix(p, "DomainConflict spec.rules: host taken.example.com is not served: domain \"taken.example.com\" is already served by KIngress/default/k")
	}) {
		t.Errorf("taken's problems: %q", got)
	}
}

// TestHTTPSBackendSecrets: proxy-ssl-secret's pair becomes the client
// certificate and its ca.crt the trust anchor with proxy-ssl-verify; a
// Secret that cannot be read, or has no ca.crt to verify with, makes the
// path answer 503 rather than connect unverified.
func TestHTTPSBackendSecrets(t *testing.T) {
	chain, key := selfSigned(t, "client")
	caChain, _ := selfSigned(t, "backend.internal")
	b64 := base64.StdEncoding.EncodeToString
	secret := func(name string, ca []byte) string {
		data := fmt.Sprintf("tls.crt: %s, tls.key: %s", b64(chain), b64(key))
		if ca != nil {
			data += ", ca.crt: " + b64(ca)
		}
		return fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: %s}\ntype: kubernetes.io/tls\ndata: {%s}\n---\n", name, data)
	}
	p := ingress.AnnotationPrefix
	https := func(name, host string, annotations map[string]string) string {
		annotations[p+"backend-protocol"] = "HTTPS"
		return ing(name, "2026-01-01T00:00:00Z", annotations, fmt.Sprintf("  - host: %s\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}", host)) + "---\n"
	}
	res := build(t, weirClass+"---\n"+secret("with-ca", caChain)+secret("without-ca", nil)+
		https("verified", "v.example.com", map[string]string{p + "proxy-ssl-secret": "default/with-ca", p + "proxy-ssl-verify": "on", p + "proxy-ssl-name": "backend.internal"})+
		https("cert-only", "c.example.com", map[string]string{p + "proxy-ssl-secret": "without-ca"})+
		https("no-ca", "n.example.com", map[string]string{p + "proxy-ssl-secret": "without-ca", p + "proxy-ssl-verify": "on"})+
		https("missing", "m.example.com", map[string]string{p + "proxy-ssl-secret": "nope"}))

	f := fragment(t, res, "v.example.com")
	be := f.Backends[0]
	if be.Name != "default/web:80+tls,client-cert=default/with-ca,verify=backend.internal" || be.TLS.Verify != ir.VerifyFull ||
		be.TLS.CACertificates != string(caChain) || fmt.Sprint(be.TLS.SubjectAltNames) != "[{false backend.internal}]" || be.TLS.ServerName != "" || be.TLS.ClientCertificate != "default/with-ca" {
		t.Errorf("verified backend %s: %+v", be.Name, be.TLS)
	}
	if len(f.Certificates) != 1 || f.Certificates[0].Name != "default/with-ca" || len(f.Certificates[0].Hosts) != 0 {
		t.Errorf("client certificate: %+v", f.Certificates)
	}
	f = fragment(t, res, "c.example.com")
	if be := f.Backends[0]; be.TLS.Verify != ir.VerifyNone || be.TLS.CACertificates != "" || be.TLS.ClientCertificate != "default/without-ca" {
		t.Errorf("cert-only backend %s: %+v", be.Name, be.TLS)
	}
	for name, want := range map[string]string{
		"no-ca":   "InvalidBackendTLS spec.rules[0].http.paths[0].backend: proxy-ssl-verify: Secret default/without-ca has no ca.crt",
		"missing": "InvalidBackendTLS spec.rules[0].http.paths[0].backend: proxy-ssl-secret: Secret default/nope does not exist",
	} {
		if got := problems(res, name); len(got) != 1 || !strings.Contains(got[0], want) {
			t.Errorf("%s: problems %q, want %q", name, got, want)
		}
	}
	if r := fragment(t, res, "n.example.com").VirtualHosts[0].Routes[0]; !r.Backends[0].Unresolved {
		t.Errorf("a backend that cannot be verified as asked is served: %+v", r.Backends)
	}
}

// authSecret is a Secret of basic auth users.
func authSecret(name string, data map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Secret\nmetadata: {name: %s}\ntype: Opaque\ndata:\n", name)
	for _, k := range slices.Sorted(maps.Keys(data)) {
		fmt.Fprintf(&b, "  %s: %s\n", k, base64.StdEncoding.EncodeToString([]byte(data[k])))
	}
	return b.String()
}

// TestBasicAuth: auth-type basic serves the users of the Secret that
// auth-secret names, as an htpasswd file (the first line of a user wins,
// comments and CRLF line ends allowed) or one key per user; a Secret Weir
// cannot serve (missing, without the key, with hashes Envoy cannot verify)
// makes the Ingress's paths answer 503 with a problem that quotes no hash.
func TestBasicAuth(t *testing.T) {
	const p = ingress.AnnotationPrefix
	const alice, bob = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M="
	secrets := authSecret("file", map[string]string{"auth": "# users\r\nalice:" + alice + "\r\n\r\nbob:" + bob + "\nalice:" + bob + "\n"}) + "---\n" +
		authSecret("map", map[string]string{"bob": bob + "\n", "alice": alice}) + "---\n" +
		authSecret("apr1", map[string]string{"auth": "alice:" + alice + "\nbob:$apr1$Vv8E6Bq1$3jkJ0t7U5oT9mC3eQ1lIb/\ncarol:$2y$05$c4WoMPo3SXsafkva.HHa6uXQZWr7oboPiC2bT/r7q1BB8I2s0BRqC\n"}) + "---\n" +
		authSecret("nokey", map[string]string{"users": "alice:" + alice}) + "---\n" +
		authSecret("garbled", map[string]string{"auth": "alice:" + alice + "\n:" + bob + "\n"}) + "---\n" +
		authSecret("comments", map[string]string{"auth": "alice:" + alice + ":the first\nnot a user\nbob:" + bob + "\n"}) + "---\n" +
		authSecret("latin1", map[string]string{"auth": "al\xefce:" + alice + "\n"}) + "---\n" +
		authSecret("empty", map[string]string{"auth": "# nobody yet\n"})
	rules := "  - host: a.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n      - {path: /api, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}"
	want := []ir.HtpasswdUser{{Name: "alice", Hash: alice}, {Name: "bob", Hash: bob}}
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		users       []ir.HtpasswdUser
		problem     string
	}{
		{"auth-file", map[string]string{p + "auth-type": "basic", p + "auth-secret": "file", p + "auth-realm": "Staff only"}, want, ""},
		{"auth-file by namespace/name", map[string]string{p + "auth-type": "basic", p + "auth-secret": "default/file", p + "auth-secret-type": "auth-file"}, want, ""},
		{"auth-map", map[string]string{p + "auth-type": "basic", p + "auth-secret": "map", p + "auth-secret-type": "auth-map"}, want, ""},
		{"apr1 and bcrypt", map[string]string{p + "auth-type": "basic", p + "auth-secret": "apr1"}, nil, "has 2 of 3 users whose passwords are hashed with apr1-MD5 (htpasswd's default) and bcrypt; Envoy's basic_auth verifies only SHA-1 ({SHA}) hashes"},
		{"no auth key", map[string]string{p + "auth-type": "basic", p + "auth-secret": "nokey"}, nil, `has no key "auth"`},
		{"no user name", map[string]string{p + "auth-type": "basic", p + "auth-secret": "garbled"}, nil, "has a line (2) without a user name"},
		{"nginx's comments", map[string]string{p + "auth-type": "basic", p + "auth-secret": "comments"}, want, ""},
		{"not UTF-8", map[string]string{p + "auth-type": "basic", p + "auth-secret": "latin1"}, nil, "has a user name that is not UTF-8"},
		{"missing Secret", map[string]string{p + "auth-type": "basic", p + "auth-secret": "nope"}, nil, "Secret default/nope of auth-secret does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := build(t, weirClass+"---\n"+secrets+"---\n"+ing("i", "2026-01-01T00:00:00Z", tc.annotations, rules))
			r := res.Ingresses[types.NamespacedName{Namespace: "default", Name: "i"}]
			if r.Refused {
				t.Fatalf("refused: %+v", r.Findings)
			}
			routes := fragment(t, res, "a.example.com").VirtualHosts[0].Routes
			for _, route := range routes {
				ba := filterOf[*ir.BasicAuth](route)
				if tc.problem == "" {
					if ba == nil || !slices.Equal(ba.Users, tc.users) {
						t.Errorf("route %s: basic auth %+v, want users %v", route.Name, ba, tc.users)
					}
					continue
				}
				if ba != nil || len(route.Backends) != 1 || !route.Backends[0].Unresolved {
					t.Errorf("route %s: basic auth %+v, backends %+v; want the path to answer 503", route.Name, ba, route.Backends)
				}
			}
			got := problems(res, "i")
			if tc.problem == "" {
				if len(got) != 0 {
					t.Errorf("problems %q", got)
				}
				return
			}
			if len(got) == 0 || !strings.Contains(got[0], tc.problem) || !strings.Contains(got[0], "the path answers 503") {
				t.Errorf("problems %q, want %q", got, tc.problem)
			}
			for _, g := range got {
				if strings.Contains(g, "$") || strings.Contains(g, "{SHA}W") {
					t.Errorf("a problem quotes a hash: %q", g)
				}
			}
		})
	}
}

// TestClientTLS: auth-tls-secret makes the host's certificate check
// clients against the Secret's ca.crt, on a filter chain of its own, with
// the oldest such Ingress's settings; every HTTPS route of the host
// refuses connections opened for another server name; plain HTTP is left
// unchecked, as in nginx; a CA Weir cannot serve makes the HTTPS paths
// answer 503.
func TestClientTLS(t *testing.T) {
	const p = ingress.AnnotationPrefix
	chain, key := selfSigned(t, "m.example.com")
	ca, _ := selfSigned(t, "client-ca")
	secrets := fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: pair}\ntype: kubernetes.io/tls\ndata: {tls.crt: %s, tls.key: %s}\n---\n",
		base64.StdEncoding.EncodeToString(chain), base64.StdEncoding.EncodeToString(key)) +
		authSecret("ca", map[string]string{"ca.crt": string(ca)}) + "---\n" +
		authSecret("noca", map[string]string{"tls.crt": string(ca)}) + "---\n" +
		authSecret("badca", map[string]string{"ca.crt": "not a certificate"}) + "---\n" +
		authSecret("withcrl", map[string]string{"ca.crt": string(ca), "ca.crl": "a list"}) + "---\n"
	tlsIng := func(name, created string, annotations map[string]string) string {
		return ing(name, created, annotations, "  - host: m.example.com\n    http:\n      paths:\n      - {path: /"+name+", pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n  tls: [{hosts: [m.example.com], secretName: pair}]")
	}
	depth := func(d uint32) *uint32 { return &d }
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		want        *ir.ClientValidation
		certName    string
		problem     string
		plainHTTP   bool // plain HTTP serves the paths, unchecked
	}{
		{"on by default", map[string]string{p + "auth-tls-secret": "ca"}, &ir.ClientValidation{CACertificates: ca, MaxDepth: depth(2)}, "default/pair+client-ca=default/ca,verify=on,depth=1", "", false},
		{"optional, plain HTTP too", map[string]string{p + "auth-tls-secret": "default/ca", p + "auth-tls-verify-client": "optional", p + "auth-tls-verify-depth": "2", p + "ssl-redirect": "false"},
			&ir.ClientValidation{CACertificates: ca, Optional: true, MaxDepth: depth(3)}, "default/pair+client-ca=default/ca,verify=optional,depth=2", "", true},
		{"optional_no_ca", map[string]string{p + "auth-tls-secret": "ca", p + "auth-tls-verify-client": "optional_no_ca"}, &ir.ClientValidation{CACertificates: ca, AllowInsecureFallback: true, MaxDepth: depth(2)}, "default/pair+client-ca=default/ca,verify=optional_no_ca,depth=1", "", false},
		// a asks nothing, so the host checks clients as b says.
		{"off", map[string]string{p + "auth-tls-secret": "ca", p + "auth-tls-verify-client": "off"}, &ir.ClientValidation{CACertificates: ca, MaxDepth: depth(6)}, "default/pair+client-ca=default/ca,verify=on,depth=5", "", false},
		{"no ca.crt", map[string]string{p + "auth-tls-secret": "noca"}, nil, "default/pair", "Secret default/noca of auth-tls-secret has no ca.crt; the host's HTTPS paths answer 503", false},
		{"a bad ca.crt", map[string]string{p + "auth-tls-secret": "badca"}, nil, "default/pair", "Secret default/badca of auth-tls-secret: ca.crt:", false},
		{"a missing Secret", map[string]string{p + "auth-tls-secret": "nope"}, nil, "default/pair", "Secret default/nope of auth-tls-secret does not exist", false},
		{"a CRL", map[string]string{p + "auth-tls-secret": "withcrl"}, nil, "default/pair", "Secret default/withcrl of auth-tls-secret has a ca.crl, which Weir does not apply yet", false},
		{"depth 0 is 1", map[string]string{p + "auth-tls-secret": "ca", p + "auth-tls-verify-depth": "0"}, &ir.ClientValidation{CACertificates: ca, MaxDepth: depth(2)}, "default/pair+client-ca=default/ca,verify=on,depth=0", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A younger Ingress of the host asks otherwise, and is told.
			res := build(t, weirClass+"---\n"+secrets+tlsIng("a", "2026-01-01T00:00:00Z", tc.annotations)+"---\n"+
				tlsIng("b", "2026-02-01T00:00:00Z", map[string]string{p + "auth-tls-secret": "ca", p + "auth-tls-verify-depth": "5"}))
			f := fragment(t, res, "m.example.com")
			// One certificate serves the host; the pair keeps its own
			// name, without hosts, when the host's is checked.
			var serving []*ir.Certificate
			for _, c := range f.Certificates {
				if len(c.Hosts) > 0 {
					serving = append(serving, c)
				} else if c.Name != "default/pair" || tc.want == nil {
					t.Errorf("certificate %v without hosts", c)
				}
			}
			if len(serving) != 1 || serving[0].Name != tc.certName || !reflect.DeepEqual(serving[0].ClientValidation, tc.want) {
				t.Fatalf("certificates %v; want %s serving the host with %+v", f.Certificates, tc.certName, tc.want)
			}
			for _, vh := range f.VirtualHosts {
				for i, r := range vh.Routes {
					via := r.Match.ViaCertificate
					last := i == len(vh.Routes)-1
					switch {
					case !vh.Listeners.Has(ir.ExternalHTTPS):
						if via != "" || strings.Contains(r.Name, "/default/a/") && tc.plainHTTP != (r.Redirect == nil) {
							t.Errorf("plain HTTP route %s: via %q, redirect %v", r.Name, via, r.Redirect)
						}
					case tc.problem != "":
						if len(r.Backends) != 1 || !r.Backends[0].Unresolved || r.Filters != nil {
							t.Errorf("HTTPS route %s: %+v, want 503", r.Name, r)
						}
					case tc.want == nil:
						if via != "" || r.DirectResponse != nil {
							t.Errorf("HTTPS route %s checks the filter chain %q without client validation", r.Name, via)
						}
					case last:
						// Any other connection is misdirected.
						if via != "" || r.DirectResponse == nil || r.DirectResponse.StatusCode != 421 || !matchesEverything(r.Match) {
							t.Errorf("the host's last HTTPS route %s: %+v, want 421 for every request", r.Name, r)
						}
					default:
						if via != tc.certName {
							t.Errorf("HTTPS route %s matches the filter chain %q, want %s's", r.Name, via, tc.certName)
						}
					}
				}
			}
			got := problems(res, "a")
			if tc.problem != "" && (len(got) != 1 || !strings.Contains(got[0], tc.problem)) {
				t.Errorf("problems of a %q, want %q", got, tc.problem)
			}
			if tc.want != nil && tc.name != "off" && len(problems(res, "b")) != 1 {
				t.Errorf("problems of b %q, want one saying a's settings are used", problems(res, "b"))
			}
		})
	}
}

// TestDefaultBackendAnnotation: default-backend answers a path while the
// path's Service has no ready endpoints (old has none), on its first
// port; a Service with endpoints keeps its own path; a missing default
// backend leaves the path answering 503 with a problem.
func TestDefaultBackendAnnotation(t *testing.T) {
	const p = ingress.AnnotationPrefix
	rule := func(svc string) string {
		return "  - host: d.example.com\n    http:\n      paths:\n      - {path: /" + svc + ", pathType: Prefix, backend: {service: {name: " + svc + ", port: {number: 80}}}}"
	}
	for _, tc := range []struct {
		name, service, defaultBackend, want, problem string
	}{
		{"no endpoints", "old", "web", "default/web:80", ""},
		{"endpoints", "web", "old", "default/web:80", ""},
		{"a missing default backend", "old", "gone", "", "Service default/gone of default-backend"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := build(t, weirClass+"---\n"+ing("i", "2026-01-01T00:00:00Z", map[string]string{p + "default-backend": tc.defaultBackend}, rule(tc.service)))
			r := fragment(t, res, "d.example.com").VirtualHosts[0].Routes[0]
			got := problems(res, "i")
			if tc.problem != "" {
				if len(r.Backends) != 1 || !r.Backends[0].Unresolved || len(got) != 1 || !strings.Contains(got[0], tc.problem) {
					t.Errorf("backends %+v, problems %q; want 503 and %q", r.Backends, got, tc.problem)
				}
				return
			}
			if len(r.Backends) != 1 || r.Backends[0].BackendName != tc.want || r.Backends[0].Unresolved || len(got) != 0 {
				t.Errorf("backends %+v, problems %q; want %s", r.Backends, got, tc.want)
			}
		})
	}
	res := build(t, weirClass+"---\n"+ing("i", "2026-01-01T00:00:00Z", map[string]string{p + "default-backend": "Not_A_Name"}, rule("old")))
	if r := res.Ingresses[types.NamespacedName{Namespace: "default", Name: "i"}]; !r.Refused {
		t.Errorf("an invalid default-backend was not refused: %+v", r)
	}
}

// TestCustomHTTPErrors: custom-http-errors sends the codes of every route
// of the Ingress to its default-backend, on an internal virtual host of
// the same listeners that asks the default backend for "/", with
// ingress-nginx's headers; without default-backend, or with one that does
// not resolve, the answers stay as they are; a code out of range refuses
// the Ingress.
func TestCustomHTTPErrors(t *testing.T) {
	const p = ingress.AnnotationPrefix
	rule := "  - host: e.example.com\n    http:\n      paths:\n      - {path: /app, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}"
	res := build(t, weirClass+"---\n"+ing("i", "2026-01-01T00:00:00Z", map[string]string{p + "default-backend": "old", p + "custom-http-errors": "404, 503,404"}, rule))
	f := fragment(t, res, "e.example.com")
	if len(f.VirtualHosts) != 2 {
		t.Fatalf("virtual hosts %+v; want the host's and its error pages'", f.VirtualHosts)
	}
	var ce *ir.CustomErrors
	for _, fl := range f.VirtualHosts[0].Routes[0].Filters {
		if c, ok := fl.(*ir.CustomErrors); ok {
			ce = c
		}
	}
	pages := f.VirtualHosts[1]
	if ce == nil || !slices.Equal(ce.Codes, []int{404, 503}) || ce.CodeHeader != "X-Code" || len(pages.Domains) != 1 || ce.Host != pages.Domains[0] {
		t.Fatalf("custom errors %+v to %v", ce, pages.Domains)
	}
	r := pages.Routes[0]
	var token string
	for _, m := range r.Match.Headers {
		if m.Name == "X-Weir-Internal-Token" && m.Kind == ir.HeaderExact && len(m.Value) == 64 {
			token = m.Value
		}
	}
	if token == "" || r.Match.Method != "GET" || !pages.Internal || !slices.Equal(r.RequestHeaders.Remove, []string{"X-Weir-Internal-Token"}) {
		t.Fatalf("the error pages' route %+v admits more than the gateway's own redirects, or passes the token on", r)
	}
	want := map[string]string{"X-Weir-Internal-Token": token, "X-Format": "%REQ(accept)%", "X-Original-URI": "%REQ(x-envoy-original-path?:path)%", "X-Namespace": "default", "X-Ingress-Name": "i", "X-Service-Name": "web", "X-Service-Port": "80"}
	for _, h := range ce.Headers {
		if want[h.Name] != h.Value {
			t.Errorf("header %s: %q, want %q", h.Name, h.Value, want[h.Name])
		}
		delete(want, h.Name)
	}
	if len(want) != 0 {
		t.Errorf("headers missing: %v", want)
	}
	if !strings.HasSuffix(pages.Domains[0], ir.InternalDomainSuffix) || pages.Listeners != f.VirtualHosts[0].Listeners ||
		len(r.Backends) != 1 || r.Backends[0].BackendName != "default/old:80" || r.PathRewrite == nil || r.PathRewrite.Value != "/" {
		t.Errorf("error pages %+v on %v, route %+v", pages.Domains, pages.Listeners, r)
	}
	if got := problems(res, "i"); len(got) != 0 {
		t.Errorf("problems %q", got)
	}

	// Another host's error pages have a name of their own.
	other := strings.ReplaceAll(rule, "e.example.com", "f.example.com")
	res = build(t, weirClass+"---\n"+ing("i", "2026-01-01T00:00:00Z", map[string]string{p + "default-backend": "old", p + "custom-http-errors": "404"}, rule+"\n"+other))
	if a, b := fragment(t, res, "e.example.com").VirtualHosts[1], fragment(t, res, "f.example.com").VirtualHosts[1]; a.Domains[0] == b.Domains[0] ||
		a.Routes[0].Match.Headers[0].Value == b.Routes[0].Match.Headers[0].Value {
		t.Errorf("two hosts share the error pages' domain %s or its token", a.Domains[0])
	}
	// Another Builder (another process) has tokens of its own.
	again := build(t, weirClass+"---\n"+ing("i", "2026-01-01T00:00:00Z", map[string]string{p + "default-backend": "old", p + "custom-http-errors": "404"}, rule+"\n"+other))
	if fragment(t, again, "e.example.com").VirtualHosts[1].Routes[0].Match.Headers[0].Value == fragment(t, res, "e.example.com").VirtualHosts[1].Routes[0].Match.Headers[0].Value {
		t.Error("two Builders made the same token")
	}

	for name, annotations := range map[string]map[string]string{
		"no default-backend":           {p + "custom-http-errors": "404"},
		"a missing default backend":    {p + "custom-http-errors": "404", p + "default-backend": "gone"},
		"no custom-http-errors at all": {p + "default-backend": "old"},
	} {
		res := build(t, weirClass+"---\n"+ing("i", "2026-01-01T00:00:00Z", annotations, rule))
		f := fragment(t, res, "e.example.com")
		if len(f.VirtualHosts) != 1 || slices.ContainsFunc(f.VirtualHosts[0].Routes[0].Filters, func(fl ir.HTTPFilter) bool { return fl.FilterKind() == ir.FilterCustomErrors }) {
			t.Errorf("%s: custom errors were applied: %+v", name, f.VirtualHosts)
		}
	}
	for _, bad := range []string{"99", "600", "4o4", "404;503", "", "0404"} {
		res := build(t, weirClass+"---\n"+ing("i", "2026-01-01T00:00:00Z", map[string]string{p + "default-backend": "old", p + "custom-http-errors": bad}, rule))
		if r := res.Ingresses[types.NamespacedName{Namespace: "default", Name: "i"}]; !r.Refused {
			t.Errorf("custom-http-errors %q was not refused", bad)
		}
	}
}

// matchesEverything reports whether m takes every request.
func matchesEverything(m ir.Match) bool {
	return m.Path.Kind == ir.PathPrefix && m.Path.Value == "/" && m.Method == "" && len(m.Headers) == 0 && len(m.QueryParams) == 0
}
