package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
)

// WeirOptions configure StartWeir.
type WeirOptions struct {
	// Controllers is the number of weir-controller pods (default 1). One
	// runs with --disable-ha; more elect a leader through Leases, as the
	// release Deployment's replicas do.
	Controllers int
	// Gateways is the number of weir-proxy gateway pods (default 1).
	Gateways int
	// ControllerArgs and ProxyArgs are appended to the commands' flags.
	ControllerArgs, ProxyArgs []string
}

// Weir is a running weir-controller with its gateways.
type Weir struct {
	// ControllerPods and GatewayPods are the pods' names; the controllers
	// run in knative-serving, the gateways in weir-system. GatewayPods
	// follows AddGateway and DeleteGateway.
	ControllerPods []string
	GatewayPods    []string

	c       *Cluster
	opts    WeirOptions
	gateway *corev1.PodTemplateSpec
}

// StartWeir runs weir-controller and weir-proxy gateways as pods made from
// config/'s Deployments, and waits until they are ready and the gateway
// Services' EndpointSlices list every gateway. The controllers
// authenticate with a token of their own ServiceAccount, so config/'s RBAC
// is what they get; they reach the apiserver through the kubernetes
// Service. The gateways get their xDS from the weir-controller Service by
// DNS name.
func (c *Cluster) StartWeir(ctx context.Context, opts WeirOptions) (*Weir, error) {
	if c.runner == nil {
		if _, err := c.StartPodRunner(ctx, nil); err != nil {
			return nil, err
		}
	}
	opts.Controllers = max(opts.Controllers, 1)
	opts.Gateways = max(opts.Gateways, 1)
	t0 := time.Now()
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	ctrlTmpl, err := podTemplate(filepath.Join(root, "config", "400-controller.yaml"), "weir-controller")
	if err != nil {
		return nil, err
	}
	gwTmpl, err := podTemplate(filepath.Join(root, "config", "500-gateway.yaml"), "weir-gateway")
	if err != nil {
		return nil, err
	}
	w := &Weir{c: c, opts: opts, gateway: gwTmpl}

	kubeconfig, err := c.serviceAccountKubeconfig(ctx, "knative-serving", ctrlTmpl.Spec.ServiceAccountName)
	if err != nil {
		return nil, err
	}
	args := []string{"--kubeconfig=" + kubeconfig}
	if opts.Controllers == 1 {
		args = append(args, "--disable-ha")
	}
	for i := 0; i < opts.Controllers; i++ {
		ctrl := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("weir-controller-%d", i), Namespace: "knative-serving", Labels: ctrlTmpl.Labels}, Spec: *ctrlTmpl.Spec.DeepCopy()}
		ctrl.Spec.Containers[0].Args = append(append([]string{}, args...), opts.ControllerArgs...)
		// Gateways' addresses are their ClusterIPs, which the host reaches.
		ctrl.Spec.Containers[0].Env = append(ctrl.Spec.Containers[0].Env, corev1.EnvVar{Name: "GATEWAY_SERVICE_TYPE", Value: "ClusterIP"})
		if _, err := c.Kube.CoreV1().Pods(ctrl.Namespace).Create(ctx, ctrl, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		w.ControllerPods = append(w.ControllerPods, ctrl.Name)
	}
	// Each Gateway's data plane is made from this template, as the
	// release makes it from the weir-gateway Deployment's.
	pt := &corev1.PodTemplate{ObjectMeta: metav1.ObjectMeta{Name: "weir-gateway", Namespace: "weir-system"}, Template: corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: w.gateway.Labels}, Spec: w.proxyPodSpec(),
	}}
	if _, err := c.Kube.CoreV1().PodTemplates(pt.Namespace).Create(ctx, pt, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	for i := 0; i < opts.Gateways; i++ {
		name := fmt.Sprintf("weir-gateway-%d", i)
		if err := w.createGateway(ctx, name); err != nil {
			return nil, err
		}
		w.GatewayPods = append(w.GatewayPods, name)
	}

	for _, name := range w.ControllerPods {
		if err := c.WaitPodReady(ctx, "knative-serving", name, 2*time.Minute); err != nil {
			return nil, err
		}
	}
	for _, name := range w.GatewayPods {
		if err := c.WaitPodReady(ctx, "weir-system", name, 2*time.Minute); err != nil {
			return nil, err
		}
	}
	if err := w.waitGatewayEndpoints(ctx); err != nil {
		return nil, err
	}
	c.logf("weir up in %v: %v, %v", time.Since(t0).Round(time.Millisecond), w.ControllerPods, w.GatewayPods)
	return w, nil
}

// createGateway creates a gateway pod. The release template runs Envoy;
// weir-proxy takes its place, with the same labels and listener ports.
func (w *Weir) createGateway(ctx context.Context, name string) error {
	gw := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "weir-system", Labels: w.gateway.Labels},
		Spec:       w.proxyPodSpec(),
	}
	_, err := w.c.Kube.CoreV1().Pods(gw.Namespace).Create(ctx, gw, metav1.CreateOptions{})
	return err
}

