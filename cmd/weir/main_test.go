package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/pem"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata goldens")

// goldenInputs maps golden names to `weir translate -f` arguments: every
// testdata/X.in.yaml, and the README's example directory.
func goldenInputs(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.in.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no inputs: %v", err)
	}
	inputs := map[string]string{
		"example-hello":          filepath.Join("..", "..", "examples", "hello"),
		"example-gateway-api":    filepath.Join("..", "..", "examples", "gateway-api"),
		"example-traffic-policy": filepath.Join("..", "..", "examples", "traffic-policy"),
	}
	for _, f := range files {
		inputs[strings.TrimSuffix(filepath.Base(f), ".in.yaml")] = f
	}
	return inputs
}

// TestTranslateGoldens runs `weir translate -f INPUT` and compares the
// output with testdata/NAME.out.json.
func TestTranslateGoldens(t *testing.T) {
	if *update {
		// Inputs first, so the goldens are made from fresh inputs.
		TestServingShapes(t)
	}
	for name, in := range goldenInputs(t) {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{"translate", "-f", in}, &stdout, &stderr); err != nil {
				t.Fatalf("weir translate: %v\n%s", err, stderr.String())
			}
			// NAME.err.txt holds the expected warnings; without it there
			// must be none.
			errGolden := filepath.Join("testdata", name+".err.txt")
			wantErr, err := os.ReadFile(errGolden)
			switch {
			case err == nil && *update:
				if err := os.WriteFile(errGolden, stderr.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			case err == nil && !bytes.Equal(stderr.Bytes(), wantErr):
				t.Errorf("warnings differ from %s:\n%s", errGolden, stderr.String())
			case err != nil && stderr.Len() > 0:
				t.Errorf("unexpected warnings:\n%s", stderr.String())
			}
			golden := filepath.Join("testdata", name+".out.json")
			if *update {
				if err := os.WriteFile(golden, stdout.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./cmd/weir -update, then review the golden)", err)
			}
			if !bytes.Equal(stdout.Bytes(), want) {
				t.Errorf("output differs from %s; rerun with -update and review the diff", golden)
			}
		})
	}
}

// TestTranslateErrors covers what stops weir translate; what it skips and
// goes on without is TestTranslateSaysWhatItSkipped.
func TestTranslateErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "no command given"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"no files", []string{"translate"}, "at least one -f"},
		{"bad output", []string{"translate", "-f", "x", "-o", "xml"}, `-o "xml"`},
		{"missing file", []string{"translate", "-f", filepath.Join(dir, "nope.yaml")}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want it to contain %q", err, tc.want)
			}
			if stdout.Len() > 0 {
				t.Errorf("printed config despite the error:\n%s", stdout.String())
			}
		})
	}
}

func TestTranslateWarnsAboutUnreadyKIngress(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "ing.yaml")
	if err := os.WriteFile(in, []byte(`apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: hello
  annotations: {networking.knative.dev/ingress.class: weir.ingress.networking.knative.dev}
spec:
  rules:
  - hosts: [hello.example.com]
    http:
      paths:
      - splits: [{serviceName: missing, serviceNamespace: default, servicePort: 80, percent: 100}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"translate", "-f", in}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "ServiceNotFound") || !strings.Contains(stderr.String(), "default/missing") {
		t.Errorf("stderr = %q, want a ServiceNotFound warning", stderr.String())
	}
	if !strings.Contains(stdout.String(), `"listeners"`) {
		t.Error("no config printed")
	}
}

// TestTranslateKeepsKeysOutUnlessAsked: no private key reaches stdout or
// stderr of weir translate, in any form, unless --show-secrets is given.
func TestTranslateKeepsKeysOutUnlessAsked(t *testing.T) {
	in := filepath.Join("testdata", "gateway-backend-tls.in.yaml")
	keyPEM, err := os.ReadFile(filepath.Join("testdata", "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(keyPEM)
	forms := []string{string(keyPEM), base64.StdEncoding.EncodeToString(keyPEM), base64.StdEncoding.EncodeToString(block.Bytes), "PRIVATE KEY"}
	for _, show := range []bool{false, true} {
		args := []string{"translate", "-f", in}
		if show {
			args = append(args, "--show-secrets")
		}
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), args, &stdout, &stderr); err != nil {
			t.Fatal(err)
		}
		for i, f := range forms {
			inOut := strings.Contains(stdout.String(), f)
			if strings.Contains(stderr.String(), f) {
				t.Errorf("show=%v: stderr holds the key (form %d)", show, i)
			}
			if !show && inOut {
				t.Errorf("stdout holds the key (form %d) without --show-secrets", i)
			}
		}
		if show && !strings.Contains(stdout.String(), base64.StdEncoding.EncodeToString(keyPEM)) {
			t.Error("--show-secrets did not print the key")
		}
	}
}
