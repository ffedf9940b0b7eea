// Command proxybench compares four ways to reach the same local backend,
// in one run on one machine: directly, through weir-proxy (`weir run`),
// through nginx and through Go's httputil.ReverseProxy. It drives each with
// wrk (keep-alive small GETs, 64 KiB POSTs, a new connection per request,
// and a TLS handshake per request), then weir-proxy and nginx with a
// networking.k8s.io Ingress carrying ingress-nginx's common annotations
// (regex rewrite, CORS, the 1m body limit) and nginx configured as
// ingress-nginx renders them, measures the memory each proxy holds per
// idle keep-alive connection, then runs a hot-update phase: config changes
// at a fixed rate under load, `weir run` file edits against
// `nginx -s reload`, counting failed requests. hack/bench-proxy.sh installs
// nginx and wrk and runs it; the tables it prints go to docs/benchmarks.md.
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var (
	weirBin     = flag.String("weir", "bin/weir", "the weir binary")
	nginxBin    = flag.String("nginx", "nginx", "the nginx binary")
	wrkBin      = flag.String("wrk", "wrk", "the wrk binary")
	duration    = flag.Duration("duration", 10*time.Second, "length of each load run")
	connections = flag.Int("connections", 64, "concurrent keep-alive connections")
	threads     = flag.Int("threads", 2, "wrk threads")
	updates     = flag.Int("updates", 100, "config changes in the hot-update phase")
	interval    = flag.Duration("update-interval", 150*time.Millisecond, "time between config changes in the hot-update phase")
	quick       = flag.Bool("quick", false, "only GET through weir-proxy and nginx, no hot update (for profiling rounds)")
	idleConns   = flag.Int("idle-connections", 10000, "keep-alive connections held open per proxy for the memory measurement (0 skips it)")
	profile     = flag.String("cpu-profile", "", "write a CPU profile of weir-proxy during the keep-alive GET run to this file")

	// The Go ReverseProxy peer runs as a child process of this command.
	role     = flag.String("role", "", "internal: \"reverse-proxy\" serves Go's httputil.ReverseProxy")
	rpListen = flag.String("rp-listen", "", "internal: plain listen address of the reverse proxy")
	rpTLS    = flag.String("rp-tls-listen", "", "internal: TLS listen address of the reverse proxy")
	rpCert   = flag.String("rp-cert", "", "internal: certificate file")
	rpKey    = flag.String("rp-key", "", "internal: key file")
	rpTarget = flag.String("rp-backend", "", "internal: backend host:port")
)

const host = "bench.example.com"

// ingressHost is the host of the benchmark's networking.k8s.io Ingress.
const ingressHost = "shop.bench.example.com"

