package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"net/netip"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/xdstls"
)

// TestStaticAddressService: a Gateway's static address becomes its
// Service's cluster IP (the Service is recreated to change it), or a load
// balancer's loadBalancerIP, whose status then decides the address; an
// address the apiserver refuses, or two, are not usable.
func TestStaticAddressService(t *testing.T) {
	ctx := context.Background()
	kube := kubefake.NewSimpleClientset()
	// The fake API accepts any cluster IP; refuse one outside the range
	// as the apiserver does.
	kube.PrependReactor("create", "services", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ca := a.(k8stesting.CreateActionImpl)
		svc := ca.GetObject().(*corev1.Service)
		if svc.Spec.ClusterIP == "192.0.2.1" {
			return true, nil, apierrs.NewInvalid(schema.GroupKind{Kind: "Service"}, svc.Name, field.ErrorList{
				field.Invalid(field.NewPath("spec", "clusterIPs"), svc.Spec.ClusterIP, "provided IP is not in the valid range")})
		}
		// The fake API would store a dry run; the apiserver does not.
		if len(ca.GetCreateOptions().DryRun) > 0 {
			return true, svc, nil
		}
		return false, nil, nil
	})
	p := &Provisioner{Kube: kube, Namespace: "weir-system", ServiceType: corev1.ServiceTypeClusterIP}
	gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: "default", UID: "gw-uid"}}
	ports := []listenerPort{{port: 80, container: 10080}}
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}

	svc, err := p.ensureService(ctx, "edge", gw, ports, addrs("10.96.0.10"), "")
	if err != nil || svc.Spec.ClusterIP != "10.96.0.10" {
		t.Fatalf("Service with a static address: %v %+v", err, svc)
	}
	svc, err = p.ensureService(ctx, "edge", gw, ports, addrs("10.96.0.11"), "")
	if err != nil || svc.Spec.ClusterIP != "10.96.0.11" {
		t.Fatalf("a new static address: %v %+v", err, svc)
	}
	if got := serviceAddresses(svc, addrs("10.96.0.11")); len(got) != 1 || got[0].Value != "10.96.0.11" {
		t.Errorf("addresses %+v", got)
	}
	var unusable *addressNotUsable
	if _, err := p.ensureService(ctx, "edge", gw, ports, addrs("192.0.2.1"), ""); !errors.As(err, &unusable) {
		t.Errorf("an address the apiserver refuses: %v, want it not usable", err)
	}
	// The refused address did not cost the Service its current one.
	if cur, err := kube.CoreV1().Services("weir-system").Get(ctx, "edge", metav1.GetOptions{}); err != nil || cur.Spec.ClusterIP != "10.96.0.11" {
		t.Errorf("after a refused address the Service is %+v (%v), want it still at 10.96.0.11", cur, err)
	}
	// A Service weir-controller did not make is never replaced.
	if _, err := kube.CoreV1().Services("weir-system").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "foreign", Namespace: "weir-system"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.30"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ensureService(ctx, "foreign", gw, ports, addrs("10.96.0.31"), ""); err == nil {
		t.Error("a Service of someone else's was taken over")
	}
	if cur, err := kube.CoreV1().Services("weir-system").Get(ctx, "foreign", metav1.GetOptions{}); err != nil || cur.Spec.ClusterIP != "10.96.0.30" {
		t.Errorf("the foreign Service is %+v (%v)", cur, err)
	}

	p.ServiceType = corev1.ServiceTypeLoadBalancer
	lb, err := p.ensureService(ctx, "lb", gw, ports, addrs("203.0.113.5"), "")
	if err != nil || lb.Spec.LoadBalancerIP != "203.0.113.5" {
		t.Fatalf("load balancer with a static address: %v %+v", err, lb)
	}
	lb.Spec.ClusterIP = "10.96.0.20"
	if got := serviceAddresses(lb, addrs("203.0.113.5")); len(got) != 0 {
		t.Errorf("before the load balancer has the address, addresses %+v; want none, not the cluster IP", got)
	}
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.5"}}
	if got := serviceAddresses(lb, addrs("203.0.113.5")); len(got) != 1 || got[0].Value != "203.0.113.5" {
		t.Errorf("addresses %+v, want the load balancer's", got)
	}
}

