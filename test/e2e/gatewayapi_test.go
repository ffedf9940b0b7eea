package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	gatewayapi "github.com/weir-dev/weir/pkg/reconciler/gateway"
)

// TestGatewayAPI: a Gateway gets its own data plane (a Deployment and a
// Service in weir-system) shaped by its class's GatewayParameters and its
// spec.infrastructure, its address in status, and serves its HTTPRoute
// there; the route's status says it is accepted; deleting the Gateway
// removes the data plane. The apiserver refuses GatewayParameters the
// CRD's schema does not allow.
func TestGatewayAPI(t *testing.T) {
	ctx := context.Background()
	gw, err := gwclient.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	startBackend(t, "gw-backend")

	dyn, err := dynamic.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	params := dyn.Resource(gatewayapi.ParametersResource).Namespace("weir-system")
	newParams := func(name string, spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "gateway.weir.dev/v1alpha1", "kind": "GatewayParameters",
			"metadata": map[string]any{"name": name, "namespace": "weir-system"}, "spec": spec,
		}}
	}
	if _, err := params.Create(ctx, newParams("bad", map[string]any{"replicas": int64(-1), "serviceType": "ExternalName"}), metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("GatewayParameters with replicas -1 and serviceType ExternalName: %v, want refused as invalid", err)
	}
	if _, err := params.Create(ctx, newParams("e2e", map[string]any{"replicas": int64(2), "serviceType": "ClusterIP"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = params.Delete(ctx, "e2e", metav1.DeleteOptions{}) })

	class := &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "weir-e2e"}, Spec: gwv1.GatewayClassSpec{
		ControllerName: gatewayapi.ControllerName,
		ParametersRef:  &gwv1.ParametersReference{Group: gatewayapi.ParametersGroup, Kind: gatewayapi.ParametersKind, Name: "e2e", Namespace: ptr.To[gwv1.Namespace]("weir-system")},
	}}
	if _, err := gw.GatewayV1().GatewayClasses().Create(ctx, class, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.GatewayV1().GatewayClasses().Delete(ctx, class.Name, metav1.DeleteOptions{}) })
	gateway := &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: namespace},
		Spec: gwv1.GatewaySpec{GatewayClassName: "weir-e2e", Listeners: []gwv1.Listener{{
			Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType,
		}}, Infrastructure: &gwv1.GatewayInfrastructure{
			Labels:      map[gwv1.LabelKey]gwv1.LabelValue{"team": "e2e"},
			Annotations: map[gwv1.AnnotationKey]gwv1.AnnotationValue{"lb.example.com/internal": "true"},
		}},
	}
	if _, err := gw.GatewayV1().Gateways(namespace).Create(ctx, gateway, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	route := &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: namespace},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "edge"}}},
			Hostnames:       []gwv1.Hostname{"gw.example.com"},
			Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{
				BackendObjectReference: gwv1.BackendObjectReference{Name: "gw-backend", Port: ptr.To[gwv1.PortNumber](80)},
			}}}}},
		},
	}
	if _, err := gw.GatewayV1().HTTPRoutes(namespace).Create(ctx, route, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	var address string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		g, err := gw.GatewayV1().Gateways(namespace).Get(ctx, "edge", metav1.GetOptions{})
		if err != nil || !meta.IsStatusConditionTrue(g.Status.Conditions, string(gwv1.GatewayConditionProgrammed)) || len(g.Status.Addresses) == 0 {
			return false, nil
		}
		address = g.Status.Addresses[0].Value
		return true, nil
	})
	if err != nil {
		g, _ := gw.GatewayV1().Gateways(namespace).Get(ctx, "edge", metav1.GetOptions{})
		t.Fatalf("Gateway not Programmed with an address: %+v", g.Status)
	}

	// The data plane starts after the Gateway is programmed; wait for it
	// to answer.
	client := &http.Client{Timeout: 5 * time.Second}
	var last error
	deadline := time.Now().Add(2 * time.Minute)
	for {
		info, err := getFrom(ctx, client, fmt.Sprintf("http://%s:80/", address), "gw.example.com")
		if err == nil && backendName(info) == "gw-backend" {
			break
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("no answer from gw-backend through the Gateway at %s: %v", address, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
	name := gatewayapi.ResourceName(namespace, "edge")
	d, err := kube.Kube.AppsV1().Deployments("weir-system").Get(ctx, name, metav1.GetOptions{})
	if err != nil || ptr.Deref(d.Spec.Replicas, 0) != 2 || d.Spec.Template.Labels["team"] != "e2e" {
		t.Errorf("the Gateway's Deployment: %v; want 2 replicas with the infrastructure label", err)
	}
	svc, err := kube.Kube.CoreV1().Services("weir-system").Get(ctx, name, metav1.GetOptions{})
	if err != nil || svc.Spec.Type != "ClusterIP" || svc.Annotations["lb.example.com/internal"] != "true" {
		t.Errorf("the Gateway's Service: %v; want a ClusterIP Service with the infrastructure annotation", err)
	}
	r, err := gw.GatewayV1().HTTPRoutes(namespace).Get(ctx, "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Status.Parents) != 1 || !meta.IsStatusConditionTrue(r.Status.Parents[0].Conditions, string(gwv1.RouteConditionAccepted)) {
		t.Errorf("HTTPRoute status = %+v, want Accepted by one parent", r.Status)
	}
	// A host the route does not name is not served there.
	if _, err := getFrom(ctx, client, fmt.Sprintf("http://%s:80/", address), "other.example.com"); err == nil {
		t.Error("a host no route names was served")
	}

	if err := gw.GatewayV1().Gateways(namespace).Delete(ctx, "edge", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	_ = gw.GatewayV1().HTTPRoutes(namespace).Delete(ctx, "app", metav1.DeleteOptions{})
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, derr := kube.Kube.AppsV1().Deployments("weir-system").Get(ctx, name, metav1.GetOptions{})
		_, serr := kube.Kube.CoreV1().Services("weir-system").Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(derr) && apierrors.IsNotFound(serr), nil
	})
	if err != nil {
		t.Errorf("the deleted Gateway's Deployment or Service is still there")
	}
}

// getFrom sends one request for host to url and decodes the runtime
// image's answer.
func getFrom(ctx context.Context, c *http.Client, url, host string) (runtimeInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return runtimeInfo{}, err
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return runtimeInfo{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return runtimeInfo{}, fmt.Errorf("%s: %s", resp.Status, body)
	}
	var info runtimeInfo
	if err := json.Unmarshal(body, &info); err != nil || info.Host == nil {
		return runtimeInfo{}, fmt.Errorf("decoding %q: %v", body, err)
	}
	return info, nil
}
