package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/networking/test/types"
)

func TestImageName(t *testing.T) {
	for in, want := range map[string]string{
		"ko.local/runtime:latest":                               "runtime",
		"gcr.io/knative-tests/test-images/grpc-ping@sha256:abc": "grpc-ping",
		"httpproxy":                    "httpproxy",
		"localhost:5000/x/wsserver:v1": "wsserver",
		"ko://github.com/weir-dev/weir/cmd/weir-proxy": "weir-proxy",
	} {
		if got := imageName(in); got != want {
			t.Errorf("imageName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"POD_NAME": "p", "PORT": "8080"}
	if got := expand("-node-id=$(POD_NAME):$(PORT)$(NOPE)", vars); got != "-node-id=p:8080$(NOPE)" {
		t.Errorf("expand = %q", got)
	}
}

// runtimeInfo is what Knative's runtime test image answers.
type runtimeInfo = types.RuntimeInfo

// TestClusterEndToEnd runs the whole harness: control plane, pod runner,
// Weir's controller and a gateway; then a runtime test-image pod behind a
// Service, a KIngress of Weir's class that the controller's prober must
// find ready on the gateway, and requests through the gateway's node port
// and, from inside the cluster, through an httpproxy pod that dials the
// private load balancer by its DNS name.
func TestClusterEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("test/cluster needs root (network namespaces); CI and the dev machines run as root")
	}
	t0 := time.Now()
	c := StartForTest(t, Options{})
	// Building the pod images may take minutes on a cold cache.
	buildCtx, cancelBuild := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancelBuild()
	if _, err := c.StartPodRunner(buildCtx, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := c.StartWeir(ctx, WeirOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster and Weir up in %v", time.Since(t0).Round(time.Millisecond))

	const ns, port = "serving-tests", 8080
	// Both pods listen on the same port: each has its own address.
	runtimePod := testPod("hello", "ko.local/runtime:latest", port, nil)
	runtimePod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
		HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt(port)},
	}}
	mustCreate(t, c, runtimePod)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "hello", Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "hello"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(port)}},
		},
	}
	if _, err := c.Kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitPodReady(ctx, ns, "hello", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitEndpoints(ctx, ns, "hello", 1, time.Minute); err != nil {
		t.Fatal(err)
	}

	const host = "hello.example.com"
	ing := &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "hello", Namespace: ns, Annotations: map[string]string{
			networking.IngressClassAnnotationKey: "weir.ingress.networking.knative.dev",
		}},
		Spec: v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{{
			Hosts:      []string{host},
			Visibility: v1alpha1.IngressVisibilityExternalIP,
			HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{
				Splits: []v1alpha1.IngressBackendSplit{{
					IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: ns, ServiceName: "hello", ServicePort: intstr.FromInt(80)},
					Percent:        100,
				}},
			}}},
		}}},
	}
	if _, err := c.Networking.NetworkingV1alpha1().Ingresses(ns).Create(ctx, ing, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var last *v1alpha1.Ingress
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := c.Networking.NetworkingV1alpha1().Ingresses(ns).Get(ctx, "hello", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = got
		return got.IsReady(), nil
	})
	if err != nil {
		if last == nil {
			t.Fatalf("KIngress not ready: %v", err)
		}
		t.Fatalf("KIngress not ready: %+v", last.Status)
	}
	lb := last.Status.PrivateLoadBalancer
	if lb == nil || len(lb.Ingress) == 0 || lb.Ingress[0].DomainInternal != ServiceHost("weir-system", "weir-internal") {
		t.Fatalf("private load balancer = %+v, want %s", lb, ServiceHost("weir-system", "weir-internal"))
	}

	// From outside: the suite's --ingressendpoint=127.0.0.1 path.
	info := getRuntime(t, fmt.Sprintf("http://%s:%d/", c.NodeAddress, c.HTTPNodePort), host)
	if info.Request.Host != host || info.Host.EnvVars["PORT"] != strconv.Itoa(port) {
		t.Errorf("runtime answered %+v, want host %s and PORT=%d", info, host, port)
	}

	// From inside: httpproxy resolves the private load balancer's name
	// through its pod's /etc/hosts and dials it on port 80, like the
	// suite's cluster-local tests.
	proxy := testPod("proxy", "ko.local/httpproxy:latest", port, map[string]string{
		"TARGET_HOST":  host,
		"GATEWAY_HOST": lb.Ingress[0].DomainInternal,
	})
	mustCreate(t, c, proxy)
	if err := c.WaitPodReady(ctx, ns, "proxy", time.Minute); err != nil {
		t.Fatal(err)
	}
	p, err := c.Kube.CoreV1().Pods(ns).Get(ctx, "proxy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	info = getRuntime(t, fmt.Sprintf("http://%s:%d/", p.Status.PodIP, port), "")
	if info.Request.Host != host {
		t.Errorf("through httpproxy, runtime saw host %q, want %s", info.Request.Host, host)
	}

	// pods/log reaches the pod runner's kubelet API through the apiserver.
	logs, err := c.Kube.CoreV1().Pods(ns).GetLogs("proxy", &corev1.PodLogOptions{Container: "app", Timestamps: true}).DoRaw(ctx)
	if err != nil || !strings.Contains(string(logs), "HTTP proxy received a request.") {
		t.Errorf("pods/log of proxy: %v\n%s", err, logs)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(logs)), "\n") {
		stamp, _, _ := strings.Cut(line, " ")
		if _, err := time.Parse(time.RFC3339Nano, stamp); err != nil {
			t.Errorf("pods/log line %q has no timestamp: %v", line, err)
		}
	}
	future := metav1.NewTime(time.Now().Add(time.Hour))
	if logs, err := c.Kube.CoreV1().Pods(ns).GetLogs("proxy", &corev1.PodLogOptions{SinceTime: &future}).DoRaw(ctx); err != nil || len(logs) != 0 {
		t.Errorf("pods/log since an hour from now: %v %q, want nothing", err, logs)
	}
	if _, err := c.Kube.CoreV1().Pods(ns).GetLogs("proxy", &corev1.PodLogOptions{Container: "other"}).DoRaw(ctx); err == nil {
		t.Error("pods/log of a container the pod does not have succeeded")
	}

	// Deleting a pod stops its process and removes the object.
	if err := c.Kube.CoreV1().Pods(ns).Delete(ctx, "proxy", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := c.Kube.CoreV1().Pods(ns).Get(ctx, "proxy", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Error("deleted pod still exists")
	}
	t.Logf("end to end in %v", time.Since(t0).Round(time.Millisecond))
}

func testPod(name, image string, port int, env map[string]string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "serving-tests", Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:  "app",
			Image: image,
			Ports: []corev1.ContainerPort{{ContainerPort: int32(port)}},
			Env:   []corev1.EnvVar{{Name: "PORT", Value: strconv.Itoa(port)}},
		}}},
	}
	for k, v := range env {
		p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, corev1.EnvVar{Name: k, Value: v})
	}
	return p
}

func mustCreate(t *testing.T, c *Cluster, p *corev1.Pod) {
	t.Helper()
	if _, err := c.Kube.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// getRuntime GETs url (with Host header host, if set), retrying briefly
// while the gateway picks up the route, and decodes the runtime's answer.
func getRuntime(t *testing.T, url, host string) runtimeInfo {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	var lastErr error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := hc.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			lastErr = fmt.Errorf("%s: %s", resp.Status, body)
			continue
		}
		var info runtimeInfo
		if err := json.Unmarshal(body, &info); err != nil || info.Request == nil || info.Host == nil {
			t.Fatalf("GET %s: %v: %s", url, err, body)
		}
		return info
	}
	t.Fatalf("GET %s (Host %q): %v", url, host, lastErr)
	return runtimeInfo{}
}
