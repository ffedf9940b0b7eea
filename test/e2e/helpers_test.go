package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/networking/test/types"

	"github.com/weir-dev/weir/pkg/reconciler/kingress"
)

const namespace = "serving-tests"

// runtimeInfo is what Knative's runtime test image answers.
type runtimeInfo = types.RuntimeInfo

// backendName is the BACKEND variable that startBackend gives each pod.
func backendName(r runtimeInfo) string { return r.Host.EnvVars["BACKEND"] }

// startBackend runs Knative's runtime test image as a pod behind a Service
// of the same name (port 80), and waits until it has a ready endpoint.
func startBackend(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	const port = 8080
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:  "app",
			Image: "ko.local/runtime:latest",
			Ports: []corev1.ContainerPort{{ContainerPort: port}},
			Env:   []corev1.EnvVar{{Name: "PORT", Value: strconv.Itoa(port)}, {Name: "BACKEND", Value: name}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
				HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt(port)},
			}},
		}}},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(port)}},
		},
	}
	if _, err := kube.Kube.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.Kube.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.Kube.CoreV1().Services(namespace).Delete(ctx, name, metav1.DeleteOptions{})
		_ = kube.Kube.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{})
	})
	if err := kube.WaitPodReady(ctx, namespace, name, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := kube.WaitEndpoints(ctx, namespace, name, 1, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// kingressSpec routes host to the Service, with a header that says which
// version of the spec served the request.
func kingressSpec(host, service, version string) v1alpha1.IngressSpec {
	return v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{{
		Hosts:      []string{host},
		Visibility: v1alpha1.IngressVisibilityExternalIP,
		HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{
			AppendHeaders: map[string]string{"X-Spec-Version": version},
			Splits: []v1alpha1.IngressBackendSplit{{
				IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: namespace, ServiceName: service, ServicePort: intstr.FromInt(80)},
				Percent:        100,
			}},
		}}},
	}}}
}

// createKIngress creates a KIngress of Weir's class (deleted when the
// test ends) and returns it as created.
func createKIngress(t *testing.T, name string, spec v1alpha1.IngressSpec) *v1alpha1.Ingress {
	t.Helper()
	ctx := context.Background()
	ing := &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Annotations: map[string]string{
			networking.IngressClassAnnotationKey: kingress.ClassName,
		}},
		Spec: spec,
	}
	got, err := kube.Networking.NetworkingV1alpha1().Ingresses(namespace).Create(ctx, ing, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.Networking.NetworkingV1alpha1().Ingresses(namespace).Delete(ctx, name, metav1.DeleteOptions{})
	})
	return got
}

// serveBackend runs a backend named name behind a KIngress of the same
// name for host (spec version "1"), and waits until it is Ready and served.
func serveBackend(t *testing.T, name, host string) {
	t.Helper()
	startBackend(t, name)
	createKIngress(t, name, kingressSpec(host, name, "1"))
	waitReady(t, name)
	eventually(t, host, 30*time.Second, fromBackend(name))
}

