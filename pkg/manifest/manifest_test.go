package manifest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/weir-dev/weir/pkg/ir"
)

const validDocs = `
# a comment-only document is skipped
---
apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: hello-1
  labels: {kubernetes.io/service-name: hello}
addressType: IPv4
ports: [{name: http, port: 9001, protocol: TCP}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
---
apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: hello
  annotations: {networking.knative.dev/ingress.class: weir.ingress.networking.knative.dev}
spec:
  rules:
  - hosts: [hello.example.com]
    visibility: ExternalIP
    http:
      paths:
      - splits:
        - {serviceName: hello, serviceNamespace: default, servicePort: 80, percent: 100}
`

func TestDecodeValid(t *testing.T) {
	docs, err := Decode("a.yaml", []byte(validDocs))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 3 || docs[0].Index != 1 || docs[2].Index != 3 {
		t.Fatalf("docs = %v, want 3 numbered 1..3", docs)
	}
}

// TestDecodeWritesStringDataIntoData: a Secret's stringData is read as
// the API server stores it, into data, winning over the same key there.
func TestDecodeWritesStringDataIntoData(t *testing.T) {
	docs, err := Decode("a.yaml", []byte("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: YQ==, b: Yg==}\nstringData: {b: written, c: 'alice:{SHA}x'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := docs[0].Object.(*corev1.Secret)
	if len(s.StringData) != 0 || string(s.Data["a"]) != "a" || string(s.Data["b"]) != "written" || string(s.Data["c"]) != "alice:{SHA}x" {
		t.Errorf("data %q, stringData %q", s.Data, s.StringData)
	}
}

// TestDecodeSkipsGatewayParameters: GatewayParameters shape data planes
// weir-controller makes; a directory written for a cluster loads in weir
// run with them left out.
func TestDecodeSkipsGatewayParameters(t *testing.T) {
	docs, err := Decode("a.yaml", []byte(validDocs+"---\napiVersion: gateway.weir.dev/v1alpha1\nkind: GatewayParameters\nmetadata: {name: p}\nspec: {replicas: 2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 3 {
		t.Fatalf("docs = %v, want the 3 others", docs)
	}
}

func TestDecodeErrorsNameFileAndDocument(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"bad yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: [}\n", "a.yaml: document 1"},
		{"unknown kind", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
			"a.yaml: document 2: unsupported kind apps/v1 Deployment"},
		{"unregistered kind", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n", "a.yaml: document 1: unsupported kind example.com/v1 Widget"},
		{"unknown field", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {portz: []}\n", `unknown field "spec.portz"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode("a.yaml", []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestValidateNamesField(t *testing.T) {
	bad := strings.Replace(validDocs, "percent: 100", "percent: 150", 1)
	docs, err := Decode("a.yaml", []byte(bad))
	if err != nil {
		t.Fatal(err)
	}
	// The namespace is defaulted before validation, as the API server and
	// weir translate do, so the message names the object it will be.
	_, err = Admit(context.Background(), docs[2])
	if err == nil || !strings.Contains(err.Error(), "a.yaml: document 3 (KIngress default/hello)") || !strings.Contains(err.Error(), "percent") {
		t.Errorf("error = %v, want the document, the defaulted namespace and the percent field", err)
	}
	// Without the bad percent, the same KIngress without a namespace is
	// accepted: weir run and weir translate agree.
	good, err := Decode("a.yaml", []byte(validDocs))
	if err != nil {
		t.Fatal(err)
	}
	if key, err := Admit(context.Background(), good[2]); err != nil || key.Namespace != "default" {
		t.Errorf("Admit = %v, %v; want KIngress default/hello", key, err)
	}
}

type triggers struct{ n int }

func (t *triggers) Trigger() { t.n++ }

func TestApplyServesValidAndDropsRemoved(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("hello.yaml", validDocs)
	write("broken.yaml", strings.NewReplacer("name: hello\n  annotations", "name: broken\n  annotations",
		"percent: 100", "percent: 150").Replace(validDocs[strings.Index(validDocs, "apiVersion: networking"):]))
	write("notes.txt", "not yaml, not read")

	docs, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	model := ir.NewModel()
	r := &Reconciler{Model: model, Syncer: &triggers{}}
	statuses, errs := r.Apply(context.Background(), docs)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "broken.yaml: document 1 (KIngress default/broken)") {
		t.Errorf("errs = %v, want one for broken.yaml", errs)
	}
	if len(statuses) != 1 || statuses[0].Summary() != "Ready" {
		t.Fatalf("statuses = %+v, want hello Ready", statuses)
	}
	f, ok := model.Get(ir.ObjectRef{Kind: "KIngress", Namespace: "default", Name: "hello"})
	if !ok || len(f.Backends) != 1 || len(f.Backends[0].Endpoints) != 1 || f.Backends[0].Endpoints[0].Port != 9001 {
		t.Fatalf("served fragment = %+v, want hello with endpoint 127.0.0.1:9001", f)
	}

	// Dropping the file drops the KIngress.
	if err := os.Remove(filepath.Join(dir, "hello.yaml")); err != nil {
		t.Fatal(err)
	}
	docs, _ = Load(dir)
	r.Apply(context.Background(), docs)
	if n := len(model.Fragments()); n != 0 {
		t.Errorf("fragments after removal = %d, want 0", n)
	}
}

func TestApplyReportsMissingService(t *testing.T) {
	docs, err := Decode("a.yaml", []byte(validDocs[strings.Index(validDocs, "apiVersion: networking"):]))
	if err != nil {
		t.Fatal(err)
	}
	statuses, errs := (&Reconciler{Model: ir.NewModel(), Syncer: &triggers{}}).Apply(context.Background(), docs)
	if len(errs) != 0 || len(statuses) != 1 {
		t.Fatalf("errs = %v, statuses = %v", errs, statuses)
	}
	if got := statuses[0].Summary(); !strings.HasPrefix(got, "ServiceNotFound: ") {
		t.Errorf("summary = %q", got)
	}
}
