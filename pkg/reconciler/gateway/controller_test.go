package gateway

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.uber.org/zap/zaptest"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/weir-dev/weir/pkg/reconciler/kingress"
	"github.com/weir-dev/weir/pkg/translate"
	"github.com/weir-dev/weir/pkg/xds"
)

// TestControllerServesProvisionsAndReports runs the controller against
// fake API clients: a Gateway gets its own xDS group with only its
// listener, a Deployment and Service from the template, its address and
// conditions in status, and the route an Accepted parent; deleting the
// Gateway empties the group and removes the data plane.
func TestControllerServesProvisionsAndReports(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kube := kubefake.NewSimpleClientset(
		&corev1.PodTemplate{ObjectMeta: metav1.ObjectMeta{Name: "weir-gateway", Namespace: "weir-system"}, Template: corev1.PodTemplateSpec{
			Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "proxy", Image: "weir-proxy", Args: []string{"-node-id=$(POD_NAME)"},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "http-admin", ContainerPort: 9901}},
			}}},
		}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "default"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "app-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "app"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Port: ptr.To[int32](8080)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}}},
		},
	)
	gw := gwfake.NewSimpleClientset(
		&gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "weir"}, Spec: gwv1.GatewayClassSpec{ControllerName: ControllerName}},
		&gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "default"}, Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "edge"}}},
			Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{
				BackendObjectReference: gwv1.BackendObjectReference{Name: "app", Port: ptr.To[gwv1.PortNumber](80)},
			}}}}},
		}},
		// It wants the hostnames the older HTTPRoute serves: refused.
		&gwv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Name: "rpc", Namespace: "default"}, Spec: gwv1.GRPCRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "edge"}}},
			Hostnames:       []gwv1.Hostname{"rpc.example.com"},
			Rules: []gwv1.GRPCRouteRule{{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: gwv1.BackendRef{
				BackendObjectReference: gwv1.BackendObjectReference{Name: "app", Port: ptr.To[gwv1.PortNumber](80)},
			}}}}},
		}},
	)
	// Created through the client: the fake's tracker files objects given
	// to NewSimpleClientset under a guessed resource, "gatewaies".
	if _, err := gw.GatewayV1().Gateways("default").Create(ctx, &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: "default", Generation: 1},
		Spec:       gwv1.GatewaySpec{GatewayClassName: "weir", Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	shared := informers.NewSharedInformerFactory(kube, 0)
	svcInf, sliceInf := shared.Core().V1().Services().Informer(), shared.Discovery().V1().EndpointSlices().Informer()
	if err := sliceInf.AddIndexers(kingress.SliceIndexers); err != nil {
		t.Fatal(err)
	}
	shared.Start(ctx.Done())
	router := xds.NewRouter(xds.NewServer(ctx, xds.Options{}), func(string) *xds.Server { return xds.NewServer(ctx, xds.Options{}) })
	c := NewController(ControllerOptions{
		Kube: kube, Gateway: gw, ServiceInformer: svcInf, SliceInformer: sliceInf, Router: router, GRPCRoutes: true,
		NACKGrace: 100 * time.Millisecond,
		Translate: translate.DefaultOptions(),
		Provisioner: &Provisioner{Kube: kube, Namespace: "weir-system", Template: "weir-gateway",
			ServiceType: corev1.ServiceTypeClusterIP, PrivilegedPortOffset: 10000},
		Logger: zaptest.NewLogger(t).Sugar(),
	})
	c.SetLeader(true)
	go c.Run(ctx)

	poll := func(what string, cond func() bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) { return cond(), nil }); err != nil {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
	programmed := func() string {
		g, err := gw.GatewayV1().Gateways("default").Get(ctx, "edge", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		if c := meta.FindStatusCondition(g.Status.Conditions, "Programmed"); c != nil {
			return string(c.Status) + "/" + c.Reason
		}
		return "none"
	}
	// The fake API gives the Service no address: not programmed yet.
	poll("Programmed=False AddressNotAssigned", func() bool { return programmed() == "False/AddressNotAssigned" })

	if got := router.Group("default/edge").Served(resourcev3.ListenerType); len(got) != 1 || got[0] != "gateway/default/edge/10080" {
		t.Errorf("the Gateway's group serves listeners %v, want only gateway/default/edge/10080", got)
	}
	if got := router.Group("").Served(resourcev3.ListenerType); len(got) != 0 {
		t.Errorf("the shared group serves %v of the Gateway's config", got)
	}

	dep, err := kube.AppsV1().Deployments("weir-system").Get(ctx, ResourceName("default", "edge"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pc := dep.Spec.Template.Spec.Containers[0]
	if pc.Args[0] != "-node-id=gateway/default/edge/$(POD_NAME)" {
		t.Errorf("node id arg = %q", pc.Args[0])
	}
	var ports []int32
	for _, p := range pc.Ports {
		ports = append(ports, p.ContainerPort)
	}
	// The shared gateway's listener port goes; the admin port stays; 80
	// binds 10080.
	if len(ports) != 2 || ports[0] != 9901 || ports[1] != 10080 {
		t.Errorf("container ports = %v, want [9901 10080]", ports)
	}
	svc, err := kube.CoreV1().Services("weir-system").Get(ctx, ResourceName("default", "edge"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 80 || svc.Spec.Ports[0].TargetPort.IntVal != 10080 {
		t.Errorf("service ports = %+v", svc.Spec.Ports)
	}

	// The fake API assigns no cluster IP; give the Service one, as the
	// API server would, and the Gateway's address follows.
	svc.Spec.ClusterIP = "10.96.0.10"
	if _, err := kube.CoreV1().Services("weir-system").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll("the Gateway's address", func() bool {
		g, _ := gw.GatewayV1().Gateways("default").Get(ctx, "edge", metav1.GetOptions{})
		return len(g.Status.Addresses) == 1 && g.Status.Addresses[0].Value == "10.96.0.10"
	})
	// No pod is available yet: still not programmed.
	if got := programmed(); got != "False/Pending" {
		t.Errorf("Programmed = %s before the data plane is available, want False/Pending", got)
	}
	dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1}
	if _, err := kube.AppsV1().Deployments("weir-system").UpdateStatus(ctx, dep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll("Programmed=True once a pod is available", func() bool { return programmed() == "True/Programmed" })
	r, err := gw.GatewayV1().HTTPRoutes("default").Get(ctx, "app", metav1.GetOptions{})
	if err != nil || len(r.Status.Parents) != 1 || !meta.IsStatusConditionTrue(r.Status.Parents[0].Conditions, "Accepted") {
		t.Errorf("route status = %+v (%v)", r.Status, err)
	}
	rpc, err := gw.GatewayV1().GRPCRoutes("default").Get(ctx, "rpc", metav1.GetOptions{})
	if err != nil || len(rpc.Status.Parents) != 1 {
		t.Fatalf("GRPCRoute status = %+v (%v)", rpc.Status, err)
	}
	if c := meta.FindStatusCondition(rpc.Status.Parents[0].Conditions, "Accepted"); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "HostnameConflict" || c.LastTransitionTime.IsZero() {
		t.Errorf("GRPCRoute Accepted = %+v, want False/HostnameConflict with a transition time", c)
	}
	// The fake cluster "has" GRPCRoutes but no TLSRoute CRD (TLSRoutes
	// false): the class and the listener claim only what is watched.
	gc, err := gw.GatewayV1().GatewayClasses().Get(ctx, "weir", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var features []string
	for _, f := range gc.Status.SupportedFeatures {
		features = append(features, string(f.Name))
	}
	if !slices.Contains(features, "GRPCRoute") || slices.ContainsFunc(features, func(f string) bool { return strings.HasPrefix(f, "TLSRoute") }) {
		t.Errorf("GatewayClass features = %v, want GRPCRoute and no TLSRoute feature", features)
	}
	g, _ := gw.GatewayV1().Gateways("default").Get(ctx, "edge", metav1.GetOptions{})
	if len(g.Status.Listeners) == 1 {
		var kinds []string
		for _, k := range g.Status.Listeners[0].SupportedKinds {
			kinds = append(kinds, string(k.Kind))
		}
		if strings.Join(kinds, ",") != "HTTPRoute,GRPCRoute" {
			t.Errorf("listener supportedKinds = %v", kinds)
		}
	}
	if len(g.Status.Listeners) != 1 || g.Status.Listeners[0].AttachedRoutes != 1 {
		t.Errorf("listener status = %+v", g.Status.Listeners)
	}
	for _, cond := range g.Status.Conditions {
		if cond.LastTransitionTime.IsZero() || cond.ObservedGeneration != 1 {
			t.Errorf("condition %s has no transition time or generation: %+v", cond.Type, cond)
		}
	}

	// A data plane that refuses the config: Programmed=False with its
	// error, until it accepts a later push.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	router.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: "gateway/default/edge/pod-1"}, TypeUrl: resourcev3.ListenerType}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: "listener refused for the test"}}); err != nil {
		t.Fatal(err)
	}
	poll("Programmed=False with the data plane's error", func() bool {
		g, _ := gw.GatewayV1().Gateways("default").Get(ctx, "edge", metav1.GetOptions{})
		c := meta.FindStatusCondition(g.Status.Conditions, "Programmed")
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "gateway/default/edge/pod-1 refused the config") &&
			strings.Contains(c.Message, "listener refused for the test")
	})
	// Once the data plane accepts a later push (the server's retry of the
	// refused one, or the new listener's), nothing is refused any more.
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			_ = stream.Send(&discovery.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
		}
	}()
	if _, err := gw.GatewayV1().Gateways("default").Patch(ctx, "edge", types.JSONPatchType,
		[]byte(`[{"op":"add","path":"/spec/listeners/-","value":{"name":"alt","port":8081,"protocol":"HTTP"}}]`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	poll("the refusal to leave the status once a later push is accepted", func() bool {
		g, _ := gw.GatewayV1().Gateways("default").Get(ctx, "edge", metav1.GetOptions{})
		c := meta.FindStatusCondition(g.Status.Conditions, "Programmed")
		return c != nil && c.Status == metav1.ConditionTrue
	})

	if err := gw.GatewayV1().Gateways("default").Delete(ctx, "edge", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll("the data plane to be removed", func() bool {
		_, derr := kube.AppsV1().Deployments("weir-system").Get(ctx, ResourceName("default", "edge"), metav1.GetOptions{})
		_, serr := kube.CoreV1().Services("weir-system").Get(ctx, ResourceName("default", "edge"), metav1.GetOptions{})
		return derr != nil && serr != nil && len(router.Groups()) == 0
	})
}