// updateKIngress replaces a KIngress's spec.
func updateKIngress(t *testing.T, name string, spec v1alpha1.IngressSpec) {
	t.Helper()
	ctx := context.Background()
	ing, err := kube.Networking.NetworkingV1alpha1().Ingresses(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ing.Spec = spec
	if _, err := kube.Networking.NetworkingV1alpha1().Ingresses(namespace).Update(ctx, ing, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitKIngress waits until the KIngress's status for its current
// generation satisfies done, and returns it.
func waitKIngress(t *testing.T, name string, timeout time.Duration, what string, done func(*v1alpha1.Ingress) bool) *v1alpha1.Ingress {
	t.Helper()
	var last *v1alpha1.Ingress
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		ing, err := kube.Networking.NetworkingV1alpha1().Ingresses(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = ing
		return ing.Status.ObservedGeneration == ing.Generation && done(ing), nil
	})
	if err != nil {
		if last == nil {
			t.Fatalf("KIngress %s: not %s after %v: %v", name, what, timeout, err)
		}
		t.Fatalf("KIngress %s: not %s after %v; generation %d, status %+v", name, what, timeout, last.Generation, last.Status)
	}
	return last
}

func waitReady(t *testing.T, name string) *v1alpha1.Ingress {
	t.Helper()
	return waitKIngress(t, name, 90*time.Second, "Ready", (*v1alpha1.Ingress).IsReady)
}

// get sends one request for host through the gateway Service's node port,
// where the suite's --ingressendpoint also goes.
func get(ctx context.Context, c *http.Client, host string) (runtimeInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d/", kube.NodeAddress, kube.HTTPNodePort), nil)
	if err != nil {
		return runtimeInfo{}, err
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return runtimeInfo{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return runtimeInfo{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return runtimeInfo{}, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var info runtimeInfo
	if err := json.Unmarshal(body, &info); err != nil || info.Request == nil || info.Host == nil {
		return runtimeInfo{}, fmt.Errorf("decoding %q: %v", body, err)
	}
	return info, nil
}

// eventually retries get until check accepts the answer.
func eventually(t *testing.T, host string, timeout time.Duration, check func(runtimeInfo) error) runtimeInfo {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	var last error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		info, err := get(context.Background(), c, host)
		if err == nil {
			if err = check(info); err == nil {
				return info
			}
		}
		last = err
	}
	t.Fatalf("%s: no good answer within %v: %v", host, timeout, last)
	return runtimeInfo{}
}

func fromBackend(name string) func(runtimeInfo) error {
	return func(info runtimeInfo) error {
		if got := backendName(info); got != name {
			return fmt.Errorf("answered by %q, want %q", got, name)
		}
		return nil
	}
}

// prober sends requests for a host without pause from several clients,
// the way Knative's conformance "update" test does, and counts every
// answer that is not a 200 from the expected backend.
type prober struct {
	host    string
	check   func(runtimeInfo) error
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	ok      atomic.Int64
	failed  atomic.Int64
	mu      sync.Mutex
	samples []string
	// answered is signalled after every good answer.
	answered chan struct{}
}

// waitAnswers blocks until the prober has had n more good answers: traffic
// has flowed through whatever changed before the call.
func (p *prober) waitAnswers(t *testing.T, n int64) {
	t.Helper()
	target := p.ok.Load() + n
	timeout := time.After(time.Minute)
	for p.ok.Load() < target {
		select {
		case <-p.answered:
		case <-timeout:
			t.Fatalf("prober for %s: %d good answers in a minute, want %d (%d failures)", p.host, p.ok.Load()-(target-n), n, p.failed.Load())
		}
	}
}

// startProber runs two keep-alive clients and one that opens a new
// connection for every request, so both connection reuse and new
// connections through the Service are exercised. It stops with the test
// at the latest.
func startProber(t *testing.T, host string, check func(runtimeInfo) error) *prober {
	ctx, cancel := context.WithCancel(context.Background())
	p := &prober{host: host, check: check, cancel: cancel, answered: make(chan struct{}, 1)}
	t.Cleanup(func() {
		cancel()
		p.wg.Wait()
	})
	clients := []*http.Client{
		{Timeout: 10 * time.Second},
		{Timeout: 10 * time.Second},
		{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	for _, c := range clients {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for ctx.Err() == nil {
				info, err := get(ctx, c, host)
				if ctx.Err() != nil {
					return
				}
				if err == nil {
					err = check(info)
				}
				if err == nil {
					p.ok.Add(1)
					select {
					case p.answered <- struct{}{}:
					default:
					}
				} else {
					p.failed.Add(1)
					p.mu.Lock()
					if len(p.samples) < 10 {
						p.samples = append(p.samples, time.Now().Format("15:04:05.000")+" "+err.Error())
					}
					p.mu.Unlock()
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return p
}

// stop ends the probing and fails the test if any request failed or too
// few succeeded to mean anything.
func (p *prober) stop(t *testing.T, minOK int64) {
	t.Helper()
	p.cancel()
	p.wg.Wait()
	t.Logf("prober for %s: %d good answers, %d failures", p.host, p.ok.Load(), p.failed.Load())
	if n := p.failed.Load(); n > 0 {
		t.Errorf("prober for %s saw %d failures; first ones:\n%s", p.host, n, strings.Join(p.samples, "\n"))
	}
	if p.ok.Load() < minOK {
		t.Errorf("prober for %s: only %d good answers, want at least %d", p.host, p.ok.Load(), minOK)
	}
}

// watchReady polls a Ready KIngress until the returned function is called,
// which fails the test if the KIngress was ever seen not Ready for the
// generation it had at the start.
func watchReady(t *testing.T, name string) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	start := waitReady(t, name)
	var flaps atomic.Int64
	var first atomic.Value
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
	})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			ing, err := kube.Networking.NetworkingV1alpha1().Ingresses(namespace).Get(ctx, name, metav1.GetOptions{})
			if err == nil && ing.Generation == start.Generation && !ing.IsReady() {
				if flaps.Add(1) == 1 {
					first.Store(fmt.Sprintf("%+v", ing.Status.Conditions))
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return func() {
		t.Helper()
		cancel()
		<-done
		if n := flaps.Load(); n > 0 {
			t.Errorf("KIngress %s generation %d was seen not Ready %d times, first: %v", name, start.Generation, n, first.Load())
		}
	}
}
