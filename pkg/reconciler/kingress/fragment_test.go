package kingress

import (
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/networking/pkg/ingress"

	"github.com/weir-dev/weir/pkg/ir"
)

func build(t *testing.T, ing *v1alpha1.Ingress, l *testListers) (*ir.Fragment, []*Problem) {
	t.Helper()
	return Build(ing, "", l.Listers, SecretPolicy{})
}

func TestBuildSplitsHeadersAndRewrite(t *testing.T) {
	ing := kingress("hello", func(i *v1alpha1.Ingress) {
		p := &i.Spec.Rules[0].HTTP.Paths[0]
		p.Path = "/api"
		p.Headers = map[string]v1alpha1.HeaderMatch{"Knative-Serving-Tag": {Exact: "canary"}}
		p.AppendHeaders = map[string]string{"K-Original-Host": "hello.example.com"}
		p.RewriteHost = "hello.default.svc.cluster.local"
		p.Splits = []v1alpha1.IngressBackendSplit{split("v1", 80, 60), split("v2", 80, 40), split("v3", 80, 0)}
		p.Splits[1].AppendHeaders = map[string]string{"Knative-Serving-Revision": "v2"}
	})
	l := newListers(service("v1"), service("v2"), service("v3"))
	frag, problems := build(t, ing, l)
	if len(problems) != 0 {
		t.Fatalf("problems = %v", problems)
	}
	if len(frag.VirtualHosts) != 1 || len(frag.VirtualHosts[0].Routes) != 1 {
		t.Fatalf("want one vhost with one route, got %+v", frag.VirtualHosts)
	}
	r := frag.VirtualHosts[0].Routes[0]
	want := &ir.Route{
		Name: r.Name,
		Match: ir.Match{
			Path:    ir.PathMatch{Kind: ir.PathPrefix, Value: "/api"},
			Headers: []ir.HeaderMatch{{Name: "Knative-Serving-Tag", Kind: ir.HeaderExact, Value: "canary"}},
		},
		Backends: []ir.WeightedBackend{
			{BackendName: "default/v1:80", Weight: 60},
			{BackendName: "default/v2:80", Weight: 40, RequestHeaders: ir.HeaderMutation{Set: []ir.Header{{Name: "Knative-Serving-Revision", Value: "v2"}}}},
			{BackendName: "default/v3:80", Weight: 0},
		},
		RequestHeaders:   ir.HeaderMutation{Set: []ir.Header{{Name: "K-Original-Host", Value: "hello.example.com"}}},
		HostRewrite:      "hello.default.svc.cluster.local",
		WebsocketUpgrade: true,
		Provenance:       ir.Provenance{frag.Source},
	}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("route (-want +got):\n%s", diff)
	}
	if r.Timeout != nil || r.Retry != nil {
		t.Error("KIngress routes must have no timeout and no retries")
	}
}

func TestBuildVisibilityRoles(t *testing.T) {
	ing := kingress("hello", func(i *v1alpha1.Ingress) {
		i.Spec.Rules = append(i.Spec.Rules, v1alpha1.IngressRule{
			Hosts:      []string{"hello.default.svc.cluster.local"},
			Visibility: v1alpha1.IngressVisibilityClusterLocal,
			HTTP:       i.Spec.Rules[0].HTTP.DeepCopy(),
		})
	})
	frag, _ := build(t, ing, newListers(service("svc")))
	if len(frag.VirtualHosts) != 2 {
		t.Fatalf("vhosts = %d, want 2", len(frag.VirtualHosts))
	}
	ext, local := frag.VirtualHosts[0], frag.VirtualHosts[1]
	for _, r := range ir.AllRoles {
		if !ext.Listeners.Has(r) {
			t.Errorf("external rule not on %v", r)
		}
	}
	if local.Listeners.Has(ir.ExternalHTTP) || local.Listeners.Has(ir.ExternalHTTPS) || !local.Listeners.Has(ir.InternalHTTP) {
		t.Errorf("cluster-local rule roles = %b", local.Listeners)
	}
	// Knative's short forms of cluster-local hosts are served too.
	wantLocal := []string{"hello.default", "hello.default.svc", "hello.default.svc.cluster.local"}
	if diff := cmp.Diff(wantLocal, local.Domains); diff != "" {
		t.Errorf("cluster-local domains (-want +got):\n%s", diff)
	}
}

