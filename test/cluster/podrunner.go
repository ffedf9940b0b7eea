package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// PodRunner is the cluster's kubelet. It binds unscheduled Pods to the
// node and runs each Pod of the node as a process:
//
//   - the image's name (last path element, no tag) picks a binary from
//     the image map: Knative's test images and Weir's commands;
//   - the pod gets a network namespace with its own address (see
//     network), a hostname of its own (UTS namespace), and its
//     /etc/hosts and /etc/resolv.conf from /etc/netns/<ns>/ through
//     `ip netns exec`; /etc/hosts names every Service
//     (name.ns.svc.cluster.local, name.ns.svc, name.ns, and name within
//     the pod's namespace) and is rewritten in place when Services change;
//   - Secret, ConfigMap and emptyDir volumes are written to files and
//     bind-mounted at their mountPath in the pod's mount namespace;
//   - env and args come from the container spec, with $(VAR) expansion;
//   - status.podIP, phase Running and the Ready condition are set once
//     the readiness probe passes (HTTP GET, or a TCP connect for TCP and
//     gRPC probes and for containers without a probe that have a port);
//   - a deleted pod's process group gets SIGTERM, then SIGKILL after its
//     grace period (at most 10 s), and the pod object is then removed.
//
// One container per pod; init containers, probes other than readiness,
// resource limits and security contexts are not implemented.
type PodRunner struct {
	c      *Cluster
	images map[string]string

	mu        sync.Mutex
	pods      map[types.UID]*runningPod
	mountDirs []string // mount points the runner created on the host
	hostsKick chan struct{}
	stopped   bool
	wg        sync.WaitGroup
}

type runningPod struct {
	uid       types.UID
	namespace string
	name      string
	container string
	cancel    context.CancelFunc
	grace     time.Duration
	done      chan struct{}

	mu    sync.Mutex
	netns *podNS
	proc  *process // the container's current process
}

// StartPodRunner builds the images (test images and Weir's commands) and
// starts running the node's pods. extra maps more image names to
// binaries.
func (c *Cluster) StartPodRunner(ctx context.Context, extra map[string]string) (*PodRunner, error) {
	if c.runner != nil {
		return c.runner, nil
	}
	t0 := time.Now()
	images, err := BuildImages(ctx, c.opts.Progress)
	if err != nil {
		return nil, err
	}
	for k, v := range extra {
		images[k] = v
	}
	r := &PodRunner{c: c, images: images, pods: map[types.UID]*runningPod{}, hostsKick: make(chan struct{}, 1)}
	pods := c.informers.Core().V1().Pods().Informer()
	_, _ = pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.handle(o) },
		UpdateFunc: func(_, o any) { r.handle(o) },
		DeleteFunc: func(o any) { r.forget(o) },
	})
	_, _ = c.informers.Core().V1().Services().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { r.kickHosts() },
		UpdateFunc: func(any, any) { r.kickHosts() },
		DeleteFunc: func(any) { r.kickHosts() },
	})
	c.informers.Start(c.ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), pods.HasSynced) {
		return nil, errors.New("pod informer did not sync")
	}
	go r.hostsLoop(c.ctx)
	if err := r.serveKubeletAPI(ctx); err != nil {
		return nil, fmt.Errorf("serving the kubelet API: %w", err)
	}
	c.runner = r
	c.logf("pod runner up in %v", time.Since(t0).Round(time.Millisecond))
	return r, nil
}

