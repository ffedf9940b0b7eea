package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// goodInput is a KIngress and its Service that every bad-input case sits
// beside: it must be served whatever else is wrong.
const goodInput = `apiVersion: v1
kind: Service
metadata: {name: app, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app-1, namespace: default, labels: {kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.0.0.1], conditions: {ready: true}}]
---
apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: good
  namespace: default
  annotations: {networking.knative.dev/ingress.class: weir.ingress.networking.knative.dev}
spec:
  rules:
  - hosts: [good.example.com]
    http:
      paths:
      - splits: [{serviceName: app, serviceNamespace: default, servicePort: 80, percent: 100}]
`

// kingressDoc is a KIngress named bad; rules and extra are spliced in.
func kingressDoc(meta, rules string) string {
	return `apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: bad
` + meta + `spec:
  rules:
` + rules
}

const weirClass = "  namespace: default\n  annotations: {networking.knative.dev/ingress.class: weir.ingress.networking.knative.dev}\n"

func rule(host, split string) string {
	return "  - hosts: [" + host + "]\n    http:\n      paths:\n      - splits: [" + split + "]\n"
}

const appSplit = "{serviceName: app, serviceNamespace: default, servicePort: 80, percent: 100}"

// TestTranslateSaysWhatItSkipped runs weir translate over each bad input
// of issue #20's list, beside a good KIngress: it says what it skipped or
// left out and why, with the file, document and object; the good one is
// served; and --strict turns the same run into an error.
func TestTranslateSaysWhatItSkipped(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input string
		want  string
	}{
		{"duplicate host across rules", kingressDoc(weirClass, rule("dup.example.com", appSplit)+rule("dup.example.com", appSplit)),
			`left out: KIngress/default/bad: spec.rules[1]: external-http: virtual host "default/bad/r1" left out: domain "dup.example.com" is already served by virtual host "default/bad/r0"`},
		{"CR/LF in a header value", kingressDoc(weirClass, "  - hosts: [crlf.example.com]\n    http:\n      paths:\n      - appendHeaders: {x-a: \"one\\r\\ntwo\"}\n        splits: ["+appSplit+"]\n"),
			`left out: KIngress/default/bad: spec.rules[0]: virtual host "default/bad/r0": route "default/bad/spec.rules[0].http.paths[0]" left out`},
		{"NUL in a header value", kingressDoc(weirClass, "  - hosts: [nul.example.com]\n    http:\n      paths:\n      - appendHeaders: {x-a: \"a\\0b\"}\n        splits: ["+appSplit+"]\n"),
			`left out: KIngress/default/bad: spec.rules[0]: virtual host "default/bad/r0": route "default/bad/spec.rules[0].http.paths[0]" left out`},
		{"missing class annotation", kingressDoc("  namespace: default\n", rule("noclass.example.com", appSplit)),
			`skipped: in.yaml: document 4: KIngress default/bad skipped: its networking.knative.dev/ingress.class annotation is "", and Weir serves "weir.ingress.networking.knative.dev"`},
		{"duplicate object", strings.Replace(goodInput[strings.Index(goodInput, "apiVersion: networking"):], "good.example.com", "second.example.com", 1),
			`skipped: in.yaml: document 4: KIngress default/good is defined again; the first, document 3, is served`},
		{"missing namespace", kingressDoc("  annotations: {networking.knative.dev/ingress.class: weir.ingress.networking.knative.dev}\n", rule("nons.example.com", appSplit)),
			""}, // defaulted to "default", as the API server does: served, nothing to say
		{"unknown kind", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
			`skipped: in.yaml: document 4: unsupported kind apps/v1 Deployment`},
		{"truncated file", "apiVersion: v1\nkind: Service\nmetadata: {name: cut, namespace: default}\nspec: {ports: [{name: http, port: 8",
			`skipped: in.yaml: document 4: `},
		{"Secret that is not TLS", "apiVersion: v1\nkind: Secret\nmetadata: {name: opaque, namespace: default}\ntype: Opaque\ndata: {password: eA==}\n---\n" +
			kingressDoc(weirClass, rule("tls.example.com", appSplit)) + "  tls:\n  - {hosts: [tls.example.com], secretName: opaque, secretNamespace: default}\n",
			`not ready: in.yaml: document 5 (KIngress default/bad): InvalidTLSSecret: spec.tls[0].secretName: Secret default/opaque needs non-empty "tls.crt" and "tls.key"`},
		{"Service port name not found", kingressDoc(weirClass, rule("port.example.com", "{serviceName: app, serviceNamespace: default, servicePort: grpc, percent: 100}")),
			`not ready: in.yaml: document 4 (KIngress default/bad): ServicePortNotFound: spec.rules[0].http.paths[0].splits[0] refers to port grpc of Service default/app, which has no such port`},
		{"split percentages not summing to 100", kingressDoc(weirClass, rule("split.example.com", "{serviceName: app, serviceNamespace: default, servicePort: 80, percent: 60}")),
			`skipped: in.yaml: document 4 (KIngress default/bad): `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := filepath.Join(t.TempDir(), "in.yaml")
			if err := os.WriteFile(in, []byte(goodInput+"---\n"+tc.input), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{"translate", "-f", in}, &stdout, &stderr); err != nil {
				t.Fatalf("weir translate: %v\n%s", err, stderr.String())
			}
			if !strings.Contains(stdout.String(), `"default/good/r0"`) {
				t.Errorf("the good KIngress is not served beside %s", tc.name)
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if !strings.HasPrefix(lines[0], "Read 1 file, ") {
				t.Errorf("first line %q, want the summary of what was read", lines[0])
			}
			if tc.want == "" {
				if len(lines) != 1 {
					t.Errorf("want only the summary, got:\n%s", stderr.String())
				}
				return
			}
			want := strings.ReplaceAll(tc.want, "in.yaml", in)
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
			}
			stdout.Reset()
			stderr.Reset()
			err := run(context.Background(), []string{"translate", "--strict", "-f", in}, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), "--strict") {
				t.Errorf("--strict: %v, want an error", err)
			}
		})
	}
}