// TestProvisionParametersAndInfrastructure: a Gateway's GatewayParameters
// set its data plane's replicas, image, resources and Service type, and
// its spec.infrastructure labels and annotations reach the Deployment, its
// pods and the Service, without entering the selector; a key removed from
// the Gateway leaves the Service, while one someone else set stays.
func TestProvisionParametersAndInfrastructure(t *testing.T) {
	ctx := context.Background()
	tmpl := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "weir-gateway", Namespace: "weir-system"},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "gateway", Image: "weir-proxy:dev", Args: []string{"-node-id=pod"}}}}}}}
	kube := kubefake.NewSimpleClientset(tmpl)
	p := &Provisioner{Kube: kube, Namespace: "weir-system", Template: "weir-gateway", ServiceType: corev1.ServiceTypeLoadBalancer}
	gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: "apps"}, Spec: gwv1.GatewaySpec{
		Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}},
		Infrastructure: &gwv1.GatewayInfrastructure{
			Labels:      map[gwv1.LabelKey]gwv1.LabelValue{"team": "shop"},
			Annotations: map[gwv1.AnnotationKey]gwv1.AnnotationValue{"lb.example.com/internal": "true", "lb.example.com/zone": "a"},
		},
	}}
	nn := types.NamespacedName{Namespace: "apps", Name: "edge"}
	resources := corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}}
	res := &Result{
		Fragments: []*ir.Fragment{{Source: ir.ObjectRef{Kind: Kind, Namespace: "apps", Name: "edge"}}},
		Gateways: map[types.NamespacedName]*gwv1.GatewayStatus{nn: {Listeners: []gwv1.ListenerStatus{{Name: "http",
			Conditions: []metav1.Condition{{Type: string(gwv1.ListenerConditionProgrammed), Status: metav1.ConditionTrue}}}}}},
		Parameters: map[types.NamespacedName]Parameters{nn: {Replicas: ptr.To[int32](3), Image: "registry.example.com/weir-proxy:1.2", ServiceType: corev1.ServiceTypeNodePort, Resources: &resources}},
	}
	if _, err := p.Sync(ctx, []*gwv1.Gateway{gw}, res); err != nil {
		t.Fatal(err)
	}
	name := ResourceName("apps", "edge")
	d, err := kube.AppsV1().Deployments("weir-system").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if *d.Spec.Replicas != 3 || c.Image != "registry.example.com/weir-proxy:1.2" || !c.Resources.Limits.Cpu().Equal(resource.MustParse("2")) {
		t.Errorf("Deployment replicas %d, image %s, resources %+v", *d.Spec.Replicas, c.Image, c.Resources)
	}
	if d.Spec.Template.Labels["team"] != "shop" || d.Labels["team"] != "shop" || d.Spec.Template.Annotations["lb.example.com/zone"] != "a" {
		t.Errorf("pod labels %v, annotations %v; Deployment labels %v", d.Spec.Template.Labels, d.Spec.Template.Annotations, d.Labels)
	}
	if _, ok := d.Spec.Selector.MatchLabels["team"]; ok {
		t.Errorf("selector %v holds an infrastructure label", d.Spec.Selector.MatchLabels)
	}
	svc, err := kube.CoreV1().Services("weir-system").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Labels["team"] != "shop" || svc.Annotations["lb.example.com/internal"] != "true" {
		t.Errorf("Service type %s, labels %v, annotations %v", svc.Spec.Type, svc.Labels, svc.Annotations)
	}
	if svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("a NodePort Service's externalTrafficPolicy is %q, want Local (the client's address kept)", svc.Spec.ExternalTrafficPolicy)
	}

	svc.Annotations["cloud.example.com/assigned"] = "by someone else"
	if _, err := kube.CoreV1().Services("weir-system").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	delete(gw.Spec.Infrastructure.Annotations, "lb.example.com/zone")
	delete(gw.Spec.Infrastructure.Labels, "team")
	if _, err := p.Sync(ctx, []*gwv1.Gateway{gw}, res); err != nil {
		t.Fatal(err)
	}
	svc, _ = kube.CoreV1().Services("weir-system").Get(ctx, name, metav1.GetOptions{})
	if _, ok := svc.Annotations["lb.example.com/zone"]; ok {
		t.Errorf("a removed annotation stays: %v", svc.Annotations)
	}
	if _, ok := svc.Labels["team"]; ok {
		t.Errorf("a removed label stays: %v", svc.Labels)
	}
	if svc.Annotations["cloud.example.com/assigned"] != "by someone else" || svc.Annotations["lb.example.com/internal"] != "true" {
		t.Errorf("annotations %v, want someone else's and the remaining one kept", svc.Annotations)
	}
	d, _ = kube.AppsV1().Deployments("weir-system").Get(ctx, name, metav1.GetOptions{})
	if _, ok := d.Spec.Template.Annotations["lb.example.com/zone"]; ok {
		t.Errorf("a removed annotation stays on the pods: %v", d.Spec.Template.Annotations)
	}
}

