package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apitypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netclient "knative.dev/networking/pkg/client/clientset/versioned"
	netinformers "knative.dev/networking/pkg/client/informers/externalversions"
	"knative.dev/networking/test/types"

	"github.com/weir-dev/weir/pkg/reconciler/kingress"
	"github.com/weir-dev/weir/test/cluster"
)

const clusterNS = "serving-tests"

// clusterOptions configure runCluster.
type clusterOptions struct {
	n, changes, endpointChanges int
	rest                        time.Duration
	controllerArgs              []string
	keep, verbose               bool
	// createFirst: the objects exist before Weir starts (a cluster
	// switching its ingress class to Weir), and the times count from
	// Weir's start.
	createFirst bool
	// heapDir: heap profiles of both processes are written there after
	// the changes.
	heapDir string
}

// runCluster is path (b): weir-controller and one weir-proxy gateway as
// pods on test/cluster, with n KIngresses (each with its own Service and
// EndpointSlice, all pointing at one backend pod) created through the API
// server.
func runCluster(o clusterOptions) {
	n, changes, restFor, controllerArgs, keep, createFirst, heapDir := o.n, o.changes, o.rest, o.controllerArgs, o.keep, o.createFirst, o.heapDir
	ctx := context.Background()
	c, err := cluster.Start(ctx, cluster.Options{KeepWorkDir: keep})
	check(err)
	if keep {
		log.Printf("cluster logs stay in %s", c.LogDir())
	}
	defer c.Stop()
	c.StopOnSignal()
	if heapDir != "" {
		// Knative's sharedmain serves pprof on :8008 when this is set.
		_, err := c.Kube.CoreV1().ConfigMaps("knative-serving").Patch(ctx, "config-observability", apitypes.MergePatchType,
			[]byte(`{"data":{"runtime-profiling":"enabled"}}`), metav1.PatchOptions{})
		check(err)
	}
	var weir *cluster.Weir
	startWeir := func() {
		weir, err = c.StartWeir(ctx, cluster.WeirOptions{ControllerArgs: controllerArgs})
		check(err)
	}
	if !createFirst {
		startWeir()
	} else {
		_, err = c.StartPodRunner(ctx, nil)
		check(err)
	}
	backendIP := startClusterBackend(ctx, c)

	cfg := rest.CopyConfig(c.Config)
	cfg.QPS, cfg.Burst = 2000, 4000
	kube := kubernetes.NewForConfigOrDie(cfg)
	nets := netclient.NewForConfigOrDie(cfg)

	log.Printf("creating %d KIngresses with their Services and EndpointSlices", n)
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				createApp(ctx, kube, nets, i, backendIP)
			}
		}()
	}
	wg.Wait()
	created := time.Since(start)
	log.Printf("created in %v", created.Round(time.Millisecond))
	if createFirst {
		start = time.Now()
		startWeir()
		log.Printf("weir started in %v", time.Since(start).Round(time.Millisecond))
	}

	client := &http.Client{Timeout: 5 * time.Second}
	get := func(host string) (int, types.RuntimeInfo) {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s:%d/", c.NodeAddress, c.HTTPNodePort), nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			return 0, types.RuntimeInfo{}
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var info types.RuntimeInfo
		_ = json.Unmarshal(b, &info)
		return resp.StatusCode, info
	}
	until := func(what string, limit, every time.Duration, ok func() bool) {
		t0 := time.Now()
		for !ok() {
			if time.Since(t0) > limit {
				log.Fatalf("%s: not within %v", what, limit)
			}
			time.Sleep(every)
		}
	}
	until("first served", 30*time.Minute, 10*time.Millisecond, func() bool {
		code, _ := get(appHost(0))
		return code == 200
	})
	firstServed := time.Since(start)
	log.Printf("first served after %v", firstServed.Round(time.Millisecond))
	// Count Ready from a watch: listing 10,000 KIngresses every second
	// costs the API server more than the controller's status writes.
	countReady := watchReady(ctx, nets)
	lastLog := time.Now()
	until("all Ready", 3*time.Hour, 100*time.Millisecond, func() bool {
		ready := countReady()
		if time.Since(lastLog) > 10*time.Second {
			log.Printf("%d of %d Ready after %v", ready, n, time.Since(start).Round(time.Second))
			lastLog = time.Now()
		}
		return ready == n
	})
	allReady := time.Since(start)
	log.Printf("all %d Ready after %v", n, allReady.Round(time.Millisecond))

	// Each latency counts from the update call; the ...AfterWrite ones
	// from its return, when the API server has stored it: the rest is
	// Weir's.
	var served, servedAfterWrite []time.Duration
	for i := 1; i <= changes; i++ {
		// The controller's status writes race the update; the clock starts
		// at the attempt that is stored.
		var t0 time.Time
		check(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			ing, err := nets.NetworkingV1alpha1().Ingresses(clusterNS).Get(ctx, "app-0", metav1.GetOptions{})
			if err != nil {
				return err
			}
			ing.Spec.Rules[0].HTTP.Paths[0].AppendHeaders = map[string]string{"X-Gen": strconv.Itoa(i)}
			t0 = time.Now()
			_, err = nets.NetworkingV1alpha1().Ingresses(clusterNS).Update(ctx, ing, metav1.UpdateOptions{})
			return err
		}))
		committed := time.Now()
		want := strconv.Itoa(i)
		until("change served", time.Minute, time.Millisecond, func() bool {
			_, info := get(appHost(0))
			return info.Request != nil && info.Request.Headers.Get("X-Gen") == want
		})
		served = append(served, time.Since(t0))
		servedAfterWrite = append(servedAfterWrite, time.Since(committed))
	}

	// An endpoint change: app-1's only EndpointSlice loses its endpoint
	// (the gateway answers 503) and gets it back (scale from zero), until
	// the gateway answers 200.
	var endpoint, endpointAfterWrite []time.Duration
	for range o.endpointChanges {
		setEndpoint(ctx, kube, 1, backendIP, false)
		until("endpoint gone", time.Minute, time.Millisecond, func() bool {
			code, _ := get(appHost(1))
			return code == http.StatusServiceUnavailable
		})
		t0, committed := setEndpoint(ctx, kube, 1, backendIP, true)
		until("endpoint served", time.Minute, time.Millisecond, func() bool {
			code, _ := get(appHost(1))
			return code == http.StatusOK
		})
		endpoint = append(endpoint, time.Since(t0))
		endpointAfterWrite = append(endpointAfterWrite, time.Since(committed))
	}
	if o.verbose {
		log.Printf("change: %v", served)
		log.Printf("change after the write: %v", servedAfterWrite)
		log.Printf("endpoint: %v", endpoint)
		log.Printf("endpoint after the write: %v", endpointAfterWrite)
	}
	log.Printf("after the API write: change p50 %v p99 %v, endpoint p50 %v p99 %v",
		pct(servedAfterWrite, 50), pct(servedAfterWrite, 99), pct(endpointAfterWrite, 50), pct(endpointAfterWrite, 99))

	if heapDir != "" {
		check(os.MkdirAll(heapDir, 0o755))
		ctrlPod, err := c.Kube.CoreV1().Pods("knative-serving").Get(ctx, weir.ControllerPods[0], metav1.GetOptions{})
		check(err)
		gwPod, err := c.Kube.CoreV1().Pods("weir-system").Get(ctx, weir.GatewayPods[0], metav1.GetOptions{})
		check(err)
		saveHeap(fmt.Sprintf("http://%s:8008/debug/pprof/heap?gc=1", ctrlPod.Status.PodIP), filepath.Join(heapDir, "controller.heap"))
		saveHeap(fmt.Sprintf("http://%s:9901/debug/pprof/heap?gc=1", gwPod.Status.PodIP), filepath.Join(heapDir, "gateway.heap"))
	}

	time.Sleep(2 * time.Second)
	ctrl, proxy := findProcess("weir-controller"), findProcess("weir-proxy")
	c0, p0 := cpuTime(ctrl), cpuTime(proxy)
	time.Sleep(restFor)
	ctrlRest := float64(cpuTime(ctrl)-c0) / float64(restFor) * 100
	proxyRest := float64(cpuTime(proxy)-p0) / float64(restFor) * 100

	if createFirst {
		fmt.Println("Objects created before Weir started; times count from Weir's start.")
	}
	fmt.Printf("| KIngresses | created | start → first served | start → all Ready | change → served p50 / p99 | endpoint → traffic p50 / p99 | peak RSS controller / proxy | CPU at rest controller / proxy |\n")
	fmt.Printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	fmt.Printf("| %d | %v | %v | %v | %v / %v | %v / %v | %d / %d MiB | %.1f / %.1f %% |\n", n,
		created.Round(100*time.Millisecond), firstServed.Round(100*time.Millisecond), allReady.Round(100*time.Millisecond),
		pct(served, 50), pct(served, 99), pct(endpoint, 50), pct(endpoint, 99), peakRSS(ctrl)>>20, peakRSS(proxy)>>20, ctrlRest, proxyRest)
}

