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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
)

// WeirOptions configure StartWeir.
type WeirOptions struct {
	// Gateways is the number of weir-proxy gateway pods (default 1).
	Gateways int
	// ControllerArgs and ProxyArgs are appended to the commands' flags.
	ControllerArgs, ProxyArgs []string
}

// Weir is a running weir-controller with its gateways.
type Weir struct {
	// ControllerPod and GatewayPods are the pods' names; the controller
	// runs in knative-serving, the gateways in weir-system.
	ControllerPod string
	GatewayPods   []string
}

// StartWeir runs weir-controller and weir-proxy gateways as pods made from
// config/'s Deployments, and waits until they are ready and the gateway
// Services' EndpointSlices list every gateway. The controller authenticates
// with a token of its own ServiceAccount, so config/'s RBAC is what it
// gets; it reaches the apiserver through the kubernetes Service. The
// gateways get their xDS from the weir-controller Service by DNS name.
func (c *Cluster) StartWeir(ctx context.Context, opts WeirOptions) (*Weir, error) {
	if c.runner == nil {
		if _, err := c.StartPodRunner(ctx, nil); err != nil {
			return nil, err
		}
	}
	if opts.Gateways <= 0 {
		opts.Gateways = 1
	}
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

	kubeconfig, err := c.serviceAccountKubeconfig(ctx, "knative-serving", ctrlTmpl.Spec.ServiceAccountName)
	if err != nil {
		return nil, err
	}
	ctrl := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "weir-controller-0", Namespace: "knative-serving", Labels: ctrlTmpl.Labels}, Spec: ctrlTmpl.Spec}
	ctrl.Spec.Containers[0].Args = append([]string{"--kubeconfig=" + kubeconfig, "--disable-ha"}, opts.ControllerArgs...)
	if _, err := c.Kube.CoreV1().Pods(ctrl.Namespace).Create(ctx, ctrl, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	w := &Weir{ControllerPod: ctrl.Name}

	// The gateway template runs Envoy; weir-proxy takes its place, with the
	// same labels and listener ports.
	var ports []corev1.ContainerPort
	for _, p := range gwTmpl.Spec.Containers[0].Ports {
		if p.Name != "http-ready" {
			ports = append(ports, p)
		}
	}
	ports = append(ports, corev1.ContainerPort{Name: "http-admin", ContainerPort: 9901})
	for i := 0; i < opts.Gateways; i++ {
		gw := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("weir-gateway-%d", i), Namespace: "weir-system", Labels: gwTmpl.Labels},
			Spec: corev1.PodSpec{
				ServiceAccountName: gwTmpl.Spec.ServiceAccountName,
				Containers: []corev1.Container{{
					Name:  "proxy",
					Image: "ko://github.com/weir-dev/weir/cmd/weir-proxy",
					Args: append([]string{
						"-xds-address=" + ServiceHost("knative-serving", "weir-controller") + ":18000",
						"-node-id=$(POD_NAME)",
						// On the pod address, so the pod runner can probe /ready.
						"-admin-address=:9901",
						"-access-log=false",
					}, opts.ProxyArgs...),
					Env:   []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
					Ports: ports,
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
						HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http-admin")},
					}},
				}},
			},
		}
		if _, err := c.Kube.CoreV1().Pods(gw.Namespace).Create(ctx, gw, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		w.GatewayPods = append(w.GatewayPods, gw.Name)
	}

	if err := c.WaitPodReady(ctx, ctrl.Namespace, ctrl.Name, 2*time.Minute); err != nil {
		return nil, err
	}
	for _, name := range w.GatewayPods {
		if err := c.WaitPodReady(ctx, "weir-system", name, 2*time.Minute); err != nil {
			return nil, err
		}
	}
	for _, svc := range []string{"weir", "weir-internal"} {
		if err := c.WaitEndpoints(ctx, "weir-system", svc, opts.Gateways, time.Minute); err != nil {
			return nil, err
		}
	}
	c.logf("weir up in %v: %s, %v", time.Since(t0).Round(time.Millisecond), w.ControllerPod, w.GatewayPods)
	return w, nil
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