// TestProvisionXDSIdentity: each Gateway's data plane gets a Secret with
// its own xDS identity, mounted in place of the template's shared one,
// and the Secret goes with the Gateway.
func TestProvisionXDSIdentity(t *testing.T) {
	ctx := context.Background()
	tmpl := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "weir-gateway", Namespace: "weir-system"},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "gateway", Image: "weir-proxy", VolumeMounts: []corev1.VolumeMount{{Name: XDSVolume, MountPath: "/etc/weir/xds"}}}},
			Volumes:    []corev1.Volume{{Name: XDSVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "weir-gateway-xds"}}}},
		}}}}
	kube := kubefake.NewSimpleClientset(tmpl)
	ca, err := xdstls.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := &Provisioner{Kube: kube, Namespace: "weir-system", Template: "weir-gateway", XDS: xdstls.NewAuthority(ca)}
	gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: "apps"}, Spec: gwv1.GatewaySpec{
		Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}}}}
	res := &Result{Fragments: []*ir.Fragment{{Source: ir.ObjectRef{Kind: Kind, Namespace: "apps", Name: "edge"}}}}
	if _, err := p.Sync(ctx, []*gwv1.Gateway{gw}, res); err != nil {
		t.Fatal(err)
	}
	name := ResourceName("apps", "edge")
	s, err := kube.CoreV1().Secrets("weir-system").Get(ctx, name+"-xds", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		t.Fatal(err)
	}
	if group, ok := xdstls.GroupOfCertificate(pair.Leaf); !ok || group != "apps/edge" {
		t.Errorf("the data plane's identity is %q (%v), want apps/edge", group, ok)
	}
	d, err := kube.AppsV1().Deployments("weir-system").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Spec.Template.Spec.Volumes[0].Secret.SecretName; got != name+"-xds" {
		t.Errorf("the data plane mounts Secret %s, want its own", got)
	}
	if _, err := p.Sync(ctx, nil, &Result{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().Secrets("weir-system").Get(ctx, name+"-xds", metav1.GetOptions{}); !apierrs.IsNotFound(err) {
		t.Errorf("the removed Gateway's xDS Secret is still there: %v", err)
	}
}

// TestProvisionGuards: a Gateway whose parameters cannot be read keeps
// its data plane as it is (not removed, not changed); a template that
// would hand a Gateway's pods the shared gateways' identity, or none, is
// refused; a label the template's pods carry is not taken from a
// Gateway's spec.infrastructure, so a Gateway's pods cannot join the
// shared gateways' Services.
func TestProvisionGuards(t *testing.T) {
	ctx := context.Background()
	xdsVolume := corev1.Volume{Name: XDSVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "weir-gateway-xds"}}}
	tmpl := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "weir-gateway", Namespace: "weir-system"},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"tier": "edge"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "gateway", Image: "weir-proxy"}}, Volumes: []corev1.Volume{xdsVolume}},
		}}}
	kube := kubefake.NewSimpleClientset(tmpl)
	ca, err := xdstls.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := &Provisioner{Kube: kube, Namespace: "weir-system", Template: "weir-gateway", XDS: xdstls.NewAuthority(ca), SharedXDSSecret: "weir-gateway-xds"}
	gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: "apps"}, Spec: gwv1.GatewaySpec{
		Listeners:      []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}},
		Infrastructure: &gwv1.GatewayInfrastructure{Labels: map[gwv1.LabelKey]gwv1.LabelValue{"tier": "hijack", "team": "a"}},
	}}
	nn := types.NamespacedName{Namespace: "apps", Name: "edge"}
	frag := []*ir.Fragment{{Source: ir.ObjectRef{Kind: Kind, Namespace: "apps", Name: "edge"}}}
	if _, err := p.Sync(ctx, []*gwv1.Gateway{gw}, &Result{Fragments: frag, Parameters: map[types.NamespacedName]Parameters{nn: {Replicas: ptr.To[int32](2)}}}); err != nil {
		t.Fatal(err)
	}
	name := ResourceName("apps", "edge")
	d, err := kube.AppsV1().Deployments("weir-system").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Spec.Template.Labels["tier"]; ok || d.Spec.Template.Labels["team"] != "a" {
		t.Errorf("pod labels %v: tier (a template pod label, which Services may select by) must not come from the Gateway; team must", d.Spec.Template.Labels)
	}

	// Parameters unreadable: the data plane is kept exactly.
	if _, err := p.Sync(ctx, []*gwv1.Gateway{gw}, &Result{Fragments: frag, KeepDataPlanes: map[types.NamespacedName]bool{nn: true}}); err != nil {
		t.Fatal(err)
	}
	kept, err := kube.AppsV1().Deployments("weir-system").Get(ctx, name, metav1.GetOptions{})
	if err != nil || *kept.Spec.Replicas != 2 {
		t.Errorf("the data plane of a Gateway whose parameters cannot be read: %v, %+v", err, kept)
	}
	if _, err := kube.CoreV1().Secrets("weir-system").Get(ctx, name+"-xds", metav1.GetOptions{}); err != nil {
		t.Errorf("its xDS Secret was removed: %v", err)
	}

	for _, tc := range []struct {
		name    string
		volumes []corev1.Volume
	}{
		{"no xDS volume", nil},
		{"the shared identity in another volume", []corev1.Volume{xdsVolume, {Name: "extra", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "weir-gateway-xds"}}}}},
		{"the shared identity projected", []corev1.Volume{xdsVolume, {Name: "all", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "weir-gateway-xds"}}}}}}}}},
	} {
		bad := tmpl.Spec.Template.DeepCopy()
		bad.Spec.Volumes = tc.volumes
		if err := p.checkXDSVolume(bad, name); err == nil {
			t.Errorf("%s: the template was accepted", tc.name)
		}
	}
}