func (r *PodRunner) handle(o any) {
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	ctx := r.c.ctx
	if pod.Spec.NodeName == "" && pod.DeletionTimestamp == nil {
		// There is no scheduler: every pod lands on our node.
		go func() {
			err := r.c.Kube.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
				ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
				Target:     corev1.ObjectReference{Kind: "Node", Name: r.c.NodeName},
			}, metav1.CreateOptions{})
			if err != nil && !apierrors.IsConflict(err) && ctx.Err() == nil {
				r.c.logf("binding pod %s/%s: %v", pod.Namespace, pod.Name, err)
			}
		}()
		return
	}
	if pod.Spec.NodeName != r.c.NodeName {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	rp := r.pods[pod.UID]
	if pod.DeletionTimestamp != nil {
		if rp == nil {
			// Never started (or already stopped): just confirm.
			go r.confirmDeletion(pod.Namespace, pod.Name, pod.UID)
			return
		}
		if pod.DeletionGracePeriodSeconds != nil {
			rp.mu.Lock()
			rp.grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
			rp.mu.Unlock()
		}
		rp.cancel()
		return
	}
	if rp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return
	}
	pctx, cancel := context.WithCancel(ctx)
	rp = &runningPod{uid: pod.UID, namespace: pod.Namespace, name: pod.Name, container: firstContainer(pod), cancel: cancel, grace: 10 * time.Second, done: make(chan struct{})}
	r.pods[pod.UID] = rp
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.runPod(pctx, rp, pod.DeepCopy())
	}()
}

// forget stops a pod that was removed without a graceful deletion.
func (r *PodRunner) forget(o any) {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	r.mu.Lock()
	if rp := r.pods[pod.UID]; rp != nil {
		rp.mu.Lock()
		rp.grace = 0
		rp.mu.Unlock()
		rp.cancel()
	}
	r.mu.Unlock()
}

func (r *PodRunner) confirmDeletion(namespace, name string, uid types.UID) {
	zero := int64(0)
	err := r.c.Kube.CoreV1().Pods(namespace).Delete(context.Background(), name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && r.c.ctx.Err() == nil {
		r.c.logf("deleting pod %s/%s: %v", namespace, name, err)
	}
}

// stopAll ends every pod (used by Cluster.Stop) and removes the mount
// points the runner created.
func (r *PodRunner) stopAll() {
	r.mu.Lock()
	r.stopped = true
	for _, rp := range r.pods {
		rp.mu.Lock()
		rp.grace = 2 * time.Second
		rp.mu.Unlock()
		rp.cancel()
	}
	r.mu.Unlock()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.mountDirs) - 1; i >= 0; i-- {
		_ = os.Remove(r.mountDirs[i]) // only if empty: never remove data
	}
}

// KillPod sends SIGKILL to a running pod's container, as an OOM kill or a
// crash would end it; the pod runner then restarts it like a kubelet.
func (c *Cluster) KillPod(namespace, name string) error {
	if c.runner == nil {
		return errors.New("the pod runner is not running")
	}
	r := c.runner
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rp := range r.pods {
		if rp.namespace != namespace || rp.name != name {
			continue
		}
		rp.mu.Lock()
		proc := rp.proc
		rp.mu.Unlock()
		if proc == nil || proc.exited() {
			return fmt.Errorf("pod %s/%s has no running container", namespace, name)
		}
		return syscall.Kill(-proc.cmd.Process.Pid, syscall.SIGKILL)
	}
	return fmt.Errorf("pod %s/%s is not running on this node", namespace, name)
}

// podLog is where a pod's output goes.
func (c *Cluster) podLog(namespace, name string) string {
	return filepath.Join(c.logDir, "pod-"+namespace+"_"+name+".log")
}

// PodLog returns the path of a pod's log (stdout and stderr).
func (c *Cluster) PodLog(namespace, name string) string { return c.podLog(namespace, name) }