// watchReady returns a function that counts the Ready KIngresses in
// clusterNS, kept up to date by an informer.
func watchReady(ctx context.Context, nets netclient.Interface) func() int {
	factory := netinformers.NewSharedInformerFactoryWithOptions(nets, 0, netinformers.WithNamespace(clusterNS))
	informer := factory.Networking().V1alpha1().Ingresses().Informer()
	var mu sync.Mutex
	ready := map[string]bool{}
	update := func(obj interface{}) {
		ing, ok := obj.(*v1alpha1.Ingress)
		if !ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if ing.IsReady() {
			ready[ing.Name] = true
		} else {
			delete(ready, ing.Name)
		}
	}
	_, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    update,
		UpdateFunc: func(_, obj interface{}) { update(obj) },
	})
	check(err)
	factory.Start(ctx.Done())
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(ready)
	}
}

// saveHeap writes the heap profile served at url to file.
func saveHeap(url, file string) {
	resp, err := http.Get(url)
	check(err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		log.Fatalf("%s: %s", url, resp.Status)
	}
	out, err := os.Create(file)
	check(err)
	_, err = io.Copy(out, resp.Body)
	check(err)
	check(out.Close())
	log.Printf("heap profile in %s", file)
}

func appHost(i int) string { return fmt.Sprintf("app-%d.%s.example.com", i, clusterNS) }

