package standalone

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func trafficPolicyYAML(name, targetKind, targetGroup, target, rateLimit string) string {
	return fmt.Sprintf(`apiVersion: policy.weir.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: %s, namespace: default}
spec:
  targetRefs: [{group: %q, kind: %s, name: %s}]
  rateLimit: %s
  blockResponse:
    body: slow down
    headers: [{name: X-Limited-By, value: weir}]
`, name, targetGroup, targetKind, target, rateLimit)
}

// getWith sends a GET for host with extra headers and returns the status,
// body and headers.
func getWith(t *testing.T, port int, host string, header http.Header) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
	req.Host = host
	for k, vv := range header {
		req.Header[k] = vv
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// burst sends n requests one after another and counts the 200s; each
// other answer must be the policy's 429.
func burst(t *testing.T, port int, host string, header http.Header, n int) int {
	t.Helper()
	ok := 0
	for range n {
		code, body, h := getWith(t, port, host, header)
		switch code {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
			if body != "slow down" || h.Get("Retry-After") != "1" || h.Get("X-Limited-By") != "weir" || h.Get("X-Envoy-Ratelimited") != "true" {
				t.Fatalf("a refusal: body %q, headers %v; want the policy's block response", body, h)
			}
		default:
			t.Fatalf("status %d %q", code, body)
		}
	}
	return ok
}

// TestRunServesGlobalRateLimit: a TrafficPolicy on a KIngress limits its
// requests through weir run's rate limit service, and only its own; a
// policy per header value counts each value on its own; an invalid
// policy says which field is wrong, and removing the policy lifts the
// limit.
func TestRunServesGlobalRateLimit(t *testing.T) {
	dir := t.TempDir()
	p1, p2 := backend(t, "v1"), backend(t, "v2")
	write(t, dir, "backends.yaml", backendsYAML(p1, p2))
	write(t, dir, "hello.yaml", kingressYAML("hello.example.com", 100, 0))
	write(t, dir, "other.yaml", strings.Replace(kingressYAML("other.example.com", 0, 100), "name: hello", "name: other", 1))
	write(t, dir, "policy.yaml", trafficPolicyYAML("limit-hello", "Ingress", "networking.internal.knative.dev", "hello", "{qps: 5}"))
	g := startRun(t, dir, 20*time.Millisecond)
	port, _, _, _ := g.Ports()

	// At 5 a second, a burst of 30 gets at most 5 through: the window
	// may hold some of the last second's.
	eventually(t, "the limit to be in force", func() bool { return burst(t, port, "hello.example.com", nil, 10) < 10 })
	if ok := burst(t, port, "hello.example.com", nil, 30); ok > 5 {
		t.Errorf("%d of a burst of 30 passed a limit of 5 a second", ok)
	}
	if ok := burst(t, port, "other.example.com", nil, 30); ok != 30 {
		t.Errorf("%d of 30 to a KIngress without a policy passed", ok)
	}
	if lines := g.Report().TrafficPolicies; len(lines) != 1 || !strings.Contains(lines[0], "Accepted=True") {
		t.Errorf("status %q, want the policy accepted on its target", lines)
	}

	// Per header value: each user has 3 a second of its own; requests
	// without the header are not limited.
	write(t, dir, "policy.yaml", trafficPolicyYAML("limit-hello", "Ingress", "networking.internal.knative.dev", "hello", "{qps: 3, by: {type: Header, header: X-User}}"))
	alice, bob := http.Header{"X-User": {"alice"}}, http.Header{"X-User": {"bob"}}
	eventually(t, "the limit per user", func() bool { return burst(t, port, "hello.example.com", nil, 10) == 10 })
	if ok := burst(t, port, "hello.example.com", alice, 20); ok < 1 || ok > 3 {
		t.Errorf("alice: %d of 20 passed a limit of 3 a second per user", ok)
	}
	if ok := burst(t, port, "hello.example.com", bob, 20); ok < 1 || ok > 3 {
		t.Errorf("bob, after alice spent hers: %d of 20 passed, want up to 3 of his own", ok)
	}

	// An invalid policy is not served and says why; the limit it
	// replaced is gone, since the file now says something else.
	write(t, dir, "policy.yaml", trafficPolicyYAML("limit-hello", "Ingress", "networking.internal.knative.dev", "hello", "{qps: 2.5, by: {type: ClientIP}}"))
	eventually(t, "the invalid policy's status", func() bool {
		lines := g.Report().TrafficPolicies
		return len(lines) == 1 && strings.Contains(lines[0], "Accepted=False (Invalid): spec.rateLimit.qps: 2.5 is not a whole number")
	})
	if ok := burst(t, port, "hello.example.com", alice, 20); ok != 20 {
		t.Errorf("%d of 20 passed after the policy became invalid, want all", ok)
	}

	// A policy whose target does not exist is TargetNotFound.
	write(t, dir, "policy.yaml", trafficPolicyYAML("limit-hello", "Service", "", "nowhere", "{qps: 1}"))
	eventually(t, "TargetNotFound", func() bool {
		lines := g.Report().TrafficPolicies
		return len(lines) == 1 && strings.Contains(lines[0], "(TargetNotFound)")
	})

	// A Service target limits every route to it: v2 is other's.
	write(t, dir, "policy.yaml", trafficPolicyYAML("limit-hello", "Service", "", "v2", "{qps: 2}"))
	eventually(t, "the Service's limit", func() bool { return burst(t, port, "other.example.com", nil, 10) < 10 })
	if ok := burst(t, port, "hello.example.com", nil, 20); ok != 20 {
		t.Errorf("%d of 20 to a route of another Service passed", ok)
	}

	if err := os.Remove(filepath.Join(dir, "policy.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the limit to be lifted", func() bool { return burst(t, port, "other.example.com", nil, 10) == 10 })
	if lines := g.Report().TrafficPolicies; len(lines) != 0 {
		t.Errorf("status %q after the policy was removed", lines)
	}

	// A KIngress names a policy without targets in its annotation, as
	// Knative Serving copies it from a ksvc: the policy limits it; a
	// changed annotation moves the limit.
	targetless := func(name, rateLimit string) string {
		return strings.Replace(trafficPolicyYAML(name, "Service", "", "unused", rateLimit),
			`  targetRefs: [{group: "", kind: Service, name: unused}]`+"\n", "", 1)
	}
	write(t, dir, "policy.yaml", targetless("by-name", "{qps: 2}")+"---\n"+targetless("by-name-too", "{qps: 100}"))
	annotated := func(host, name, policy string) string {
		return strings.Replace(strings.Replace(kingressYAML(host, 100, 0), "name: hello", "name: "+name, 1),
			"annotations: {", "annotations: {weir.dev/traffic-policy: "+policy+", ", 1)
	}
	write(t, dir, "other.yaml", annotated("other.example.com", "other", "by-name"))
	eventually(t, "the annotated KIngress's limit", func() bool { return burst(t, port, "other.example.com", nil, 10) < 10 })
	if ok := burst(t, port, "hello.example.com", nil, 20); ok != 20 {
		t.Errorf("%d of 20 to a KIngress without the annotation passed", ok)
	}
	// Moved to another policy that exists: its limit, not the first's
	// (which the service still counts), is the route's.
	write(t, dir, "other.yaml", annotated("other.example.com", "other", "by-name-too"))
	eventually(t, "the annotation's move", func() bool {
		lines := g.Report().TrafficPolicies
		return slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "by-name-too on Ingress other: Accepted=True") })
	})
	eventually(t, "the moved limit", func() bool { return burst(t, port, "other.example.com", nil, 20) == 20 })
	write(t, dir, "other.yaml", annotated("other.example.com", "other", "missing"))
	eventually(t, "the unresolved annotation's line", func() bool {
		lines := g.Report().TrafficPolicies
		return slices.Contains(lines, "KIngress default/other: weir.dev/traffic-policy names TrafficPolicy default/missing, which does not exist")
	})
	if ok := burst(t, port, "other.example.com", nil, 20); ok != 20 {
		t.Errorf("%d of 20 passed after the annotation named another policy, want all", ok)
	}
}

