package dataplane

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The benchmarks compare a request through the proxy with the same request
// sent straight to the backend, over keep-alive HTTP/1.1 on loopback.
func benchBackend(b *testing.B) string {
	return serveHTTP(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello from the backend\n")
	}))
}

func runLoad(b *testing.B, url string) { runLoadWith(b, url, nil) }

// runLoadWith is runLoad with request headers.
func runLoadWith(b *testing.B, url string, header http.Header) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}}
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header = header.Clone()
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

func BenchmarkDirect(b *testing.B) {
	runLoad(b, "http://"+benchBackend(b)+"/bench")
}

func BenchmarkProxy(b *testing.B) {
	addr := benchBackend(b)
	res := singleRoute(routeTo(prefixMatch("/"), "bench"))
	res.Clusters = append(res.Clusters, edsCluster("bench", false))
	res.Endpoints = append(res.Endpoints, cla("bench", addr))
	p := New(Options{ListenAddress: "127.0.0.1"})
	if err := p.Apply(res); err != nil {
		b.Fatal(err)
	}
	defer p.Shutdown(b.Context())
	runLoad(b, "http://"+p.ListenerAddr(listenerName).String()+"/bench")
}

// BenchmarkProxyCORS is BenchmarkProxy with the CORS filter in the chain
// and a policy on the route, for requests from an allowed origin: the
// cost of a per-route filter.
func BenchmarkProxyCORS(b *testing.B) {
	addr := benchBackend(b)
	rt := routeTo(prefixMatch("/"), "bench")
	rt.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.cors": mustAny(&corsv3.CorsPolicy{
		AllowOriginStringMatch: []*matcherv3.StringMatcher{exactOrigin("https://app.example")},
		AllowMethods:           "GET", ExposeHeaders: "x-trace", AllowCredentials: wrapperspb.Bool(true),
	})}
	res := singleRoute(rt)
	res.Listeners = []*listenerv3.Listener{plainListener(listenerName, withFilters(corsHTTPFilter))}
	res.Clusters = append(res.Clusters, edsCluster("bench", false))
	res.Endpoints = append(res.Endpoints, cla("bench", addr))
	p := New(Options{ListenAddress: "127.0.0.1"})
	if err := p.Apply(res); err != nil {
		b.Fatal(err)
	}
	defer p.Shutdown(b.Context())
	runLoadWith(b, "http://"+p.ListenerAddr(listenerName).String()+"/bench", http.Header{"Origin": {"https://app.example"}})
}

// BenchmarkProxyMirror is BenchmarkProxy with every request also copied
// to a second backend: the cost of shadowing.
func BenchmarkProxyMirror(b *testing.B) {
	addr, mirror := benchBackend(b), benchBackend(b)
	rt := routeTo(prefixMatch("/"), "bench")
	rt.GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "mirror"}}
	res := singleRoute(rt)
	res.Clusters = append(res.Clusters, edsCluster("bench", false), edsCluster("mirror", false))
	res.Endpoints = append(res.Endpoints, cla("bench", addr), cla("mirror", mirror))
	p := New(Options{ListenAddress: "127.0.0.1"})
	if err := p.Apply(res); err != nil {
		b.Fatal(err)
	}
	defer p.Shutdown(b.Context())
	runLoad(b, "http://"+p.ListenerAddr(listenerName).String()+"/bench")
}

// BenchmarkNginx is the reference: the same load through nginx
// (worker_processes auto, upstream keepalive). It runs only with
// WEIR_BENCH_NGINX=1 and nginx on PATH.
func BenchmarkNginx(b *testing.B) {
	if os.Getenv("WEIR_BENCH_NGINX") == "" {
		b.Skip("set WEIR_BENCH_NGINX=1 to compare with nginx")
	}
	bin, err := exec.LookPath("nginx")
	if err != nil {
		b.Skip("nginx not installed")
	}
	addr := benchBackend(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := b.TempDir()
	conf := fmt.Sprintf(`worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream be { server %[2]s; keepalive 256; }
  server {
    listen 127.0.0.1:%[3]d;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
`, dir, addr, port)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", path, "-g", "daemon off;")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	url := fmt.Sprintf("http://127.0.0.1:%d/bench", port)
	for i := 0; ; i++ {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			break
		}
		if i > 50 {
			b.Fatal("nginx did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	runLoad(b, url)
}

// BenchmarkApplyOneEndpointChange: 10,000 virtual hosts, each routing to
// its own EDS cluster; one cluster's assignment changes (a scale from
// zero), as the xDS client hands it over: every other resource is the
// pointer of the previous Apply.
func BenchmarkApplyOneEndpointChange(b *testing.B) {
	const hosts = 10_000
	p := New(Options{ListenAddress: "127.0.0.1"})
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	res := &Resources{Listeners: []*listenerv3.Listener{plainListener("http")}}
	var vhosts []*routev3.VirtualHost
	for i := range hosts {
		name := fmt.Sprintf("c%d", i)
		vhosts = append(vhosts, virtualHost(name, []string{fmt.Sprintf("h%d.example.com", i)}, routeTo(prefixMatch("/"), name)))
		res.Clusters = append(res.Clusters, edsCluster(name, false))
		res.Endpoints = append(res.Endpoints, cla(name, "127.0.0.1:1"))
	}
	res.Routes = []*routev3.RouteConfiguration{routeConfig("http", vhosts...)}
	if err := p.Apply(res); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		next := *res
		next.Endpoints = slices.Clone(res.Endpoints)
		next.Endpoints[42] = cla("c42", fmt.Sprintf("127.0.0.1:%d", 2+i%2))
		if err := p.Apply(&next); err != nil {
			b.Fatal(err)
		}
		res = &next
	}
}