func createApp(ctx context.Context, kube kubernetes.Interface, nets netclient.Interface, i int, backendIP string) {
	name := fmt.Sprintf("app-%d", i)
	_, err := kube.CoreV1().Services(clusterNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: clusterNS},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(8080)}}},
	}, metav1.CreateOptions{})
	check(err)
	_, err = kube.DiscoveryV1().EndpointSlices(clusterNS).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: clusterNS, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{backendIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}, metav1.CreateOptions{})
	check(err)
	split := []v1alpha1.IngressBackendSplit{{IngressBackend: v1alpha1.IngressBackend{
		ServiceNamespace: clusterNS, ServiceName: name, ServicePort: intstr.FromInt(80)}, Percent: 100}}
	_, err = nets.NetworkingV1alpha1().Ingresses(clusterNS).Create(ctx, &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: clusterNS,
			Annotations: map[string]string{networking.IngressClassAnnotationKey: kingress.ClassName}},
		Spec: v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
			{Hosts: []string{appHost(i)}, Visibility: v1alpha1.IngressVisibilityExternalIP,
				HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{Splits: split}}}},
			{Hosts: []string{name + "." + clusterNS + ".svc.cluster.local"}, Visibility: v1alpha1.IngressVisibilityClusterLocal,
				HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{Splits: split}}}},
		}},
	}, metav1.CreateOptions{})
	check(err)
}

// setEndpoint gives app-i's EndpointSlice the backend as its one endpoint,
// or no endpoint.
// It returns when the update was sent and when the API server answered.
func setEndpoint(ctx context.Context, kube kubernetes.Interface, i int, backendIP string, present bool) (sent, committed time.Time) {
	name := fmt.Sprintf("app-%d-1", i)
	slice, err := kube.DiscoveryV1().EndpointSlices(clusterNS).Get(ctx, name, metav1.GetOptions{})
	check(err)
	slice.Endpoints = nil
	if present {
		slice.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{backendIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}}
	}
	sent = time.Now()
	_, err = kube.DiscoveryV1().EndpointSlices(clusterNS).Update(ctx, slice, metav1.UpdateOptions{})
	check(err)
	return sent, time.Now()
}

// startClusterBackend runs Knative's runtime test image (which answers
// Knative's probes) and returns its pod IP.
func startClusterBackend(ctx context.Context, c *cluster.Cluster) string {
	_, err := c.Kube.CoreV1().Pods(clusterNS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: clusterNS},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "ko.local/runtime:latest",
			Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
			Env:   []corev1.EnvVar{{Name: "PORT", Value: "8080"}},
		}}},
	}, metav1.CreateOptions{})
	check(err)
	check(c.WaitPodReady(ctx, clusterNS, "backend", 2*time.Minute))
	pod, err := c.Kube.CoreV1().Pods(clusterNS).Get(ctx, "backend", metav1.GetOptions{})
	check(err)
	return pod.Status.PodIP
}

// findProcess returns the pid of the one process whose command is name.
func findProcess(name string) int {
	entries, err := os.ReadDir("/proc")
	check(err)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if argv0, _, _ := strings.Cut(string(cmd), "\x00"); filepath.Base(argv0) == name {
			return pid
		}
	}
	log.Fatalf("no %s process", name)
	return 0
}
