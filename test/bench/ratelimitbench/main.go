// Command ratelimitbench measures how well one global limit holds as
// gateways are added: N weir-proxy gateways sharing Weir's rate limit
// service, against N nginx instances with limit_req (each counts on its
// own), under an open-loop load of a multiple of the limit spread evenly
// over the gateways. It reports the admitted requests a second, their error
// against the limit, and the p50/p99 latency of admitted requests with and
// without the limit (what asking the service adds). hack/bench-ratelimit.sh
// runs it; the table goes to docs/benchmarks.md.
//
// The gateways run in this process (one dataplane.Proxy each, as `weir run`
// embeds it), the service too; nginx runs as its own processes. Load
// generator, gateways, service and backend share the machine's cores.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/weir-dev/weir/pkg/dataplane"
	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/translate"
	"github.com/weir-dev/weir/pkg/xds/ratelimit"
)

var (
	limit    = flag.Int("limit", 200, "the limit, requests a second")
	load     = flag.Float64("load", 3, "the offered load, as a multiple of the limit")
	duration = flag.Duration("duration", 10*time.Second, "length of each run")
	counts   = flag.String("gateways", "1,3,5", "gateway counts to measure")
	nginxBin = flag.String("nginx", "nginx", "the nginx binary; the nginx rows are skipped when it is missing")
)

const host = "bench.example.com"

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ratelimitbench:", err)
		os.Exit(1)
	}
}

func run() error {
	backend, err := serveBackend()
	if err != nil {
		return err
	}
	rls, err := ratelimit.New(zap.NewNop().Sugar(), nil)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	g := grpc.NewServer()
	rls.Register(g)
	go func() { _ = g.Serve(ln) }()
	defer g.Stop()

	var ns []int
	for _, s := range strings.Split(*counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-gateways: %q", s)
		}
		ns = append(ns, n)
	}
	nginx, nginxErr := exec.LookPath(*nginxBin)
	fmt.Printf("Limit %d requests a second, offered %.0f a second (%.1f×) for %v, spread evenly over the gateways.\n\n",
		*limit, *load*float64(*limit), *load, *duration)
	fmt.Println("| gateways | what | admitted a second | error vs the limit | p50 / p99 of admitted | p99 without the limit |")
	fmt.Println("| --- | --- | --- | --- | --- | --- |")
	for _, n := range ns {
		name := fmt.Sprintf("bench-%d", n)
		if err := rls.SetLimits([]ratelimit.Limit{{Name: name, QPS: float64(*limit)}}); err != nil {
			return err
		}
		limited, err := startWeir(n, backend, ln.Addr().String(), name)
		if err != nil {
			return err
		}
		open, err := startWeir(n, backend, ln.Addr().String(), "")
		if err != nil {
			return err
		}
		base := drive(open.urls)
		res := drive(limited.urls)
		row(n, "weir-proxy + Weir's rate limit service", res, base)
		limited.stop()
		open.stop()
		if nginxErr != nil {
			continue
		}
		ng, err := startNginx(nginx, n, backend, true)
		if err != nil {
			return err
		}
		ngOpen, err := startNginx(nginx, n, backend, false)
		if err != nil {
			ng.stop()
			return err
		}
		row(n, "nginx limit_req (per instance)", drive(ng.urls), drive(ngOpen.urls))
		ng.stop()
		ngOpen.stop()
	}
	if nginxErr != nil {
		fmt.Printf("\nnginx rows skipped: %v\n", nginxErr)
	}
	return nil
}

func row(n int, what string, r, base result) {
	perSecond := float64(r.admitted) / r.elapsed.Seconds()
	errPct := 100 * (perSecond - float64(*limit)) / float64(*limit)
	fmt.Printf("| %d | %s | %.1f | %+.1f %% | %s / %s | %s |\n", n, what, perSecond, errPct,
		ms(r.p(0.50)), ms(r.p(0.99)), ms(base.p(0.99)))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// serveBackend answers every request 200 on a loopback port.
func serveBackend() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() {
		_ = (&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
			ReadHeaderTimeout: 5 * time.Second}).Serve(ln)
	}()
	return ln.Addr().String(), nil
}

type gateways struct {
	urls []string
	stop func()
}

