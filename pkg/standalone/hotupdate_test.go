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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/weir-dev/weir/pkg/dataplane"
)

// wsBackend echoes websocket messages.
func wsBackend(t *testing.T) int {
	t.Helper()
	up := websocket.Upgrader{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := r.Header.Get("K-Network-Hash"); h != "" {
			w.Header().Set("K-Network-Hash", h)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().(*net.TCPAddr).Port
}

// hotServicesYAML declares Services a, b and ws; a's and b's endpoints
// rotate over the backend ports with gen.
func hotServicesYAML(gen int, ports []int, wsPort int) string {
	var b strings.Builder
	for i, name := range []string{"a", "b", "ws"} {
		var eps []int
		switch name {
		case "a":
			eps = []int{ports[gen%len(ports)], ports[(gen+1)%len(ports)]}
		case "b":
			eps = []int{ports[(gen+2)%len(ports)]}
		default:
			eps = []int{wsPort}
		}
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: default}
spec: {ports: [{name: http, port: 80}]}
`, name)
		// One EndpointSlice per port: slices carry one port list each.
		for j, p := range eps {
			fmt.Fprintf(&b, `---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %[1]s-%[2]d-%[3]d, namespace: default, labels: {kubernetes.io/service-name: %[1]s}}
addressType: IPv4
ports: [{name: http, port: %[4]d, protocol: TCP}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
`, name, i, j, p)
		}
	}
	return b.String()
}

// hotKIngressYAML splits / between a and b by gen and stamps X-Gen on
// every request; /ws goes to the websocket backend.
func hotKIngressYAML(gen int) string {
	wa := (gen % 10) * 10
	return fmt.Sprintf(`apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: hot
  namespace: default
  annotations: {networking.knative.dev/ingress.class: weir.ingress.networking.knative.dev}
spec:
  rules:
  - hosts: [hot.example.com]
    visibility: ExternalIP
    http:
      paths:
      - path: /ws
        splits:
        - {serviceName: ws, serviceNamespace: default, servicePort: 80, percent: 100}
      - appendHeaders: {X-Gen: "%[1]d"}
        splits:
        - {serviceName: a, serviceNamespace: default, servicePort: 80, percent: %[2]d}
        - {serviceName: b, serviceNamespace: default, servicePort: 80, percent: %[3]d}
`, gen, wa, 100-wa)
}

// appliedGen is the X-Gen value in the proxy's applied route config.
func appliedGen(r *dataplane.Resources) int {
	if r == nil {
		return -1
	}
	for _, rc := range r.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				for _, h := range rt.GetRequestHeadersToAdd() {
					if h.GetHeader().GetKey() == "x-gen" {
						n, _ := strconv.Atoi(h.GetHeader().GetValue())
						return n
					}
				}
			}
		}
	}
	return -1
}

// TestHotUpdateUnderLoad edits weir run's files 100 times (split weights,
// a header, endpoints) while 200 keep-alive clients send requests and 20
// websockets exchange messages. No request may fail, no websocket may
// drop, and the first request sent after the proxy applies (ACKs) a
// generation must already see it. The latencies are logged, not asserted:
// on 2 busy cores they are a measurement, not a bound.
func TestHotUpdateUnderLoad(t *testing.T) {
	const (
		generations = 100
		clients     = 200
		websockets  = 20
	)
	var ports []int
	for i := 0; i < 4; i++ {
		ports = append(ports, backend(t, fmt.Sprintf("backend-%d", i)))
	}
	wsPort := wsBackend(t)
	dir := t.TempDir()
	write(t, dir, "services.yaml", hotServicesYAML(0, ports, wsPort))
	write(t, dir, "hot.yaml", hotKIngressYAML(0))

	g := startRun(t, dir, 10*time.Millisecond)
	port, _, _, _ := g.Ports()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	newReq := func(path string) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Host = "hot.example.com"
		return req
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var requests, failures, wsMessages, wsDrops atomic.Int64
	var failMu sync.Mutex
	var failSamples []string
	fail := func(format string, args ...any) {
		failures.Add(1)
		failMu.Lock()
		if len(failSamples) < 10 {
			failSamples = append(failSamples, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
		}
		failMu.Unlock()
	}
	load := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true}, Timeout: 10 * time.Second}
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				resp, err := load.Do(newReq("/load"))
				if err != nil {
					fail("request: %v", err)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				requests.Add(1)
				if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "backend-") || resp.Header.Get("X-Gen-Seen") == "" {
					fail("%d %q (X-Gen-Seen %q)", resp.StatusCode, body, resp.Header.Get("X-Gen-Seen"))
				}
			}
		}()
	}
	dialer := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	for i := 0; i < websockets; i++ {
		c, _, err := dialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d/ws", port), http.Header{"Host": {"hot.example.com"}})
		if err != nil {
			t.Fatalf("websocket %d: %v", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				msg := fmt.Sprintf("ws%d-%d", i, j)
				if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
					wsDrops.Add(1)
					return
				}
				if _, got, err := c.ReadMessage(); err != nil || string(got) != msg {
					wsDrops.Add(1)
					return
				}
				wsMessages.Add(1)
			}
		}()
	}

	// Each edit: wait for the proxy to apply (and so ACK) the config that
	// carries the new generation; the first request sent after that must
	// see it. Half the edits are non-atomic writes, which the watcher must
	// never load half-written.
	probe := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	var applyLatency, firstResponse []time.Duration
	for gen := 1; gen <= generations; gen++ {
		t0 := time.Now()
		put := write
		if gen%2 == 0 {
			put = writeAtomic
		}
		if gen%3 == 0 {
			put(t, dir, "services.yaml", hotServicesYAML(gen, ports, wsPort))
		}
		put(t, dir, "hot.yaml", hotKIngressYAML(gen))
		for appliedGen(g.client.Applied()) != gen {
			if time.Since(t0) > 10*time.Second {
				t.Fatalf("generation %d was not applied within 10s", gen)
			}
			time.Sleep(time.Millisecond)
		}
		acked := time.Now()
		applyLatency = append(applyLatency, acked.Sub(t0))
		resp, err := probe.Do(newReq("/check"))
		if err != nil {
			t.Fatalf("generation %d: %v", gen, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		firstResponse = append(firstResponse, time.Since(acked))
		if got := resp.Header.Get("X-Gen-Seen"); got != strconv.Itoa(gen) {
			t.Errorf("the first request after generation %d was applied saw generation %q", gen, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()

	pct := func(d []time.Duration, p float64) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[int(p*float64(len(s)-1))]
	}
	t.Logf("%d requests, %d failures; %d websocket messages, %d websockets dropped; %d generations",
		requests.Load(), failures.Load(), wsMessages.Load(), wsDrops.Load(), generations)
	t.Logf("file write → applied (ACK): p50 %v, p99 %v, max %v", pct(applyLatency, 0.5), pct(applyLatency, 0.99), pct(applyLatency, 1))
	t.Logf("applied → first response with it (under load): p50 %v, p99 %v, max %v", pct(firstResponse, 0.5), pct(firstResponse, 0.99), pct(firstResponse, 1))
	if failures.Load() != 0 {
		t.Errorf("%d requests failed during hot updates; first: %s", failures.Load(), strings.Join(failSamples, "; "))
	}
	if wsDrops.Load() != 0 {
		t.Errorf("%d of %d websockets dropped during hot updates", wsDrops.Load(), websockets)
	}
	if requests.Load() < clients*10 || wsMessages.Load() < websockets*10 {
		t.Errorf("too little traffic to mean anything: %d requests, %d websocket messages", requests.Load(), wsMessages.Load())
	}
}

// writeAtomic replaces a file by rename, as most editors save.
func writeAtomic(t *testing.T, dir, name, body string) {
	t.Helper()
	write(t, dir, "."+name+".tmp", body)
	if err := os.Rename(filepath.Join(dir, "."+name+".tmp"), filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}