func main() {
	flag.Parse()
	if *role == "reverse-proxy" {
		if err := serveReverseProxy(); err != nil {
			fmt.Fprintln(os.Stderr, "proxybench reverse proxy:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[proxybench %s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run() error {
	for _, b := range []*string{weirBin, nginxBin, wrkBin} {
		p, err := exec.LookPath(*b)
		if err != nil {
			return fmt.Errorf("%s not found; hack/bench-proxy.sh installs nginx and wrk and builds weir", *b)
		}
		*b = p
	}
	dir, err := os.MkdirTemp("", "proxybench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	backend, err := startBackend()
	if err != nil {
		return err
	}
	logf("backend on %s", backend)
	certFile, keyFile, certPEM, keyPEM, err := writeCert(dir)
	if err != nil {
		return err
	}
	nginx, err := startNginx(dir, backend, certFile, keyFile)
	if err != nil {
		return err
	}
	defer nginx.stop()
	weir, err := startWeir(dir, backend, certPEM, keyPEM)
	if err != nil {
		return err
	}
	defer weir.stop()
	rp, err := startReverseProxy(dir, backend, certFile, keyFile)
	if err != nil {
		return err
	}
	defer rp.stop()

	post := filepath.Join(dir, "post.lua")
	if err := os.WriteFile(post, []byte("wrk.method = \"POST\"\nwrk.body = string.rep(\"a\", 65536)\nwrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"), 0o644); err != nil {
		return err
	}
	type target struct{ name, addr, tlsAddr string }
	targets := []target{{"direct", backend, ""}, {"weir-proxy", weir.addr, weir.tlsAddr}, {"nginx", nginx.addr, nginx.tlsAddr}, {"go-reverseproxy", rp.addr, rp.tlsAddr}}
	var rows []row
	ingressGet := filepath.Join(dir, "ingress.lua")
	if err := os.WriteFile(ingressGet, []byte("wrk.path = \"/api/items\"\nwrk.headers[\"Origin\"] = \"https://app.example.com\"\n"), 0o644); err != nil {
		return err
	}
	type workload struct {
		name, script string
		close, tls   bool
		// host is the Host header; "" is the KIngress's.
		host string
	}
	workloads := []workload{{name: "GET (small, keep-alive)"}, {name: "POST 64 KiB", script: post},
		{name: "GET, new connection per request", close: true}, {name: "GET over TLS, handshake per request", close: true, tls: true},
		{name: "GET via an Ingress (regex rewrite, CORS, body limit)", script: ingressGet, host: ingressHost}}
	if *quick {
		workloads, targets = workloads[:1], targets[1:3]
	}
	for i, w := range workloads {
		for _, tg := range targets {
			addr, scheme := tg.addr, "http"
			if w.host != "" && tg.name != "weir-proxy" && tg.name != "nginx" {
				// Only the gateways read Ingress annotations.
				continue
			}
			if w.tls {
				if tg.tlsAddr == "" {
					continue
				}
				addr, scheme = tg.tlsAddr, "https"
			}
			logf("%s via %s for %v", w.name, tg.name, *duration)
			var stopProfile func() error
			if i == 0 && tg.name == "weir-proxy" && *profile != "" {
				stopProfile = weir.cpuProfile(*profile, *duration)
			}
			pids := targetPIDs(tg.name, weir, nginx, rp)
			cpu0 := cpuTime(pids)
			r, err := runWrk(scheme, addr, cmp.Or(w.host, host), w.script, w.close, *duration)
			if err != nil {
				return fmt.Errorf("%s via %s: %w", w.name, tg.name, err)
			}
			if r.requests > 0 && pids != nil {
				r.cpuPerRequest = (cpuTime(pids) - cpu0) / time.Duration(r.requests)
			}
			if stopProfile != nil {
				if err := stopProfile(); err != nil {
					return err
				}
			}
			rows = append(rows, row{w.name, tg.name, r})
		}
	}

	var idle []idleResult
	if *idleConns > 0 && !*quick {
		for _, tg := range targets[1:] {
			logf("%d idle keep-alive connections to %s", *idleConns, tg.name)
			r, err := measureIdle(tg.addr, targetPIDs(tg.name, weir, nginx, rp), *idleConns)
			if err != nil {
				return fmt.Errorf("idle connections to %s: %w", tg.name, err)
			}
			r.target = tg.name
			idle = append(idle, r)
		}
	}

	if *quick {
		printLoad(rows)
		return nil
	}
	hotDur := time.Duration(*updates)*(*interval) + 2*time.Second
	logf("hot update: %d changes every %v under load, weir run", *updates, *interval)
	weirHot, err := hotUpdate(weir.addr, hotDur, weir.update)
	if err != nil {
		return err
	}
	logf("hot update: %d reloads every %v under load, nginx", *updates, *interval)
	nginxHot, err := hotUpdate(nginx.addr, hotDur, nginx.reload)
	if err != nil {
		return err
	}

	printLoad(rows)
	printIdle(idle)
	fmt.Printf("\nHot update: %d config changes, one every %v, during %v of wrk GET load (-c%d)\n\n", *updates, *interval, hotDur, *connections)
	fmt.Println("| gateway | how | requests | failed requests | requests/s |")
	fmt.Println("| --- | --- | ---: | ---: | ---: |")
	fmt.Printf("| weir-proxy | `weir run` file edit (split weights + header) | %d | %d | %.0f |\n", weirHot.requests, weirHot.errors, weirHot.rps)
	fmt.Printf("| nginx | config edit + `nginx -s reload` | %d | %d | %.0f |\n", nginxHot.requests, nginxHot.errors, nginxHot.rps)
	return nil
}

type row struct {
	workload, target string
	r                wrkResult
}

// printLoad prints the load runs as a markdown table with ratios.
func printLoad(rows []row) {
	cpu, _ := os.ReadFile("/proc/cpuinfo")
	model := regexp.MustCompile(`model name\s*:\s*(.*)`).FindSubmatch(cpu)
	nv, _ := exec.Command(*nginxBin, "-v").CombinedOutput()
	fmt.Printf("%d CPU(s) (%s), %s; wrk -t%d -c%d -d%v; backend: Go net/http\n\n",
		countCPUs(cpu), firstOr(model, "unknown CPU"), strings.TrimSpace(string(nv)), *threads, *connections, *duration)
	fmt.Println("| workload | path | requests/s | p50 | p99 | errors | proxy CPU per request | vs nginx | p99 vs nginx | vs direct |")
	fmt.Println("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	ratio := func(r row, target string) string {
		for _, o := range rows {
			if o.workload == r.workload && o.target == target && o.r.rps > 0 {
				return fmt.Sprintf("%.2f", r.r.rps/o.r.rps)
			}
		}
		return "-"
	}
	p99Ratio := func(r row) string {
		for _, o := range rows {
			if o.workload == r.workload && o.target == "nginx" && o.r.p99 > 0 {
				return fmt.Sprintf("%.2f", float64(r.r.p99)/float64(o.r.p99))
			}
		}
		return "-"
	}
	for _, r := range rows {
		cpu := "-"
		if r.r.cpuPerRequest > 0 {
			cpu = fmt.Sprintf("%.1f µs", float64(r.r.cpuPerRequest)/float64(time.Microsecond))
		}
		fmt.Printf("| %s | %s | %.0f | %v | %v | %d | %s | %s | %s | %s |\n", r.workload, r.target, r.r.rps, r.r.p50, r.r.p99, r.r.errors, cpu,
			ratio(r, "nginx"), p99Ratio(r), ratio(r, "direct"))
	}
}

func countCPUs(cpuinfo []byte) int { return bytes.Count(cpuinfo, []byte("\nprocessor")) + 1 }

func firstOr(m [][]byte, def string) string {
	if len(m) > 1 {
		return string(m[1])
	}
	return def
}

// startBackend serves a short body to GETs and reads whole POST bodies.
func startBackend() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Echo Knative's probe hash, as queue-proxy does, so weir run's
		// KIngress becomes Ready.
		if h := r.Header.Get("K-Network-Hash"); h != "" {
			w.Header().Set("K-Network-Hash", h)
		}
		if r.Method == http.MethodPost {
			_, _ = io.Copy(io.Discard, r.Body)
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello from the backend\n")
	})}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), nil
}

