package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// KubernetesVersion is the version of kube-apiserver and
// kube-controller-manager that hack/build-k8s.sh builds.
const KubernetesVersion = "v1.35.4"

// TestImages are Knative's ingress conformance test images. The pod runner
// runs a container whose image name (the last path element, without tag or
// digest) is one of these as the binary of the same name.
var TestImages = []string{"runtime", "wsserver", "grpc-ping", "httpproxy", "timeout", "retry"}

// GatewayAPIImages are the Gateway API conformance suite's backends, by
// image name, from the conformance module in go.mod.
var GatewayAPIImages = map[string]string{"echo-basic": "sigs.k8s.io/gateway-api/conformance/echo-basic"}

// WeirImages are Weir's own commands, run the same way as pods.
var WeirImages = []string{"weir-controller", "weir-proxy"}

// EnsureKubernetes builds (or finds in .cache/k8s) etcd, kube-apiserver and
// kube-controller-manager and returns their directory. A cold build takes
// about 7 to 8 minutes; progress goes to progress.
func EnsureKubernetes(ctx context.Context, progress io.Writer) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "build-k8s.sh"))
	cmd.Env = append(os.Environ(), "K8S_VERSION="+KubernetesVersion)
	cmd.Stderr = progress
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/build-k8s.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}

// EnsureCoreDNS builds (or finds in .cache/coredns) the CoreDNS that the
// Gateway API conformance suite's base manifests run, and returns the
// binary, for StartPodRunner's extra images as "coredns".
func EnsureCoreDNS(ctx context.Context, progress io.Writer) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "build-coredns.sh"))
	cmd.Stderr = progress
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/build-coredns.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}

// BuildImages builds the test images and Weir's commands (CGO off, like
// the real images) into .cache/images and returns image name -> binary.
// Go's build cache makes this cheap when nothing changed.
func BuildImages(ctx context.Context, progress io.Writer) (map[string]string, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, ".cache", "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	args := []string{"build", "-o", dir + "/"}
	for _, name := range TestImages {
		args = append(args, "knative.dev/networking/test/test_images/"+name)
	}
	for _, name := range WeirImages {
		args = append(args, "./cmd/"+name)
	}
	for _, pkg := range GatewayAPIImages {
		args = append(args, pkg)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = progress, progress
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	images := map[string]string{}
	for _, name := range append(append([]string{}, TestImages...), WeirImages...) {
		images[name] = filepath.Join(dir, name)
	}
	for name, pkg := range GatewayAPIImages {
		images[name] = filepath.Join(dir, filepath.Base(pkg))
	}
	return images, nil
}

// imageName is the name the pod runner maps to a binary: the last path
// element of the image reference, without tag or digest. It accepts ko://
// references too.
func imageName(image string) string {
	image = strings.TrimPrefix(image, "ko://")
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, "/"); i >= 0 {
		image = image[i+1:]
	}
	if i := strings.Index(image, ":"); i >= 0 {
		image = image[:i]
	}
	return image
}