// runPod is one pod's life: set up, start, probe, restart on exit, and
// clean up when ctx ends (the pod was deleted or the cluster stops).
func (r *PodRunner) runPod(ctx context.Context, rp *runningPod, pod *corev1.Pod) {
	defer close(rp.done)
	defer func() {
		r.mu.Lock()
		delete(r.pods, rp.uid)
		stopped := r.stopped
		r.mu.Unlock()
		if !stopped {
			r.confirmDeletion(rp.namespace, rp.name, rp.uid)
		}
	}()
	logf := func(format string, args ...any) {
		r.c.logf("pod %s/%s: %s", pod.Namespace, pod.Name, fmt.Sprintf(format, args...))
	}
	if len(pod.Spec.Containers) != 1 {
		r.waiting(ctx, pod, "Unsupported", "the pod runner runs pods of exactly one container")
		<-ctx.Done()
		return
	}
	ctr := pod.Spec.Containers[0]
	bin, ok := r.images[imageName(ctr.Image)]
	if !ok {
		r.waiting(ctx, pod, "ErrImagePull", fmt.Sprintf("no binary for image %q (known: %s)", ctr.Image, strings.Join(r.imageNames(), ", ")))
		<-ctx.Done()
		return
	}

	ns, err := r.c.net.addPod()
	if err != nil {
		logf("network: %v", err)
		r.waiting(ctx, pod, "NetworkNotReady", err.Error())
		<-ctx.Done()
		return
	}
	rp.mu.Lock()
	rp.netns = ns
	rp.mu.Unlock()
	defer r.c.net.removePod(ns)
	r.writeHosts(rp)

	dir := filepath.Join(r.c.WorkDir, "pods", string(pod.UID))
	defer os.RemoveAll(dir)
	mounts, err := r.volumes(ctx, pod, dir)
	if err != nil {
		if ctx.Err() == nil {
			r.waiting(ctx, pod, "CreateContainerConfigError", err.Error())
			<-ctx.Done()
		}
		return
	}
	env, err := r.env(ctx, pod, ns.ip)
	if err != nil {
		if ctx.Err() == nil {
			r.waiting(ctx, pod, "CreateContainerConfigError", err.Error())
			<-ctx.Done()
		}
		return
	}
	argv, err := r.command(pod, ns, bin, mounts, env, dir)
	if err != nil {
		r.waiting(ctx, pod, "CreateContainerConfigError", err.Error())
		<-ctx.Done()
		return
	}

	restarts := int32(0)
	backoff := time.Second
	for {
		started := time.Now()
		proc, err := startStampedProcess(pod.Namespace+"/"+pod.Name, r.c.podLog(pod.Namespace, pod.Name),
			r.c.stampedPodLog(pod.Namespace, pod.Name, pod.UID), env, true, argv...)
		if err != nil {
			logf("%v", err)
			r.waiting(ctx, pod, "RunContainerError", err.Error())
			<-ctx.Done()
			return
		}
		rp.mu.Lock()
		rp.proc = proc
		rp.mu.Unlock()
		r.setStatus(ctx, pod, ns.ip, started, restarts, false, nil)
		ready := make(chan struct{})
		pctx, stopProbe := context.WithCancel(ctx)
		go func() {
			if r.probe(pctx, pod, &ctr, ns.ip) {
				close(ready)
			}
		}()
		select {
		case <-ready:
			r.setStatus(ctx, pod, ns.ip, started, restarts, true, nil)
			select {
			case <-proc.done:
			case <-ctx.Done():
			}
		case <-proc.done:
		case <-ctx.Done():
		}
		stopProbe()
		if ctx.Err() != nil {
			rp.mu.Lock()
			grace := min(rp.grace, 10*time.Second)
			rp.mu.Unlock()
			proc.stop(grace)
			return
		}
		// The container exited by itself.
		code := int32(-1)
		if proc.cmd.ProcessState != nil {
			code = int32(proc.cmd.ProcessState.ExitCode())
		}
		logf("exited with code %d after %v; see %s", code, time.Since(started).Round(time.Millisecond), proc.log)
		proc.stop(0)
		term := &corev1.ContainerStateTerminated{ExitCode: code, StartedAt: metav1.NewTime(started), FinishedAt: metav1.Now(), Reason: "Error"}
		if code == 0 {
			term.Reason = "Completed"
		}
		if pod.Spec.RestartPolicy == corev1.RestartPolicyNever || (pod.Spec.RestartPolicy == corev1.RestartPolicyOnFailure && code == 0) {
			r.setStatus(ctx, pod, ns.ip, started, restarts, false, term)
			<-ctx.Done()
			return
		}
		restarts++
		r.setStatus(ctx, pod, ns.ip, started, restarts, false, term)
		if time.Since(started) > time.Minute {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (r *PodRunner) imageNames() []string {
	var names []string
	for k := range r.images {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// updateStatus applies mutate to the latest pod status.
func (r *PodRunner) updateStatus(ctx context.Context, pod *corev1.Pod, mutate func(*corev1.PodStatus)) {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := r.c.Kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != pod.UID {
			return apierrors.NewNotFound(corev1.Resource("pods"), pod.Name)
		}
		mutate(&cur.Status)
		_, err = r.c.Kube.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil && ctx.Err() == nil && !apierrors.IsNotFound(err) {
		r.c.logf("pod %s/%s: updating status: %v", pod.Namespace, pod.Name, err)
	}
}

func (r *PodRunner) waiting(ctx context.Context, pod *corev1.Pod, reason, msg string) {
	r.c.logf("pod %s/%s: %s: %s", pod.Namespace, pod.Name, reason, msg)
	r.updateStatus(ctx, pod, func(s *corev1.PodStatus) {
		s.Phase = corev1.PodPending
		s.HostIP = r.c.net.gateway.String()
		s.ContainerStatuses = []corev1.ContainerStatus{{
			Name: pod.Spec.Containers[0].Name, Image: pod.Spec.Containers[0].Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}},
		}}
	})
}

func (r *PodRunner) setStatus(ctx context.Context, pod *corev1.Pod, ip net.IP, started time.Time, restarts int32, ready bool, term *corev1.ContainerStateTerminated) {
	r.updateStatus(ctx, pod, func(s *corev1.PodStatus) {
		now := metav1.Now()
		cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
			st := corev1.ConditionFalse
			if ok {
				st = corev1.ConditionTrue
			}
			for _, c := range s.Conditions {
				if c.Type == t && c.Status == st {
					return c
				}
			}
			return corev1.PodCondition{Type: t, Status: st, LastTransitionTime: now}
		}
		s.Phase = corev1.PodRunning
		if term != nil && pod.Spec.RestartPolicy != corev1.RestartPolicyAlways && pod.Spec.RestartPolicy != "" {
			s.Phase = corev1.PodFailed
			if term.ExitCode == 0 {
				s.Phase = corev1.PodSucceeded
			}
		}
		s.HostIP = r.c.net.gateway.String()
		s.HostIPs = []corev1.HostIP{{IP: s.HostIP}}
		s.PodIP = ip.String()
		s.PodIPs = []corev1.PodIP{{IP: s.PodIP}}
		if s.StartTime == nil {
			s.StartTime = &now
		}
		s.Conditions = []corev1.PodCondition{
			cond(corev1.PodReadyToStartContainers, true),
			cond(corev1.PodInitialized, true),
			cond(corev1.PodScheduled, true),
			cond(corev1.ContainersReady, ready),
			cond(corev1.PodReady, ready),
		}
		ctr := pod.Spec.Containers[0]
		cs := corev1.ContainerStatus{Name: ctr.Name, Image: ctr.Image, ImageID: "weir-pod-runner://" + imageName(ctr.Image), Ready: ready, RestartCount: restarts}
		started := metav1.NewTime(started)
		if term != nil {
			cs.State.Terminated = term
		} else {
			t := true
			cs.Started = &t
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: started}
		}
		s.ContainerStatuses = []corev1.ContainerStatus{cs}
	})
}

// probe waits until the container is ready; false if ctx ended first.
func (r *PodRunner) probe(ctx context.Context, pod *corev1.Pod, ctr *corev1.Container, ip net.IP) bool {
	check := r.readinessCheck(ctr, ip)
	period := 200 * time.Millisecond
	if p := ctr.ReadinessProbe; p != nil && p.InitialDelaySeconds > 0 {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Duration(p.InitialDelaySeconds) * time.Second):
		}
	}
	for {
		if check(ctx) == nil {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(period):
		}
	}
}