// newProc returns a peer proxy's proc with a plain and a TLS port.
func newProc(dir, backend string) (*proc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	tlsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	return &proc{addr: fmt.Sprintf("127.0.0.1:%d", port), tlsAddr: fmt.Sprintf("localhost:%d", tlsPort), backend: backend, dir: dir}, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func waitHTTP(url string, what string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Host = host
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer 200 on %s within 30s", what, url)
}

type proc struct {
	cmd       *exec.Cmd
	addr      string // where the gateway listens
	tlsAddr   string // its TLS listener, by the name "localhost" (wrk sends it as SNI)
	adminAddr string
	certFile  string
	keyFile   string
	certPEM   []byte
	keyPEM    []byte
	backend   string
	dir       string
	conf      string // nginx.conf
	gen       int    // config generation, changed by reload/update
}

func (p *proc) stop() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
		}
	}
}

// nginx: the usual reverse-proxy setup, upstream keep-alive, bodies kept
// in memory, one worker per CPU.
const nginxConf = `worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
worker_rlimit_nofile 30000;
events { worker_connections 30000; }
http {
  access_log off;
  client_body_temp_path %[1]s/client_body;
  proxy_temp_path %[1]s/proxy;
  client_max_body_size 1m;
  client_body_buffer_size 128k;
  upstream backend { server %[2]s; keepalive 128; }
  server {
    listen 127.0.0.1:%[3]d;
    listen 127.0.0.1:%[6]d ssl;
    ssl_certificate %[7]s;
    ssl_certificate_key %[8]s;
    ssl_protocols TLSv1.2 TLSv1.3;
    server_name %[4]s;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Gen "%[5]d";
    }
  }
  # The Ingress, as ingress-nginx renders use-regex, rewrite-target: /$2,
  # enable-cors with one origin, and its 1m proxy-body-size.
  map $http_origin $cors_origin { "~^https://app\.example\.com$" $http_origin; default ""; }
  server {
    listen 127.0.0.1:%[3]d;
    server_name %[9]s;
    client_max_body_size 1m;
    location ~* "^/api(/|$)(.*)" {
      if ($request_method = OPTIONS) { return 204; }
      add_header Access-Control-Allow-Origin $cors_origin always;
      add_header Access-Control-Allow-Credentials true always;
      rewrite "(?i)/api(/|$)(.*)" /$2 break;
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_read_timeout 60s;
      proxy_send_timeout 60s;
    }
  }
}
`

