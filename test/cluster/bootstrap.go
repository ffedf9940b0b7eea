package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	yamlutil "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
)

// Namespaces the conformance suite and Weir need.
var namespaces = []string{"knative-serving", "weir-system", "serving-tests"}

// knativeConfigMaps are what knative.dev/pkg's sharedmain and Weir's
// controller read in knative-serving, kept minimal.
var knativeConfigMaps = map[string]map[string]string{
	"config-network": {"ingress-class": "weir.ingress.networking.knative.dev"},
	"config-logging": {
		"zap-logger-config": `{"level": "info", "development": false, "outputPaths": ["stdout"], "errorOutputPaths": ["stderr"], "encoding": "json",
  "encoderConfig": {"timeKey": "timestamp", "levelKey": "severity", "nameKey": "logger", "callerKey": "caller", "messageKey": "message",
  "stacktraceKey": "stacktrace", "lineEnding": "", "levelEncoder": "", "timeEncoder": "iso8601", "durationEncoder": "", "callerEncoder": ""}}`,
	},
	"config-observability": {"metrics-protocol": "none", "tracing-protocol": "none"},
	// Short leases, so a killed leader is replaced in seconds (Knative's
	// defaults are 60s/40s/10s).
	"config-leader-election": {"lease-duration": "15s", "renew-deadline": "10s", "retry-period": "2s"},
}

// weirManifestKinds are the config/ objects that make sense here. The
// Deployments' pods are run by StartWeir; PDBs and HPAs have no controller.
var weirManifestKinds = map[string]bool{
	"Namespace": true, "ServiceAccount": true, "ClusterRole": true, "ClusterRoleBinding": true,
	"Role": true, "RoleBinding": true, "ConfigMap": true, "Service": true,
	"CustomResourceDefinition": true, "IngressClass": true,
}

func (c *Cluster) bootstrap(ctx context.Context) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	apply := func(objs []*unstructured.Unstructured) error {
		for _, o := range objs {
			if err := createObject(ctx, dyn, mapper, o); err != nil {
				return err
			}
		}
		return nil
	}

	// The KIngress CRD, as Knative ships it.
	netDir, err := moduleDir(root, "knative.dev/networking")
	if err != nil {
		return err
	}
	crds, err := readManifests(filepath.Join(netDir, "config", "ingress.yaml"))
	if err != nil {
		return err
	}
	if err := apply(crds); err != nil {
		return err
	}
	// The Gateway API's standard channel, from the module in go.mod.
	gwDir, err := moduleDir(root, "sigs.k8s.io/gateway-api")
	if err != nil {
		return err
	}
	gwFiles, err := filepath.Glob(filepath.Join(gwDir, "config", "crd", "standard", "gateway.networking.k8s.io_*.yaml"))
	if err != nil {
		return err
	}
	gwFiles = slices.DeleteFunc(gwFiles, func(f string) bool { return strings.Contains(f, "_vap_") })
	gwCRDs, err := readManifests(gwFiles...)
	if err != nil {
		return err
	}
	if err := apply(gwCRDs); err != nil {
		return err
	}

	for _, ns := range namespaces {
		_, err := c.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	for name, data := range knativeConfigMaps {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "knative-serving"}, Data: data}
		if _, err := c.Kube.CoreV1().ConfigMaps(cm.Namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return err
		}
	}

	files, err := filepath.Glob(filepath.Join(root, "config", "*.yaml"))
	if err != nil {
		return err
	}
	objs, err := readManifests(files...)
	if err != nil {
		return err
	}
	var keep []*unstructured.Unstructured
	for _, o := range objs {
		if !weirManifestKinds[o.GetKind()] {
			continue
		}
		if o.GetKind() == "Service" && o.GetNamespace() == "weir-system" && o.GetName() == "weir" {
			if err := c.setNodePorts(o); err != nil {
				return err
			}
		}
		keep = append(keep, o)
	}
	if err := apply(keep); err != nil {
		return err
	}

	if err := c.createNode(ctx); err != nil {
		return err
	}
	// The CRDs must serve before anyone lists KIngresses or Gateways
	// (weir-controller looks for the Gateway API once, at start).
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if _, err := c.Networking.NetworkingV1alpha1().Ingresses("default").List(ctx, metav1.ListOptions{}); err != nil {
			return false, nil
		}
		for _, gv := range []string{"gateway.networking.k8s.io/v1", "gateway.weir.dev/v1alpha1", "policy.weir.dev/v1alpha1"} {
			if _, err := disc.ServerResourcesForGroupVersion(gv); err != nil {
				return false, nil
			}
		}
		return true, nil
	})
}

// setNodePorts fixes the external gateway Service's node ports, so the
// suite's --ingressendpoint knows where to dial.
func (c *Cluster) setNodePorts(svc *unstructured.Unstructured) error {
	ports, _, err := unstructured.NestedSlice(svc.Object, "spec", "ports")
	if err != nil {
		return err
	}
	for _, p := range ports {
		m := p.(map[string]any)
		// Decoded YAML numbers are float64.
		switch fmt.Sprint(m["port"]) {
		case "80":
			m["nodePort"] = int64(c.HTTPNodePort)
		case "443":
			m["nodePort"] = int64(c.HTTPSNodePort)
		}
	}
	return unstructured.SetNestedSlice(svc.Object, ports, "spec", "ports")
}

func (c *Cluster) createNode(ctx context.Context) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: c.NodeName, Labels: map[string]string{"kubernetes.io/hostname": c.NodeName}}}
	node, err := c.Kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	node.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "WeirPodRunner", LastHeartbeatTime: now, LastTransitionTime: now}},
		Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: c.net.gateway.String()}, {Type: corev1.NodeHostName, Address: c.NodeName}},
	}
	_, err = c.Kube.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

func createObject(ctx context.Context, dyn dynamic.Interface, mapper meta.RESTMapper, o *unstructured.Unstructured) error {
	gvk := o.GroupVersionKind()
	var m *meta.RESTMapping
	// A CRD's kinds show up in discovery a moment after it is created.
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		var err error
		if m, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			if dm, ok := mapper.(*restmapper.DeferredDiscoveryRESTMapper); ok {
				dm.Reset()
			}
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("no API for %s: %w", gvk, err)
	}
	var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
	}
	if _, err := ri.Create(ctx, o, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating %s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
	}
	return nil
}

// readManifests decodes every YAML document in the files.
func readManifests(files ...string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		dec := yamlutil.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for {
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if len(m) == 0 {
				continue
			}
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
	return out, nil
}

// moduleDir is where the go command keeps a module the project requires.
func moduleDir(root, module string) (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("go list -m %s: %w", module, err)
	}
	return strings.TrimSpace(string(out)), nil
}