func TestBuildProbeRoutesMatchInsertProbe(t *testing.T) {
	ing := kingress("hello", func(i *v1alpha1.Ingress) {
		i.Spec.Rules[0].HTTP.Paths[0].AppendHeaders = map[string]string{"K-Original": "x"}
		i.Spec.Rules[0].HTTP.Paths = append(i.Spec.Rules[0].HTTP.Paths, v1alpha1.HTTPIngressPath{
			Path: "/longer/path", Splits: []v1alpha1.IngressBackendSplit{split("svc", 80, 100)},
		})
	})
	l := newListers(service("svc"))
	// Knative's own probe insertion is the reference.
	work := ing.DeepCopy()
	hash, err := ingress.InsertProbe(work)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Build(work, "", l.Listers, SecretPolicy{})
	got, problems := Build(ing, hash, l.Listers, SecretPolicy{})
	if len(problems) != 0 {
		t.Fatalf("problems = %v", problems)
	}
	ignoreNames := cmp.FilterPath(func(p cmp.Path) bool {
		return p.Last().String() == ".Name" && p.Index(-2).Type() == reflect.TypeOf(ir.Route{})
	}, cmp.Ignore())
	if diff := cmp.Diff(want.VirtualHosts[0].Routes, got.VirtualHosts[0].Routes, ignoreNames); diff != "" {
		t.Errorf("routes differ from InsertProbe's (-want +got):\n%s", diff)
	}
	var order []string
	for _, r := range got.VirtualHosts[0].Routes {
		tag := r.Match.Path.Value
		if isProbeRoute(r) {
			tag += "+probe"
		}
		order = append(order, tag)
	}
	if diff := cmp.Diff([]string{"/longer/path+probe", "/longer/path", "/+probe", "/"}, order); diff != "" {
		t.Errorf("route order (-want +got):\n%s", diff)
	}
}

func TestBuildProblemsNameTheWrittenField(t *testing.T) {
	ing := kingress("hello", func(i *v1alpha1.Ingress) {
		i.Spec.Rules[0].HTTP.Paths = append(i.Spec.Rules[0].HTTP.Paths, v1alpha1.HTTPIngressPath{
			Path: "/b", Splits: []v1alpha1.IngressBackendSplit{split("missing", 80, 100)},
		})
	})
	_, problems := Build(ing, "somehash", newListers(service("svc")).Listers, SecretPolicy{})
	if len(problems) != 1 || !strings.Contains(problems[0].Message, "spec.rules[0].http.paths[1].splits[0]") {
		t.Errorf("problems = %v, want exactly one naming paths[1]", problems)
	}
}

func TestBuildHTTPOptionRedirected(t *testing.T) {
	ing := kingress("hello", func(i *v1alpha1.Ingress) { i.Spec.HTTPOption = v1alpha1.HTTPOptionRedirected })
	frag, _ := Build(ing, "somehash", newListers(service("svc")).Listers, SecretPolicy{})
	var redirect, normal *ir.VirtualHost
	for _, vh := range frag.VirtualHosts {
		if vh.Listeners.Has(ir.ExternalHTTP) {
			redirect = vh
		} else {
			normal = vh
		}
	}
	if redirect == nil || normal == nil {
		t.Fatalf("want a redirect vhost on external-http and a normal one elsewhere, got %+v", frag.VirtualHosts)
	}
	if !normal.Listeners.Has(ir.ExternalHTTPS) || !normal.Listeners.Has(ir.InternalHTTP) {
		t.Errorf("normal vhost roles = %b", normal.Listeners)
	}
	last := redirect.Routes[len(redirect.Routes)-1]
	if last.Redirect == nil || last.Redirect.Scheme != "https" || last.Redirect.StatusCode != 301 {
		t.Errorf("last redirect-vhost route = %+v, want https 301", last)
	}
	// The probe still reaches the backend over plain HTTP.
	if !isProbeRoute(redirect.Routes[0]) || len(redirect.Routes[0].Backends) == 0 {
		t.Errorf("first redirect-vhost route = %+v, want the probe route", redirect.Routes[0])
	}
}