func startNginx(dir, backend, certFile, keyFile string) (*proc, error) {
	p, err := newProc(dir, backend)
	if err != nil {
		return nil, err
	}
	p.conf, p.certFile, p.keyFile = filepath.Join(dir, "nginx.conf"), certFile, keyFile
	if err := p.writeNginx(); err != nil {
		return nil, err
	}
	p.cmd = exec.Command(*nginxBin, "-c", p.conf, "-g", "daemon off;")
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	return p, waitHTTP("http://"+p.addr+"/", "nginx")
}

func (p *proc) writeNginx() error {
	_, port, _ := net.SplitHostPort(p.addr)
	_, tlsPort, _ := net.SplitHostPort(p.tlsAddr)
	return os.WriteFile(p.conf, []byte(fmt.Sprintf(nginxConf, p.dir, p.backend, mustAtoi(port), host, p.gen,
		mustAtoi(tlsPort), p.certFile, p.keyFile, ingressHost)), 0o644)
}

func mustAtoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

// reload changes a header nginx sets and reloads it, the way config
// changes reach nginx-based ingress controllers.
func (p *proc) reload() error {
	p.gen++
	if err := p.writeNginx(); err != nil {
		return err
	}
	out, err := exec.Command(*nginxBin, "-c", p.conf, "-s", "reload").CombinedOutput()
	if err != nil {
		return fmt.Errorf("nginx -s reload: %v: %s", err, out)
	}
	return nil
}

const weirYAML = `apiVersion: v1
kind: Secret
metadata:
  name: bench-tls
  namespace: default
  labels: {networking.internal.knative.dev/certificate-uid: bench}
type: kubernetes.io/tls
data: {tls.crt: %[6]s, tls.key: %[7]s}
---
apiVersion: v1
kind: Service
metadata: {name: bench, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: bench-b, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bench-1, namespace: default, labels: {kubernetes.io/service-name: bench}}
addressType: IPv4
ports: [{name: http, port: %[1]d, protocol: TCP}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bench-b-1, namespace: default, labels: {kubernetes.io/service-name: bench-b}}
addressType: IPv4
ports: [{name: http, port: %[1]d, protocol: TCP}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: bench
  namespace: default
  annotations: {networking.knative.dev/ingress.class: weir.ingress.networking.knative.dev}
spec:
  tls:
  - {hosts: [%[2]s, localhost], secretName: bench-tls, secretNamespace: default}
  rules:
  - hosts: [%[2]s]
    visibility: ExternalIP
    http:
      paths:
      - appendHeaders: {X-Gen: "%[3]d"}
        splits:
        - {serviceName: bench, serviceNamespace: default, servicePort: 80, percent: %[4]d}
        - {serviceName: bench-b, serviceNamespace: default, servicePort: 80, percent: %[5]d}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/use-regex: "true"
    nginx.ingress.kubernetes.io/rewrite-target: /$2
    nginx.ingress.kubernetes.io/enable-cors: "true"
    nginx.ingress.kubernetes.io/cors-allow-origin: https://app.example.com
spec:
  ingressClassName: weir
  rules:
  - host: %[8]s
    http:
      paths:
      - path: /api(/|$)(.*)
        pathType: ImplementationSpecific
        backend: {service: {name: bench, port: {number: 80}}}
`