// TestRunServesConcurrencyLimit: a TrafficPolicy's concurrency on a
// Service bounds the requests in flight to it from the gateway: past it,
// 503 with x-envoy-overloaded, and the request is not sent.
func TestRunServesConcurrencyLimit(t *testing.T) {
	arrived, release, release2 := make(chan struct{}, 8), make(chan struct{}), make(chan struct{})
	var sent atomic.Int64
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent.Add(1)
		switch r.URL.Path {
		case "/hold":
			arrived <- struct{}{}
			<-release
		case "/hold2":
			arrived <- struct{}{}
			<-release2
		}
		io.WriteString(w, "v1")
	}))
	t.Cleanup(slow.Close)
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release2) }) })
	var once1 sync.Once
	t.Cleanup(func() { once1.Do(func() { close(release) }) })
	dir := t.TempDir()
	write(t, dir, "backends.yaml", backendsYAML(slow.Listener.Addr().(*net.TCPAddr).Port, backend(t, "v2")))
	write(t, dir, "hello.yaml", kingressYAML("hello.example.com", 100, 0))
	write(t, dir, "policy.yaml", `apiVersion: policy.weir.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: bound, namespace: default}
spec:
  targetRefs: [{group: "", kind: Service, name: v1}]
  concurrency: {maxConcurrency: 2}
`)
	g := startRun(t, dir, 20*time.Millisecond)
	port, _, _, _ := g.Ports()
	eventually(t, "the policy to be accepted", func() bool {
		lines := g.Report().TrafficPolicies
		return len(lines) == 1 && strings.Contains(lines[0], "Accepted=True")
	})
	held := make(chan int, 2)
	for range 2 {
		go func() {
			req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/hold", port), nil)
			req.Host = "hello.example.com"
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				held <- 0
				return
			}
			resp.Body.Close()
			held <- resp.StatusCode
		}()
	}
	for range 2 {
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("the held requests did not reach the backend")
		}
	}
	before := sent.Load()
	code, body, h := getWith(t, port, "hello.example.com", nil)
	if code != http.StatusServiceUnavailable || h.Get("X-Envoy-Overloaded") != "true" || sent.Load() != before {
		t.Errorf("a third request with 2 in flight: %d %q %v; want 503 with x-envoy-overloaded, not sent", code, body, h)
	}
	once1.Do(func() { close(release) })
	for range 2 {
		if c := <-held; c != http.StatusOK {
			t.Errorf("a held request: %d", c)
		}
	}
	if code, _, _ := getWith(t, port, "hello.example.com", nil); code != http.StatusOK {
		t.Errorf("after the held requests: %d, want 200", code)
	}

	// A bound changed under a running gateway takes effect: with 1, one
	// request in flight is enough.
	write(t, dir, "policy.yaml", `apiVersion: policy.weir.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: bound, namespace: default}
spec:
  targetRefs: [{group: "", kind: Service, name: v1}]
  concurrency: {maxConcurrency: 1}
`)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/hold2", port), nil)
		req.Host = "hello.example.com"
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the held request did not reach the backend")
	}
	eventually(t, "the bound of 1", func() bool {
		code, _, _ := getWith(t, port, "hello.example.com", nil)
		return code == http.StatusServiceUnavailable
	})
	once.Do(func() { close(release2) })
}