func TestBuildEndpointsNamedTargetPortAndReadiness(t *testing.T) {
	ing := kingress("hello")
	l := newListers(
		service("svc"),
		endpointSlice("svc-a", "svc", "http", 8012, ready("10.0.0.2"), notReady("10.0.0.3")),
		endpointSlice("svc-b", "svc", "http", 9090, ready("10.0.0.4")),
		endpointSlice("svc-c", "svc", "metrics", 9091, ready("10.0.0.5")),
		endpointSlice("other", "other", "http", 1, ready("10.9.9.9")),
	)
	frag, problems := build(t, ing, l)
	if len(problems) != 0 {
		t.Fatalf("problems = %v", problems)
	}
	want := []ir.Endpoint{{Address: "10.0.0.2", Port: 8012}, {Address: "10.0.0.4", Port: 9090}}
	if diff := cmp.Diff(want, frag.Backends[0].Endpoints); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
}

func TestBuildProtocols(t *testing.T) {
	ing := kingress("hello", func(i *v1alpha1.Ingress) {
		i.Spec.Rules[0].HTTP.Paths[0].Splits = []v1alpha1.IngressBackendSplit{
			split("byname", 81, 25), split("byapp", 82, 25), split("plain", 83, 25), split("ext", 84, 25),
		}
	})
	ext := service("ext", corev1.ServicePort{Name: "http", Port: 84})
	ext.Spec.Type, ext.Spec.ExternalName = corev1.ServiceTypeExternalName, "api.example.org"
	l := newListers(
		service("byname", corev1.ServicePort{Name: "http2", Port: 81}),
		service("byapp", corev1.ServicePort{Name: "web", Port: 82, AppProtocol: ptr.To("kubernetes.io/h2c")}),
		service("plain", corev1.ServicePort{Name: "http", Port: 83}),
		ext,
	)
	frag, problems := build(t, ing, l)
	if len(problems) != 0 {
		t.Fatalf("problems = %v", problems)
	}
	got := map[string]string{}
	for _, b := range frag.Backends {
		got[b.Name] = b.Protocol.String() + "|" + b.ExternalName
	}
	want := map[string]string{
		"default/byname:81": "h2c|", "default/byapp:82": "h2c|", "default/plain:83": "http1|", "default/ext:84": "http1|api.example.org",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("backends (-want +got):\n%s", diff)
	}
}

// TestBuildExternalNameTLS: an ExternalName port that is HTTPS (443, or
// named or with appProtocol https) is reached over TLS with its name.
func TestBuildExternalNameTLS(t *testing.T) {
	ing := kingress("hello", func(i *v1alpha1.Ingress) {
		i.Spec.Rules[0].HTTP.Paths[0].Splits = []v1alpha1.IngressBackendSplit{
			split("port443", 443, 25), split("named", 8443, 25), split("byapp", 9443, 25), split("plain", 80, 25),
		}
	})
	ext := func(name string, p corev1.ServicePort) *corev1.Service {
		s := service(name, p)
		s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, name+".example.org"
		return s
	}
	l := newListers(
		ext("port443", corev1.ServicePort{Name: "web", Port: 443}),
		ext("named", corev1.ServicePort{Name: "https", Port: 8443}),
		ext("byapp", corev1.ServicePort{Name: "web", Port: 9443, AppProtocol: ptr.To("https")}),
		ext("plain", corev1.ServicePort{Name: "http", Port: 80}),
	)
	frag, problems := build(t, ing, l)
	if len(problems) != 0 {
		t.Fatalf("problems = %v", problems)
	}
	got := map[string]string{}
	for _, b := range frag.Backends {
		got[b.Name] = ""
		if b.TLS != nil {
			got[b.Name] = b.TLS.ServerName
		}
	}
	want := map[string]string{
		"default/port443:443": "port443.example.org", "default/named:8443": "named.example.org",
		"default/byapp:9443": "byapp.example.org", "default/plain:80": "",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("TLS server names (-want +got):\n%s", diff)
	}
}

