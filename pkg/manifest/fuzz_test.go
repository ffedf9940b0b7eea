package manifest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weir-dev/weir/pkg/dataplane"
	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/ingress"
	"github.com/weir-dev/weir/pkg/translate"
)

// FuzzYAMLThroughTranslate feeds YAML bytes through what weir translate
// and weir run do with a file: decode, validation (the namespace defaulted
// first), reconcile and translate, then weir-proxy's config intake
// (dataplane's Check: Apply without binding). Nothing may panic, the
// result must pass Validate (Envoy's acceptance rules included), and
// weir-proxy must take what translate emits, since a refusal there would
// be a NACK of the whole update. Seeds are cmd/weir's testdata inputs and
// the examples; make unit fuzzes it for a bounded time.
func FuzzYAMLThroughTranslate(f *testing.F) {
	inputs, _ := filepath.Glob(filepath.Join("..", "..", "cmd", "weir", "testdata", "*.in.yaml"))
	examples, _ := filepath.Glob(filepath.Join("..", "..", "examples", "*", "*.yaml"))
	for _, in := range append(inputs, examples...) {
		b, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("apiVersion: v1\nkind: Service\nmetadata: {name: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, _ := Decode("fuzz.yaml", data)
		servesAsEnvoyWould(t, docs)
	})
}

// FuzzIngressAnnotations puts one ingress-nginx annotation, with any
// value, on an Ingress with any path of any type, beside a canary and a
// TLS host, through what weir translate does: nothing may panic, and what
// translate emits must pass Validate and weir-proxy's intake, or the
// Ingress must have been refused before it got there.
func FuzzIngressAnnotations(f *testing.F) {
	for _, seed := range []struct{ key, value, path string }{
		{"rewrite-target", "/$2", "/api(/|$)(.*)"},
		{"use-regex", "true", "/a[0-9]+"},
		{"permanent-redirect", "https://x.example.com$request_uri", "/"},
		{"temporal-redirect", "http://x.example.com:8080/a?b=c", "/"},
		{"cors-allow-origin", "https://*.example.com", "/"},
		{"canary-by-header-pattern", "^v[0-9]$", "/"},
		{"canary-weight", "30", "/"},
		{"upstream-vhost", "internal:8080", "/x"},
		{"app-root", "/home", "/"},
		{"x-forwarded-prefix", "/p", "/"},
		{"backend-protocol", "GRPC", "/"},
		{"ssl-redirect", "false", "/"},
		{"proxy-body-size", "8m", "/"},
		{"whitelist-source-range", "10.0.0.0/8, 192.0.2.1, 2001:db8::/32", "/"},
		{"denylist-source-range", "127.0.0.1", "/"},
		{"permanent-redirect-code", "308", "/"},
		{"mirror-target", "https://mirror.example.com:8443$request_uri", "/"},
		{"proxy-read-timeout", "3600", "/"},
		{"proxy-connect-timeout", "2", "/"},
		{"from-to-www-redirect", "true", "/"},
	} {
		f.Add(seed.key, seed.value, seed.path, uint8(0))
	}
	f.Fuzz(func(t *testing.T, key, value, path string, pathType uint8) {
		kinds := []string{"Prefix", "Exact", "ImplementationSpecific"}
		annotations := map[string]string{
			ingressAnnotation(key):           value,
			ingressAnnotation("enable-cors"): "true",
		}
		mk := func(name string, annotations map[string]string, tlsHost bool) *netv1.Ingress {
			pt := netv1.PathType(kinds[int(pathType)%len(kinds)])
			ing := &netv1.Ingress{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: annotations},
				Spec: netv1.IngressSpec{Rules: []netv1.IngressRule{{Host: "a.example.com", IngressRuleValue: netv1.IngressRuleValue{HTTP: &netv1.HTTPIngressRuleValue{
					Paths: []netv1.HTTPIngressPath{{Path: path, PathType: &pt, Backend: netv1.IngressBackend{Service: &netv1.IngressServiceBackend{Name: "web", Port: netv1.ServiceBackendPort{Number: 80}}}}},
				}}}}},
			}
			if tlsHost {
				ing.Spec.TLS = []netv1.IngressTLS{{Hosts: []string{"a.example.com"}, SecretName: "missing"}}
			}
			return ing
		}
		docs := []Document{
			{File: "f", Index: 1, Object: &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}},
			{File: "f", Index: 2, Object: mk("main", annotations, true)},
			{File: "f", Index: 3, Object: mk("canary", map[string]string{ingressAnnotation("canary"): "true", ingressAnnotation("canary-weight"): "10",
				ingressAnnotation("canary-by-header"): "x-canary", ingressAnnotation("canary-by-cookie"): "c", ingressAnnotation(key): value}, false)},
		}
		servesAsEnvoyWould(t, docs)
	})
}

func ingressAnnotation(name string) string { return ingress.AnnotationPrefix + name }

// servesAsEnvoyWould applies docs as weir translate does and fails if
// translate errs, if Envoy would refuse the result, or if weir-proxy
// would: a refusal there is a NACK of the whole update.
func servesAsEnvoyWould(t *testing.T, docs []Document) {
	t.Helper()
	model := ir.NewModel()
	_, _ = (&Reconciler{Model: model, Syncer: &triggers{}}).Apply(context.Background(), docs)
	res, err := translate.New(translate.DefaultOptions()).Translate(model.Fragments())
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Validate(); err != nil {
		t.Fatalf("a real Envoy would refuse this: %v", err)
	}
	if err := dataplane.New(dataplane.Options{}).Check(&dataplane.Resources{Listeners: res.Listeners, Routes: res.Routes,
		Clusters: res.Clusters, Endpoints: res.Endpoints, Secrets: res.Secrets}); err != nil {
		t.Fatalf("weir-proxy refuses what translate emits: %v", err)
	}
}