func resolvePort(ctr *corev1.Container, p intstr.IntOrString) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range ctr.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	n, _ := strconv.Atoi(p.StrVal)
	return n
}

func (r *PodRunner) readinessCheck(ctr *corev1.Container, ip net.IP) func(context.Context) error {
	tcp := func(port int) func(context.Context) error {
		return func(ctx context.Context) error {
			d := net.Dialer{Timeout: time.Second}
			conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
			if err == nil {
				conn.Close()
			}
			return err
		}
	}
	p := ctr.ReadinessProbe
	switch {
	case p != nil && p.HTTPGet != nil:
		g := p.HTTPGet
		host := g.Host
		if host == "" {
			host = ip.String()
		}
		scheme := "http"
		if g.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		url := fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(resolvePort(ctr, g.Port))), g.Path)
		// Like the kubelet: no certificate checks, no keep-alive.
		hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true, Proxy: nil,
		}}
		return func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			req.Header.Set("User-Agent", "kube-probe/1.35")
			for _, h := range g.HTTPHeaders {
				req.Header.Set(h.Name, h.Value)
			}
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode < 200 || resp.StatusCode >= 400 {
				return fmt.Errorf("%s: %s", url, resp.Status)
			}
			return nil
		}
	case p != nil && p.TCPSocket != nil:
		return tcp(resolvePort(ctr, p.TCPSocket.Port))
	case p != nil && p.GRPC != nil:
		// A TCP connect stands in for the gRPC health protocol.
		return tcp(int(p.GRPC.Port))
	case len(ctr.Ports) > 0:
		return tcp(int(ctr.Ports[0].ContainerPort))
	default:
		return func(context.Context) error { return nil }
	}
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)`)

// expand does Kubernetes' $(VAR) expansion; unknown references stay.
func expand(s string, vars map[string]string) string {
	return envRef.ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := vars[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// env builds the container's environment from scratch, as a container
// runtime would: no variable of the harness leaks into a pod.
func (r *PodRunner) env(ctx context.Context, pod *corev1.Pod, ip net.IP) ([]string, error) {
	ctr := pod.Spec.Containers[0]
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	set("HOME", "/root")
	set("HOSTNAME", hostname(pod))
	if ksvc, err := r.c.informers.Core().V1().Services().Lister().Services("default").Get("kubernetes"); err == nil {
		set("KUBERNETES_SERVICE_HOST", ksvc.Spec.ClusterIP)
		set("KUBERNETES_SERVICE_PORT", "443")
	}
	for _, ef := range ctr.EnvFrom {
		var data map[string]string
		switch {
		case ef.ConfigMapRef != nil:
			cm, err := r.configMap(ctx, pod.Namespace, ef.ConfigMapRef.Name, ef.ConfigMapRef.Optional)
			if err != nil {
				return nil, err
			}
			data = cm
		case ef.SecretRef != nil:
			s, err := r.secret(ctx, pod.Namespace, ef.SecretRef.Name, ef.SecretRef.Optional)
			if err != nil {
				return nil, err
			}
			data = s
		}
		for k, v := range data {
			set(ef.Prefix+k, v)
		}
	}
	for _, e := range ctr.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, vars))
			continue
		}
		v, err := r.envValue(ctx, pod, ip, e.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		set(e.Name, v)
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vars[k])
	}
	return out, nil
}

func (r *PodRunner) envValue(ctx context.Context, pod *corev1.Pod, ip net.IP, src *corev1.EnvVarSource) (string, error) {
	switch {
	case src.FieldRef != nil:
		path := src.FieldRef.FieldPath
		switch path {
		case "metadata.name":
			return pod.Name, nil
		case "metadata.namespace":
			return pod.Namespace, nil
		case "metadata.uid":
			return string(pod.UID), nil
		case "spec.nodeName":
			return r.c.NodeName, nil
		case "spec.serviceAccountName":
			return pod.Spec.ServiceAccountName, nil
		case "status.podIP":
			return ip.String(), nil
		case "status.hostIP":
			return r.c.net.gateway.String(), nil
		}
		for prefix, m := range map[string]map[string]string{"metadata.labels['": pod.Labels, "metadata.annotations['": pod.Annotations} {
			if strings.HasPrefix(path, prefix) && strings.HasSuffix(path, "']") {
				return m[strings.TrimSuffix(strings.TrimPrefix(path, prefix), "']")], nil
			}
		}
		return "", fmt.Errorf("unsupported fieldRef %q", path)
	case src.ConfigMapKeyRef != nil:
		data, err := r.configMap(ctx, pod.Namespace, src.ConfigMapKeyRef.Name, src.ConfigMapKeyRef.Optional)
		return data[src.ConfigMapKeyRef.Key], err
	case src.SecretKeyRef != nil:
		data, err := r.secret(ctx, pod.Namespace, src.SecretKeyRef.Name, src.SecretKeyRef.Optional)
		return data[src.SecretKeyRef.Key], err
	case src.ResourceFieldRef != nil:
		return resourceFieldValue(pod, src.ResourceFieldRef)
	}
	return "", errors.New("unsupported valueFrom")
}

// waitGet retries get until the object exists (the kubelet waits for a
// missing Secret too), unless it is optional.
func waitGet[T any](ctx context.Context, optional *bool, get func() (T, error)) (T, bool, error) {
	for {
		v, err := get()
		if err == nil {
			return v, true, nil
		}
		if !apierrors.IsNotFound(err) || (optional != nil && *optional) {
			var zero T
			if apierrors.IsNotFound(err) {
				err = nil
			}
			return zero, false, err
		}
		select {
		case <-ctx.Done():
			var zero T
			return zero, false, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (r *PodRunner) configMap(ctx context.Context, ns, name string, optional *bool) (map[string]string, error) {
	cm, ok, err := waitGet(ctx, optional, func() (*corev1.ConfigMap, error) {
		return r.c.Kube.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	})
	if err != nil || !ok {
		return nil, err
	}
	out := map[string]string{}
	for k, v := range cm.Data {
		out[k] = v
	}
	for k, v := range cm.BinaryData {
		out[k] = string(v)
	}
	return out, nil
}

func (r *PodRunner) secret(ctx context.Context, ns, name string, optional *bool) (map[string]string, error) {
	s, ok, err := waitGet(ctx, optional, func() (*corev1.Secret, error) {
		return r.c.Kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	})
	if err != nil || !ok {
		return nil, err
	}
	out := map[string]string{}
	for k, v := range s.Data {
		out[k] = string(v)
	}
	return out, nil
}

// writeVolume writes a Secret's or ConfigMap's keys into vdir; a file
// whose content changed is replaced by a rename, so a reader sees the old
// content or the new, never half of it.
func (r *PodRunner) writeVolume(ctx context.Context, namespace string, v corev1.Volume, vdir string) error {
	var data map[string]string
	var items []corev1.KeyToPath
	var err error
	switch {
	case v.Secret != nil:
		data, err = r.secret(ctx, namespace, v.Secret.SecretName, v.Secret.Optional)
		items = v.Secret.Items
	case v.ConfigMap != nil:
		data, err = r.configMap(ctx, namespace, v.ConfigMap.Name, v.ConfigMap.Optional)
		items = v.ConfigMap.Items
	default:
		return nil
	}
	if err != nil {
		return err
	}
	if len(items) == 0 {
		for k := range data {
			items = append(items, corev1.KeyToPath{Key: k, Path: k})
		}
	}
	for _, it := range items {
		val, ok := data[it.Key]
		if !ok {
			continue
		}
		p := filepath.Join(vdir, filepath.Clean("/"+it.Path))
		if old, err := os.ReadFile(p); err == nil && string(old) == val {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, []byte(val), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, p); err != nil {
			return err
		}
	}
	return nil
}

// refreshVolumes rewrites the pod's Secret and ConfigMap volumes every
// second from the API. An object that cannot be read leaves the files as
// they are, as the kubelet does.
func (r *PodRunner) refreshVolumes(ctx context.Context, pod *corev1.Pod, dir string) {
	var watched []corev1.Volume
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil || v.ConfigMap != nil {
			watched = append(watched, v)
		}
	}
	if len(watched) == 0 {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, v := range watched {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_ = r.writeVolume(rctx, pod.Namespace, v, filepath.Join(dir, "volumes", v.Name))
			cancel()
		}
	}
}

// mount is a bind mount of a file or directory at a path in the pod.
type mount struct {
	src, dst string
	readOnly bool
}

// volumes writes the pod's volumes under dir and returns the container's
// mounts. Secret and ConfigMap volumes are then kept up to date, as the
// kubelet does, until ctx ends.
func (r *PodRunner) volumes(ctx context.Context, pod *corev1.Pod, dir string) ([]mount, error) {
	vols := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		vdir := filepath.Join(dir, "volumes", v.Name)
		if err := os.MkdirAll(vdir, 0o755); err != nil {
			return nil, err
		}
		if v.Secret == nil && v.ConfigMap == nil && v.EmptyDir == nil {
			return nil, fmt.Errorf("volume %s: only secret, configMap and emptyDir volumes are supported", v.Name)
		}
		if err := r.writeVolume(ctx, pod.Namespace, v, vdir); err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		vols[v.Name] = vdir
	}
	go r.refreshVolumes(ctx, pod, dir)
	var out []mount
	for _, vm := range pod.Spec.Containers[0].VolumeMounts {
		src, ok := vols[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %s: no such volume", vm.Name)
		}
		if vm.SubPath != "" {
			src = filepath.Join(src, filepath.Clean("/"+vm.SubPath))
		}
		st, err := os.Stat(src)
		if err != nil {
			return nil, err
		}
		if err := r.mountPoint(vm.MountPath, st.IsDir()); err != nil {
			return nil, err
		}
		out = append(out, mount{src: src, dst: vm.MountPath, readOnly: vm.ReadOnly})
	}
	return out, nil
}

// mountPoint makes sure path exists on the host to bind-mount over. The
// pods share the host's file system under their private mounts, so what
// is created here is recorded and removed (if empty) on Stop.
func (r *PodRunner) mountPoint(path string, dir bool) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	var created []string
	for p := filepath.Dir(path); p != "/"; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		}
		created = append([]string{p}, created...)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if dir {
		if err := os.Mkdir(path, 0o755); err != nil && !os.IsExist(err) {
			return err
		}
	} else if err := os.WriteFile(path, nil, 0o644); err != nil {
		return err
	}
	created = append(created, path)
	r.mu.Lock()
	r.mountDirs = append(r.mountDirs, created...)
	r.mu.Unlock()
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// hostname is the pod's hostname, as the kubelet sets it.
func hostname(pod *corev1.Pod) string {
	h := pod.Name
	if pod.Spec.Hostname != "" {
		h = pod.Spec.Hostname
	}
	if len(h) > 63 {
		h = h[:63]
	}
	return h
}

// command is the pod's argv: `ip netns exec` enters the network namespace
// and a new mount namespace with /etc/netns/<ns>/{hosts,resolv.conf} bound
// over /etc; unshare gives it its own hostname; a shell does the volume
// mounts and execs the binary, so the pid stays the container's.
func (r *PodRunner) command(pod *corev1.Pod, ns *podNS, bin string, mounts []mount, env []string, dir string) ([]string, error) {
	ctr := pod.Spec.Containers[0]
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	args := []string{bin}
	if len(ctr.Command) > 0 {
		// An image's entrypoint is its binary; anything else would need the
		// image's file system.
		if imageName(filepath.Base(ctr.Command[0])) != imageName(ctr.Image) {
			return nil, fmt.Errorf("command %q: only the image's own entrypoint can run here", ctr.Command[0])
		}
		for _, a := range ctr.Command[1:] {
			args = append(args, expand(a, vars))
		}
	}
	for _, a := range ctr.Args {
		args = append(args, expand(a, vars))
	}
	wd := ctr.WorkingDir
	if wd == "" {
		wd = dir
		if err := os.MkdirAll(wd, 0o755); err != nil {
			return nil, err
		}
	}
	var sb strings.Builder
	sb.WriteString("set -e\nhostname " + shellQuote(hostname(pod)) + "\n")
	for _, m := range mounts {
		sb.WriteString("mount --bind " + shellQuote(m.src) + " " + shellQuote(m.dst) + "\n")
		if m.readOnly {
			sb.WriteString("mount -o remount,bind,ro " + shellQuote(m.dst) + "\n")
		}
	}
	sb.WriteString("cd " + shellQuote(wd) + "\nexec")
	for _, a := range args {
		sb.WriteString(" " + shellQuote(a))
	}
	sb.WriteString("\n")
	return []string{"ip", "netns", "exec", ns.name, "unshare", "--uts", "/bin/sh", "-c", sb.String()}, nil
}

func (r *PodRunner) kickHosts() {
	select {
	case r.hostsKick <- struct{}{}:
	default:
	}
}

func (r *PodRunner) hostsLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.hostsKick:
		}
		r.mu.Lock()
		pods := make([]*runningPod, 0, len(r.pods))
		for _, rp := range r.pods {
			pods = append(pods, rp)
		}
		r.mu.Unlock()
		for _, rp := range pods {
			r.writeHosts(rp)
		}
	}
}

// writeHosts writes the pod's /etc/hosts. It rewrites the file in place:
// the pod sees it through a bind mount of this inode.
func (r *PodRunner) writeHosts(rp *runningPod) {
	rp.mu.Lock()
	ns := rp.netns
	rp.mu.Unlock()
	if ns == nil {
		return
	}
	var sb strings.Builder
	sb.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	fmt.Fprintf(&sb, "%s\t%s\n", ns.ip, rp.name)
	svcs, _ := r.c.informers.Core().V1().Services().Lister().List(labels.Everything())
	byName := map[string]string{}
	for _, s := range svcs {
		if ip := s.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
			byName[ServiceHost(s.Namespace, s.Name)] = ip
		}
	}
	sort.Slice(svcs, func(i, j int) bool {
		return svcs[i].Namespace+"/"+svcs[i].Name < svcs[j].Namespace+"/"+svcs[j].Name
	})
	for _, s := range svcs {
		ip := byName[ServiceHost(s.Namespace, s.Name)]
		if s.Spec.Type == corev1.ServiceTypeExternalName {
			// A hosts file has no CNAMEs: resolve targets that are Services.
			ip = byName[strings.TrimSuffix(s.Spec.ExternalName, ".")]
		}
		if ip == "" {
			continue
		}
		names := []string{ServiceHost(s.Namespace, s.Name), s.Name + "." + s.Namespace + ".svc", s.Name + "." + s.Namespace}
		if s.Namespace == rp.namespace {
			names = append(names, s.Name)
		}
		fmt.Fprintf(&sb, "%s\t%s\n", ip, strings.Join(names, " "))
	}
	path := filepath.Join(netnsEtc, ns.name, "hosts")
	if old, err := os.ReadFile(path); err == nil && string(old) == sb.String() {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	// Write, then cut: a reader never sees an empty file.
	if _, err := f.WriteAt([]byte(sb.String()), 0); err == nil {
		_ = f.Truncate(int64(sb.Len()))
	}
}

// firstContainer names the container the pod runner runs ("" if none).
func firstContainer(pod *corev1.Pod) string {
	if len(pod.Spec.Containers) == 0 {
		return ""
	}
	return pod.Spec.Containers[0].Name
}

// resourceFieldValue is the downward API's value of a container's request
// or limit, in units of the divisor, rounded up as the kubelet rounds it.
// Nothing is enforced here; a resource the container does not set is "0"
// (the kubelet would give the node's allocatable amount).
func resourceFieldValue(pod *corev1.Pod, ref *corev1.ResourceFieldSelector) (string, error) {
	ctr := &pod.Spec.Containers[0]
	if ref.ContainerName != "" {
		i := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == ref.ContainerName })
		if i < 0 {
			return "", fmt.Errorf("resourceFieldRef: no container %q", ref.ContainerName)
		}
		ctr = &pod.Spec.Containers[i]
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	var list corev1.ResourceList
	switch {
	case ok && kind == "limits":
		list = ctr.Resources.Limits
	case ok && kind == "requests":
		list = ctr.Resources.Requests
	default:
		return "", fmt.Errorf("resourceFieldRef: unsupported resource %q", ref.Resource)
	}
	q, set := list[corev1.ResourceName(name)]
	if !set {
		return "0", nil
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	// In thousandths, so a CPU divisor of 1m works.
	v, d := q.MilliValue(), divisor.MilliValue()
	return strconv.FormatInt((v+d-1)/d, 10), nil
}