func TestBuildReferenceProblems(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ing        *v1alpha1.Ingress
		objs       []runtime.Object
		policy     SecretPolicy
		selector   string
		wantReason string
		wantIn     []string
	}{{
		name:       "missing service",
		ing:        kingress("hello"),
		wantReason: "ServiceNotFound",
		wantIn:     []string{"spec.rules[0].http.paths[0].splits[0]", "default/svc"},
	}, {
		name: "missing service port",
		ing: kingress("hello", func(i *v1alpha1.Ingress) {
			i.Spec.Rules[0].HTTP.Paths[0].Splits[0].ServicePort = intstr.FromString("grpc")
		}),
		objs:       []runtime.Object{service("svc")},
		wantReason: "ServicePortNotFound",
		wantIn:     []string{"port grpc"},
	}, {
		name:       "missing secret",
		ing:        kingress("hello", withTLS(testNS, "nope", "hello.example.com")),
		objs:       []runtime.Object{service("svc")},
		wantReason: "SecretNotFound",
		wantIn:     []string{"spec.tls[0].secretName", "default/nope"},
	}, {
		name:       "missing secret, with a secret selector",
		ing:        kingress("hello", withTLS(testNS, "mine", "hello.example.com")),
		objs:       []runtime.Object{service("svc")},
		selector:   DefaultSecretSelector,
		wantReason: "SecretNotFound",
		wantIn:     []string{"default/mine", "kubectl label secret -n default mine networking.internal.knative.dev/certificate-uid=mine"},
	}, {
		name: "secret without key",
		ing:  kingress("hello", withTLS(testNS, "broken", "hello.example.com")),
		objs: []runtime.Object{service("svc"), func() *corev1.Secret {
			s := tlsSecret(testNS, "broken")
			delete(s.Data, corev1.TLSPrivateKeyKey)
			return s
		}()},
		wantReason: "InvalidTLSSecret",
		wantIn:     []string{"tls.key"},
	}, {
		name: "secret with garbage",
		ing:  kingress("hello", withTLS(testNS, "garbage", "hello.example.com")),
		objs: []runtime.Object{service("svc"), func() *corev1.Secret {
			s := tlsSecret(testNS, "garbage")
			s.Data[corev1.TLSPrivateKeyKey] = []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
			return s
		}()},
		wantReason: "InvalidTLSSecret",
		wantIn:     []string{"usable key pair"},
	}, {
		name:       "cross-namespace secret not allowed",
		ing:        kingress("hello", withTLS("certs", "wildcard", "hello.example.com")),
		objs:       []runtime.Object{service("svc"), tlsSecret("certs", "wildcard")},
		wantReason: "SecretNotAllowed",
		wantIn:     []string{"spec.tls[0].secretNamespace", "tls-secret-namespaces"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			l := newListers(tc.objs...)
			l.SecretSelector = tc.selector
			frag, problems := Build(tc.ing, "", l.Listers, tc.policy)
			if len(problems) != 1 || problems[0].Reason != tc.wantReason {
				t.Fatalf("problems = %v, want one %s", problems, tc.wantReason)
			}
			for _, s := range tc.wantIn {
				if !strings.Contains(problems[0].Message, s) {
					t.Errorf("message %q does not mention %q", problems[0].Message, s)
				}
			}
			if strings.Contains(problems[0].Message, "AAAA") || strings.Contains(problems[0].Message, string(testKeyPEM)) {
				t.Error("key material in the problem message")
			}
			// The rest of the KIngress is still served.
			if len(frag.VirtualHosts) != 1 || len(frag.Certificates) != 0 {
				t.Errorf("fragment = %d vhosts, %d certificates; want 1, 0", len(frag.VirtualHosts), len(frag.Certificates))
			}
		})
	}
}

func TestBuildTLSCertificate(t *testing.T) {
	ing := kingress("hello", withTLS("", "hello-tls", "hello.example.com"), withTLS("certs", "wildcard", "hello.example.com"))
	l := newListers(service("svc"), tlsSecret(testNS, "hello-tls"), tlsSecret("certs", "wildcard"))
	frag, problems := Build(ing, "", l.Listers, SecretPolicy{ExtraNamespaces: sets.New("certs")})
	if len(problems) != 0 {
		t.Fatalf("problems = %v", problems)
	}
	if len(frag.Certificates) != 2 {
		t.Fatalf("certificates = %v", frag.Certificates)
	}
	c := frag.Certificates[0]
	if c.Name != "default/hello-tls" || !c.Listeners.Has(ir.ExternalHTTPS) || !c.Listeners.Has(ir.InternalHTTPS) || c.Listeners.Has(ir.ExternalHTTP) {
		t.Errorf("certificate = %v roles %b", c, c.Listeners)
	}
	if frag.Certificates[1].Name != "certs/wildcard" {
		t.Errorf("allowed cross-namespace certificate = %v", frag.Certificates[1])
	}
}
