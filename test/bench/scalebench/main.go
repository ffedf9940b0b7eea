// Command scalebench measures what a user sees when `weir run` serves N
// Knative-shaped KIngresses (one external and one cluster-local host each,
// each with its own Service and EndpointSlice): start to first request
// served, start to all Ready, one KIngress change to served, an endpoint
// change to traffic, peak RSS and CPU at rest. hack/bench-scale.sh runs it;
// docs/benchmarks.md has its tables.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	weir := flag.String("weir", "bin/weir", "the weir binary")
	n := flag.Int("n", 10_000, "KIngresses to generate")
	files := flag.Int("files", 10, "files to spread them over")
	changes := flag.Int("changes", 50, "KIngress changes to time")
	endpointChanges := flag.Int("endpoint-changes", 20, "endpoint changes to time")
	rest := flag.Duration("rest", 30*time.Second, "how long to measure CPU at rest")
	keep := flag.Bool("keep", false, "keep the generated directory (with -cluster: the cluster's logs)")
	profile := flag.String("cpu-profile", "", "write a CPU profile of weir run during the changes to this file")
	verbose := flag.Bool("v", false, "print every latency sample")
	onCluster := flag.Bool("cluster", false, "measure weir-controller and a weir-proxy gateway on test/cluster instead of weir run (needs root)")
	createFirst := flag.Bool("create-first", false, "with -cluster: create the objects before Weir starts, and time from Weir's start")
	heapDir := flag.String("heap-profiles", "", "with -cluster: write heap profiles of the controller and the gateway to this directory after the changes")
	var controllerArgs stringList
	flag.Var(&controllerArgs, "controller-arg", "an argument for weir-controller with -cluster (repeatable)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("[bench-scale] ")
	if *onCluster {
		runCluster(clusterOptions{n: *n, changes: *changes, endpointChanges: *endpointChanges, rest: *rest,
			controllerArgs: controllerArgs, keep: *keep, verbose: *verbose, createFirst: *createFirst, heapDir: *heapDir})
		return
	}

	backend := startBackend()
	dir, err := os.MkdirTemp("", "weir-scale-")
	check(err)
	if !*keep {
		defer os.RemoveAll(dir)
	}
	log.Printf("generating %d KIngresses in %d files under %s", *n, *files, dir)
	check(generate(dir, *n, *files, backend))
	replace(dir, "small.yaml", smallYAML(0, backend), true)
	writeZeroSlice(dir, false, backend)

	httpPort, adminPort := freePort(), freePort()
	cmd := exec.Command(*weir, "run", "-f", dir, "--http-port", strconv.Itoa(httpPort),
		"--https-port", strconv.Itoa(freePort()), "--internal-http-port", strconv.Itoa(freePort()),
		"--internal-https-port", strconv.Itoa(freePort()), "--admin-port", strconv.Itoa(adminPort),
		"--listen-address", "127.0.0.1", "--access-log=false", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	start := time.Now()
	check(cmd.Start())
	defer func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() }()

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	get := func(host string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", httpPort), nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor := func(what string, limit time.Duration, every time.Duration, ok func() bool) time.Duration {
		t0 := time.Now()
		for !ok() {
			if time.Since(t0) > limit {
				log.Fatalf("%s: not within %v", what, limit)
			}
			time.Sleep(every)
		}
		return time.Since(t0)
	}

	waitFor("first request served", 10*time.Minute, 5*time.Millisecond, func() bool {
		code, _ := get("small.example.com")
		return code == 200
	})
	firstServed := time.Since(start)
	log.Printf("first request served after %v", firstServed.Round(time.Millisecond))

	total := *n + 2
	waitFor("all Ready", 30*time.Minute, 50*time.Millisecond, func() bool {
		ready, all := status(adminPort)
		return ready == total && all == total
	})
	allReady := time.Since(start)
	log.Printf("all %d Ready after %v", total, allReady.Round(time.Millisecond))

	// One KIngress change: its appended header changes, and the backend
	// echoes it. A backdated file has settled already, so this is the
	// time from a settled file to the proxy serving it.
	profiled := make(chan struct{})
	if *profile != "" {
		go func() {
			defer close(profiled)
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=10", adminPort))
			check(err)
			defer resp.Body.Close()
			out, err := os.Create(*profile)
			check(err)
			_, err = io.Copy(out, resp.Body)
			check(errors.Join(err, out.Close()))
		}()
	} else {
		close(profiled)
	}
	// change writes generation gen of small.yaml, backdated or not, and
	// times until the proxy answers with it.
	change := func(gen int, backdate bool) time.Duration {
		t0 := replace(dir, "small.yaml", smallYAML(gen, backend), backdate)
		want := strconv.Itoa(gen)
		waitFor("change served", time.Minute, time.Millisecond, func() bool {
			_, body := get("small.example.com")
			return body == want
		})
		return time.Since(t0)
	}
	var settled, raw []time.Duration
	for i := 1; i <= *changes; i++ {
		settled = append(settled, change(i, true))
	}
	for i := *changes + 1; i <= *changes+10; i++ {
		raw = append(raw, change(i, false))
	}

	// Scale from zero: the Service's only EndpointSlice gains an endpoint.
	var endpoint []time.Duration
	for range *endpointChanges {
		t0 := writeZeroSlice(dir, true, backend)
		waitFor("endpoint served", time.Minute, time.Millisecond, func() bool {
			code, _ := get("zero.example.com")
			return code == 200
		})
		endpoint = append(endpoint, time.Since(t0))
		writeZeroSlice(dir, false, backend)
		waitFor("endpoint removed", time.Minute, time.Millisecond, func() bool {
			code, _ := get("zero.example.com")
			return code == 503
		})
	}

	<-profiled
	if *verbose {
		log.Printf("change (settled): %v", settled)
		log.Printf("change (plain write): %v", raw)
		log.Printf("endpoint: %v", endpoint)
	}
	// CPU at rest: after everything above has settled.
	time.Sleep(2 * time.Second)
	cpu0 := cpuTime(cmd.Process.Pid)
	time.Sleep(*rest)
	cpuRest := float64(cpuTime(cmd.Process.Pid)-cpu0) / float64(*rest) * 100
	rss := peakRSS(cmd.Process.Pid)

	fmt.Printf("| KIngresses | start → first served | start → all Ready | change → served p50 / p99 (settled file) | change → served p50 / p99 (raw write) | endpoint → traffic p50 / p99 | peak RSS | CPU at rest |\n")
	fmt.Printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	fmt.Printf("| %d | %v | %v | %v / %v | %v / %v | %v / %v | %d MiB | %.1f %% |\n", *n,
		firstServed.Round(10*time.Millisecond), allReady.Round(10*time.Millisecond),
		pct(settled, 50), pct(settled, 99), pct(raw, 50), pct(raw, 99), pct(endpoint, 50), pct(endpoint, 99),
		rss>>20, cpuRest)
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[i].Round(100 * time.Microsecond)
}