func startWeir(dir, backend string, certPEM, keyPEM []byte) (*proc, error) {
	var ports [5]int
	for i := range ports {
		var err error
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	p := &proc{addr: fmt.Sprintf("127.0.0.1:%d", ports[0]), tlsAddr: fmt.Sprintf("localhost:%d", ports[1]),
		adminAddr: fmt.Sprintf("127.0.0.1:%d", ports[4]), backend: backend, dir: filepath.Join(dir, "weir"), certPEM: certPEM, keyPEM: keyPEM}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, err
	}
	if err := p.writeWeir(); err != nil {
		return nil, err
	}
	p.cmd = exec.Command(*weirBin, "run", "-f", p.dir, "--listen-address=127.0.0.1",
		"--http-port="+strconv.Itoa(ports[0]), "--https-port="+strconv.Itoa(ports[1]),
		"--internal-http-port="+strconv.Itoa(ports[2]), "--internal-https-port="+strconv.Itoa(ports[3]),
		"--admin-port="+strconv.Itoa(ports[4]), "--access-log=false", "--log-level=warn")
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	return p, waitHTTP("http://"+p.addr+"/", "weir run")
}

// writeWeir replaces the config by rename, as a deployment tool would.
func (p *proc) writeWeir() error {
	_, bport, _ := net.SplitHostPort(p.backend)
	port := mustAtoi(bport)
	w := (p.gen % 10) * 10
	tmp := filepath.Join(p.dir, ".bench.yaml.tmp")
	crt, key := base64.StdEncoding.EncodeToString(p.certPEM), base64.StdEncoding.EncodeToString(p.keyPEM)
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf(weirYAML, port, host, p.gen, 100-w, w, crt, key, ingressHost)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(p.dir, "bench.yaml"))
}

func (p *proc) update() error {
	p.gen++
	return p.writeWeir()
}

type wrkResult struct {
	cpuPerRequest time.Duration // CPU time the proxy's processes spent per request
	rps           float64
	p50, p99      time.Duration
	requests      int64
	errors        int64
	errorDetails  string
}

var (
	reRPS      = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	reReqs     = regexp.MustCompile(`(\d+) requests in`)
	reLat      = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)`)
	reSocket   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	unitFactor = map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}
)

func runWrk(scheme, addr, reqHost, script string, closeConn bool, d time.Duration) (wrkResult, error) {
	args := []string{fmt.Sprintf("-t%d", *threads), fmt.Sprintf("-c%d", *connections), fmt.Sprintf("-d%ds", int(d.Seconds())),
		"--latency", "-H", "Host: " + reqHost}
	if closeConn {
		args = append(args, "-H", "Connection: close")
	}
	if script != "" {
		args = append(args, "-s", script)
	}
	args = append(args, scheme+"://"+addr+"/")
	out, err := exec.Command(*wrkBin, args...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v: %s", err, out)
	}
	return parseWrk(string(out))
}

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := reRPS.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New("no Requests/sec in wrk output: " + out)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	if m := reReqs.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	for _, m := range reLat.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		d := time.Duration(v * float64(unitFactor[m[3]])).Round(time.Microsecond)
		if m[1] == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	if m := reSocket.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.errors += n
		}
		r.errorDetails = m[0]
	}
	if m := reNon2xx.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		r.errors += n
		r.errorDetails += " " + m[0]
	}
	return r, nil
}

// hotUpdate runs wrk for d while change is called every interval.
func hotUpdate(addr string, d time.Duration, change func() error) (wrkResult, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		time.Sleep(time.Second)
		for i := 0; i < *updates && ctx.Err() == nil; i++ {
			if err := change(); err != nil {
				errc <- err
				return
			}
			time.Sleep(*interval)
		}
		errc <- nil
	}()
	r, err := runWrk("http", addr, host, "", false, d)
	if err != nil {
		return r, err
	}
	if err := <-errc; err != nil {
		return r, err
	}
	if r.errorDetails != "" {
		logf("errors: %s", r.errorDetails)
	}
	return r, nil
}