// startWeir starts n weir-proxy gateways serving host from backend, each
// route asking the service at rls about the limit named limitName ("" for
// no limit).
func startWeir(n int, backend, rls, limitName string) (*gateways, error) {
	bhost, bport, _ := net.SplitHostPort(backend)
	port, _ := strconv.Atoi(bport)
	ref := ir.ObjectRef{Kind: "KIngress", Namespace: "bench", Name: "bench"}
	route := &ir.Route{Name: "bench", Backends: []ir.WeightedBackend{{BackendName: "bench/backend:80", Weight: 1}}, Provenance: ir.Provenance{ref}}
	if limitName != "" {
		route.Filters = []ir.HTTPFilter{&ir.GlobalRateLimit{Name: limitName, QPS: float64(*limit)}}
	}
	frag := &ir.Fragment{
		Source: ref,
		Backends: []*ir.Backend{{Name: "bench/backend:80", Service: ir.ServiceRef{Namespace: "bench", Name: "backend", Port: 80},
			Endpoints: []ir.Endpoint{{Address: bhost, Port: uint32(port)}}}}, //nolint:gosec // a port
		VirtualHosts: []*ir.VirtualHost{{Name: "bench", Domains: []string{host}, Listeners: ir.ListenerSet(ir.ExternalHTTP),
			Routes: []*ir.Route{route}, Provenance: ir.Provenance{ref}}},
	}
	gw := &gateways{}
	var proxies []*dataplane.Proxy
	gw.stop = func() {
		for _, p := range proxies {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = p.Shutdown(ctx)
			cancel()
		}
	}
	for range n {
		ports := make([]uint32, 4)
		for i := range ports {
			p, err := freePort()
			if err != nil {
				gw.stop()
				return nil, err
			}
			ports[i] = uint32(p) //nolint:gosec // a port
		}
		opts := translate.DefaultOptions()
		opts.ListenAddress = "127.0.0.1"
		opts.ExternalHTTPPort, opts.ExternalHTTPSPort, opts.InternalHTTPPort, opts.InternalHTTPSPort = ports[0], ports[1], ports[2], ports[3]
		opts.RateLimitService = rls
		res, err := translate.New(opts).Translate([]*ir.Fragment{frag})
		if err != nil {
			gw.stop()
			return nil, err
		}
		if len(res.Warnings) > 0 {
			gw.stop()
			return nil, fmt.Errorf("translate: %s", strings.Join(res.Warnings, "; "))
		}
		p := dataplane.New(dataplane.Options{ListenAddress: "127.0.0.1", Logger: zap.NewNop().Sugar()})
		proxies = append(proxies, p)
		if err := p.Apply(&dataplane.Resources{Listeners: res.Listeners, Routes: res.Routes, Clusters: res.Clusters, Endpoints: res.Endpoints, Secrets: res.Secrets}); err != nil {
			gw.stop()
			return nil, err
		}
		gw.urls = append(gw.urls, fmt.Sprintf("http://127.0.0.1:%d/", ports[0]))
	}
	return gw, nil
}

// startNginx starts n nginx instances proxying to backend, each with a
// limit_req zone of the limit when limited: what a cluster of nginx
// ingress replicas does with limit-rps.
func startNginx(bin string, n int, backend string, limited bool) (*gateways, error) {
	gw := &gateways{}
	var cmds []*exec.Cmd
	gw.stop = func() {
		for _, c := range cmds {
			_ = c.Process.Signal(os.Interrupt)
			_ = c.Wait()
		}
	}
	for i := range n {
		dir, err := os.MkdirTemp("", "ratelimitbench-nginx")
		if err != nil {
			gw.stop()
			return nil, err
		}
		port, err := freePort()
		if err != nil {
			gw.stop()
			return nil, err
		}
		zone, use := "", ""
		if limited {
			// burst=0 nodelay: refused at once over the rate, as Reject.
			zone = fmt.Sprintf("limit_req_zone $server_name zone=bench%d:1m rate=%dr/s;", i, *limit)
			use = fmt.Sprintf("limit_req zone=bench%d; limit_req_status 429;", i)
		}
		conf := fmt.Sprintf(`daemon off; master_process off; worker_processes 1; pid %[1]s/nginx.pid; error_log %[1]s/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path %[1]s; proxy_temp_path %[1]s; fastcgi_temp_path %[1]s; uwsgi_temp_path %[1]s; scgi_temp_path %[1]s;
  %[2]s
  upstream backend { server %[3]s; keepalive 64; }
  server { listen 127.0.0.1:%[4]d; server_name %[5]s;
    location / { %[6]s proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://backend; } } }
`, dir, zone, backend, port, host, use)
		file := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			gw.stop()
			return nil, err
		}
		c := exec.Command(bin, "-c", file, "-p", dir)
		c.Stderr = os.Stderr
		if err := c.Start(); err != nil {
			gw.stop()
			return nil, err
		}
		cmds = append(cmds, c)
		u := fmt.Sprintf("http://127.0.0.1:%d/", port)
		if err := waitHTTP(u); err != nil {
			gw.stop()
			return nil, err
		}
		gw.urls = append(gw.urls, u)
	}
	return gw, nil
}

type result struct {
	admitted, refused int64
	elapsed           time.Duration
	latencies         []time.Duration // of admitted requests
}

func (r result) p(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[min(len(r.latencies)-1, int(q*float64(len(r.latencies))))]
}

// drive offers load×limit requests a second for the duration, open loop:
// a request is sent on its tick whether or not earlier ones returned, to
// the gateways in turn.
func drive(urls []string) result {
	rate := *load * float64(*limit)
	interval := time.Duration(float64(time.Second) / rate)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 10 * time.Second}
	var (
		r       result
		mu      sync.Mutex
		wg      sync.WaitGroup
		next    atomic.Uint64
		started time.Time
	)
	// Warm the connections, then measure.
	for _, u := range urls {
		if resp, err := client.Get(u); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	time.Sleep(1100 * time.Millisecond) // the warm-up's requests leave the limit's window
	started = time.Now()
	for i := 0; ; i++ {
		at := started.Add(time.Duration(i) * interval)
		if at.Sub(started) >= *duration {
			break
		}
		time.Sleep(time.Until(at))
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := urls[next.Add(1)%uint64(len(urls))]
			req, _ := http.NewRequest(http.MethodGet, u, nil)
			req.Host = host
			t0 := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			d := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			switch resp.StatusCode {
			case http.StatusOK:
				r.admitted++
				r.latencies = append(r.latencies, d)
			case http.StatusTooManyRequests, http.StatusServiceUnavailable:
				r.refused++
			}
		}()
	}
	r.elapsed = time.Since(started)
	wg.Wait()
	slices.Sort(r.latencies)
	return r
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func waitHTTP(u string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(u); err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("nothing answered at " + u)
}