func status(adminPort int) (ready, total int) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/status?summary", adminPort))
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	var r struct{ Ready, Total int }
	if json.NewDecoder(resp.Body).Decode(&r) != nil {
		return 0, 0
	}
	return r.Ready, r.Total
}

// startBackend serves 200 with the X-Gen request header as the body.
func startBackend() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	go func() {
		_ = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, r.Header.Get("X-Gen"))
		}))
	}()
	return l.Addr().(*net.TCPAddr).Port
}

const kingressTmpl = `apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: %[1]s
  namespace: %[2]s
  annotations: {networking.knative.dev/ingress.class: weir.ingress.networking.knative.dev}
spec:
  rules:
  - hosts: [%[1]s.%[2]s.example.com]
    visibility: ExternalIP
    http:
      paths:
      - splits:
        - {serviceName: %[1]s, serviceNamespace: %[2]s, servicePort: 80, percent: 100}%[4]s
  - hosts: [%[1]s.%[2]s.svc.cluster.local]
    visibility: ClusterLocal
    http:
      paths:
      - splits:
        - {serviceName: %[1]s, serviceNamespace: %[2]s, servicePort: 80, percent: 100}
---
apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  ports: [{name: http, port: 80, targetPort: %[3]d}]
---
`

const sliceTmpl = `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %[1]s-1
  namespace: %[2]s
  labels: {kubernetes.io/service-name: %[1]s}
addressType: IPv4
ports: [{name: http, port: %[3]d}]
endpoints:%[4]s
---
`

func endpoints(ready bool) string {
	if !ready {
		return " []"
	}
	return "\n- addresses: [127.0.0.1]\n  conditions: {ready: true}"
}

func generate(dir string, n, files, backend int) error {
	per := (n + files - 1) / files
	for f := 0; f*per < n; f++ {
		out, err := os.Create(filepath.Join(dir, fmt.Sprintf("apps-%03d.yaml", f)))
		if err != nil {
			return err
		}
		w := bufio.NewWriterSize(out, 1<<20)
		for i := f * per; i < min(n, (f+1)*per); i++ {
			name, ns := fmt.Sprintf("app-%d", i), fmt.Sprintf("ns-%d", i%100)
			fmt.Fprintf(w, kingressTmpl, name, ns, backend, "")
			fmt.Fprintf(w, sliceTmpl, name, ns, backend, endpoints(true))
		}
		if err := errors.Join(w.Flush(), out.Close()); err != nil {
			return err
		}
	}
	return nil
}

func smallYAML(gen, backend int) string {
	headers := fmt.Sprintf("\n        appendHeaders: {X-Gen: %q}", strconv.Itoa(gen))
	body := strings.Replace(fmt.Sprintf(kingressTmpl, "small", "default", backend, headers), "small.default.example.com", "small.example.com", 1)
	return body + fmt.Sprintf(sliceTmpl, "small", "default", backend, endpoints(true))
}

func writeZeroSlice(dir string, ready bool, backend int) time.Time {
	ing := strings.Replace(fmt.Sprintf(kingressTmpl, "zero", "default", backend, ""), "zero.default.example.com", "zero.example.com", 1)
	replace(dir, "zero.yaml", ing, true)
	return replace(dir, "zero-slice.yaml", fmt.Sprintf(sliceTmpl, "zero", "default", backend, endpoints(ready)), true)
}

func replace(dir, name, body string, backdate bool) time.Time {
	tmp := filepath.Join(dir, "."+name+".tmp")
	check(os.WriteFile(tmp, []byte(body), 0o644))
	if backdate {
		past := time.Now().Add(-time.Second)
		check(os.Chtimes(tmp, past, past))
	}
	t := time.Now()
	check(os.Rename(tmp, filepath.Join(dir, name)))
	return t
}

// cpuTime is the process's user+system time from /proc.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	check(err)
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const clockTick = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTick
}

func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