// proxyPodSpec is the gateway pod spec with weir-proxy in Envoy's place.
func (w *Weir) proxyPodSpec() corev1.PodSpec {
	var ports []corev1.ContainerPort
	for _, p := range w.gateway.Spec.Containers[0].Ports {
		if p.Name != "http-ready" {
			ports = append(ports, p)
		}
	}
	ports = append(ports, corev1.ContainerPort{Name: "http-admin", ContainerPort: 9901})
	args := []string{
		"-xds-address=" + ServiceHost("knative-serving", "weir-controller") + ":18000",
		"-node-id=$(POD_NAME)",
		// On the pod address, so the pod runner can probe /ready.
		"-admin-address=:9901",
		"-access-log=false",
	}
	// The release template's xDS identity, mounted where Envoy reads it.
	var volumes []corev1.Volume
	var mounts []corev1.VolumeMount
	for _, v := range w.gateway.Spec.Volumes {
		if v.Name != "xds-tls" {
			continue
		}
		for _, m := range w.gateway.Spec.Containers[0].VolumeMounts {
			if m.Name == v.Name {
				volumes, mounts = append(volumes, v), append(mounts, m)
				args = append(args, "-xds-tls-dir="+m.MountPath)
			}
		}
	}
	return corev1.PodSpec{
		ServiceAccountName: w.gateway.Spec.ServiceAccountName,
		Volumes:            volumes,
		Containers: []corev1.Container{{
			Name:         "proxy",
			Image:        "ko://github.com/weir-dev/weir/cmd/weir-proxy",
			Args:         append(args, w.opts.ProxyArgs...),
			Env:          []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
			Ports:        ports,
			VolumeMounts: mounts,
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
				HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http-admin")},
			}},
		}},
	}
}

// AddGateway starts one more gateway pod and waits until it is ready and
// in the gateway Services' endpoints, as a Deployment's new replica.
func (w *Weir) AddGateway(ctx context.Context, name string) error {
	if err := w.createGateway(ctx, name); err != nil {
		return err
	}
	w.GatewayPods = append(w.GatewayPods, name)
	if err := w.c.WaitPodReady(ctx, "weir-system", name, 2*time.Minute); err != nil {
		return err
	}
	return w.waitGatewayEndpoints(ctx)
}

// DeleteGateway deletes a gateway pod gracefully (SIGTERM, then its drain)
// and waits until it is gone.
func (w *Weir) DeleteGateway(ctx context.Context, name string) error {
	for i, n := range w.GatewayPods {
		if n == name {
			w.GatewayPods = append(w.GatewayPods[:i:i], w.GatewayPods[i+1:]...)
			break
		}
	}
	return w.c.DeletePod(ctx, "weir-system", name, time.Minute)
}

func (w *Weir) waitGatewayEndpoints(ctx context.Context) error {
	for _, svc := range []string{"weir", "weir-internal"} {
		if err := w.c.WaitEndpoints(ctx, "weir-system", svc, len(w.GatewayPods), time.Minute); err != nil {
			return err
		}
	}
	return nil
}

// DeletePod deletes a pod with its default grace period and waits until
// the pod runner has stopped it and the object is gone.
func (c *Cluster) DeletePod(ctx context.Context, namespace, name string, timeout time.Duration) error {
	if err := c.Kube.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return err
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		_, err := c.Kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		return fmt.Errorf("pod %s/%s still exists %v after its deletion", namespace, name, timeout)
	}
	return nil
}

// podTemplate reads the pod template of the named Deployment.
func podTemplate(file, deployment string) (*corev1.PodTemplateSpec, error) {
	objs, err := readManifests(file)
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		if o.GetKind() != "Deployment" || o.GetName() != deployment {
			continue
		}
		tmpl, ok, err := unstructuredField(o.Object, "spec", "template")
		if err != nil || !ok {
			return nil, fmt.Errorf("%s: Deployment %s has no pod template", file, deployment)
		}
		var pt corev1.PodTemplateSpec
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(tmpl, &pt); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		return &pt, nil
	}
	return nil, fmt.Errorf("%s: no Deployment %s", file, deployment)
}

func unstructuredField(obj map[string]any, path ...string) (map[string]any, bool, error) {
	cur := obj
	for _, p := range path {
		next, ok := cur[p].(map[string]any)
		if !ok {
			return nil, false, nil
		}
		cur = next
	}
	return cur, true, nil
}

// serviceAccountKubeconfig writes a kubeconfig with a TokenRequest token
// for the ServiceAccount, pointed at the kubernetes Service's ClusterIP
// (the apiserver's certificate names it).
func (c *Cluster) serviceAccountKubeconfig(ctx context.Context, namespace, sa string) (string, error) {
	expiry := int64(24 * 3600)
	tr, err := c.Kube.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for ServiceAccount %s/%s: %w", namespace, sa, err)
	}
	ksvc, err := c.Kube.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	dir := filepath.Join(c.WorkDir, "serviceaccounts")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, namespace+"_"+sa+".kubeconfig")
	return path, writeKubeconfig(path, "https://"+ksvc.Spec.ClusterIP+":443", c.caFile, tr.Status.Token)
}

// WaitPodReady waits until the pod has the Ready condition.
func (c *Cluster) WaitPodReady(ctx context.Context, namespace, name string, timeout time.Duration) error {
	var last *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		p, err := c.Kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = p
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		status := "not found"
		if last != nil {
			status = fmt.Sprintf("phase %s, podIP %q, containers %+v", last.Status.Phase, last.Status.PodIP, last.Status.ContainerStatuses)
		}
		return fmt.Errorf("pod %s/%s not ready after %v (%s); log: %s\n%s", namespace, name, timeout, status,
			c.podLog(namespace, name), tail(c.podLog(namespace, name), 20))
	}
	return nil
}

// WaitEndpoints waits until the Service's EndpointSlices list at least n
// ready endpoints.
func (c *Cluster) WaitEndpoints(ctx context.Context, namespace, service string, n int, timeout time.Duration) error {
	got := 0
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		slices, err := c.Kube.DiscoveryV1().EndpointSlices(namespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
		if err != nil {
			return false, nil
		}
		got = 0
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready == nil || *e.Conditions.Ready {
					got++
				}
			}
		}
		return got >= n, nil
	})
	if err != nil {
		return fmt.Errorf("service %s/%s: %d ready endpoints after %v, want %d", namespace, service, got, timeout, n)
	}
	return nil
}
