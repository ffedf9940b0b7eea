package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// kubectlList is what `kubectl get ingress -A -o yaml` prints: a v1 List,
// with the server's fields, of Ingresses of ingress-nginx's class.
const kubectlList = `apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata:
    name: shop
    namespace: prod
    uid: 7c1f0b5e-0000-0000-0000-000000000000
    resourceVersion: "1234"
    annotations:
      nginx.ingress.kubernetes.io/rewrite-target: /$1
      nginx.ingress.kubernetes.io/use-regex: "true"
      nginx.ingress.kubernetes.io/limit-rate: "10"
  spec:
    ingressClassName: nginx
    rules:
    - host: shop.example.com
      http:
        paths:
        - {path: /api/(.*), pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 80}}}}
  status: {loadBalancer: {ingress: [{ip: 192.0.2.1}]}}
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata:
    name: admin
    namespace: prod
    annotations:
      nginx.ingress.kubernetes.io/auth-type: basic
      nginx.ingress.kubernetes.io/auth-secret: admin-users
  spec:
    ingressClassName: nginx
    rules:
    - host: admin.example.com
      http:
        paths:
        - {path: /, pathType: Prefix, backend: {service: {name: admin, port: {number: 80}}}}
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata:
    name: legacy
    namespace: prod
    annotations:
      nginx.ingress.kubernetes.io/configuration-snippet: "more_set_headers 'X: y';"
  spec:
    ingressClassName: nginx
    rules:
    - host: legacy.example.com
      http:
        paths:
        - {path: /, pathType: Prefix, backend: {service: {name: legacy, port: {number: 80}}}}
- apiVersion: v1
  kind: Secret
  metadata: {name: admin-users, namespace: prod}
  type: Opaque
  data:
    # alice:$apr1$..., as htpasswd writes it by default
    auth: YWxpY2U6JGFwcjEkVnY4RTZCcTEkM2prSjB0N1U1b1Q5bUMzZVExbEliLwo=
`

// TestCheckJudgesIngressNginxAnnotations: weir check reads kubectl's List
// output, whatever the class, prints one row per Ingress and annotation
// with its status, and exits non-zero when an Ingress would be refused;
// without one it exits zero.
func TestCheckJudgesIngressNginxAnnotations(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ingresses.yaml")
	if err := os.WriteFile(file, []byte(kubectlList), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"check", "-f", file}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "1 Ingress would not be served") {
		t.Errorf("weir check: %v, want an error for the refused Ingress", err)
	}
	// Columns are aligned with spaces; compare with one space.
	out := strings.Join(strings.Fields(stdout.String()), " ")
	for _, want := range []string{
		"prod/legacy configuration-snippet refused snippets inject raw proxy configuration",
		"prod/admin auth-type honoured with a difference basic only",
		"prod/admin auth-secret honoured with a difference",
		"prod/shop limit-rate ignored",
		"prod/shop rewrite-target honoured prod/shop",
		"prod/shop use-regex honoured with a difference",
		// The Secret in the input is judged: its hash cannot be served.
		"prod/admin: metadata.annotations[nginx.ingress.kubernetes.io/auth-secret]: Secret prod/admin-users of auth-secret has 1 of 1 users whose passwords are hashed with apr1-MD5",
		"3 Ingresses, 6 ingress-nginx annotations: 1 honoured, 3 with a documented difference, 1 ignored, 1 refused.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the report lacks %q:\n%s", want, out)
		}
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr: %s", stderr.String())
	}

	ok := strings.Split(kubectlList, "- apiVersion: networking.k8s.io/v1\n  kind: Ingress\n  metadata:\n    name: admin")[0]
	if err := os.WriteFile(file, []byte(ok), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	if err := run(context.Background(), []string{"check", "-f", file}, &stdout, &stderr); err != nil {
		t.Errorf("weir check without a refused Ingress: %v\n%s", err, stdout.String())
	}
}
