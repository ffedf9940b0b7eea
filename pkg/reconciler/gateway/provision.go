package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weir-dev/weir/pkg/xds"
	"github.com/weir-dev/weir/pkg/xdstls"
)

// Labels on what the Provisioner makes.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	managedBy      = "weir-controller"
	// LabelGateway holds a hash of the Gateway's namespace and name (a
	// label value cannot hold both); AnnotationGateway holds them.
	LabelGateway      = "weir.dev/gateway"
	AnnotationGateway = "weir.dev/gateway"
	// templateHashAnnotation records what a Deployment was made from, so
	// an unchanged one is not written again.
	templateHashAnnotation = "weir.dev/template-hash"
)

const adminPort = 9901

// Provisioner gives every accepted Gateway its own data plane: a
// Deployment made from the shared gateway's pod template, whose node ID
// names the Gateway (xds.GatewayNodePrefix), and a Service with the
// Gateway's listener ports. Both live in Namespace, next to the shared
// gateway, so they can use its ServiceAccount and bootstrap ConfigMap.
type Provisioner struct {
	Kube kubernetes.Interface
	// Namespace holds the data planes.
	Namespace string
	// Template names a Deployment, or else a PodTemplate, in Namespace
	// whose pod template every Gateway's pods are made from.
	Template string
	// ServiceType of each Gateway's Service; LoadBalancer by default.
	ServiceType corev1.ServiceType
	// PrivilegedPortOffset shifts listener ports below 1024 (Options).
	PrivilegedPortOffset uint32
	// XDS issues each data plane's xDS client certificate from its
	// current CA, kept in a Secret that replaces the template's volume
	// named XDSVolume; nil issues none.
	XDS *xdstls.Authority
	// SharedXDSSecret is the shared gateways' identity, which no
	// Gateway's data plane may mount.
	SharedXDSSecret string
}

// XDSVolume is the gateway pod template's volume of its xDS credentials
// (the Secret of xdstls.EnsureGatewaySecret).
const XDSVolume = "xds-tls"

// xdsSecretName is the Secret of a data plane's xDS certificate.
func xdsSecretName(name string) string { return name + "-xds" }

// BuildOptions are the Build options that match this data plane: the
// port offset, and the template's own ports as reserved.
func (p *Provisioner) BuildOptions(ctx context.Context) (Options, error) {
	// 9901 is the admin port of Envoy and weir-proxy, on loopback: a
	// listener on it could not bind.
	o := Options{PrivilegedPortOffset: p.PrivilegedPortOffset, ReservedPorts: []uint32{adminPort}, StaticAddresses: true}
	tmpl, err := p.template(ctx)
	if err != nil {
		return o, err
	}
	for _, c := range tmpl.Spec.Containers {
		for _, cp := range c.Ports {
			if !sharedListenerPorts[cp.Name] {
				o.ReservedPorts = append(o.ReservedPorts, uint32(cp.ContainerPort)) //nolint:gosec // ports
			}
		}
	}
	return o, nil
}

// gatewayHash identifies a Gateway in names and labels: "a-b/c" and
// "a/b-c" must not share a data plane.
func gatewayHash(ns, name string) string {
	sum := sha256.Sum256([]byte(ns + "/" + name))
	return hex.EncodeToString(sum[:5])
}

// ResourceName is the Deployment and Service name of a Gateway's data
// plane: its name, made a valid DNS label and cut to fit, and the hash.
func ResourceName(ns, name string) string {
	readable := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, strings.ToLower(name))
	if len(readable) > 40 {
		readable = readable[:40]
	}
	return "weir-" + strings.Trim(readable, "-") + "-" + gatewayHash(ns, name)
}

// DataPlane is what Sync found of one Gateway's data plane.
type DataPlane struct {
	Addresses []gwv1.GatewayStatusAddress
	// Ready is set once a pod of its Deployment is available.
	Ready bool
	// AddressProblem says why the Gateway's static address is not its
	// Service's, or "".
	AddressProblem string
}

// addressNotUsable is a static address the cluster refused.
type addressNotUsable struct{ msg string }

func (e *addressNotUsable) Error() string { return e.msg }

// Sync makes the Deployments and Services of the Gateways res serves,
// removes those of Gateways it no longer serves, and returns what it found
// of each Gateway's data plane.
func (p *Provisioner) Sync(ctx context.Context, gateways []*gwv1.Gateway, res *Result) (map[types.NamespacedName]DataPlane, error) {
	tmpl, err := p.template(ctx)
	if err != nil {
		return nil, err
	}
	served := map[string]bool{}
	planes := map[types.NamespacedName]DataPlane{}
	var errs []error
	for _, f := range res.Fragments {
		var gw *gwv1.Gateway
		for _, g := range gateways {
			if g.Namespace == f.Source.Namespace && g.Name == f.Source.Name {
				gw = g
			}
		}
		if gw == nil {
			continue
		}
		name := ResourceName(gw.Namespace, gw.Name)
		served[name] = true
		nn := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
		ports := p.ports(gw, res.Gateways[nn])
		if res.KeepDataPlanes[nn] {
			// Its parameters cannot be read: leave it as it is.
			planes[nn] = p.existing(ctx, name)
			continue
		}
		params := res.Parameters[nn]
		if p.XDS != nil {
			if err := p.checkXDSVolume(tmpl, name); err != nil {
				errs = append(errs, err)
				continue
			}
			// Before the Deployment: its pods wait for the Secret.
			if _, err := p.XDS.EnsureGatewaySecret(ctx, p.Kube, p.Namespace, xdsSecretName(name), nn.String(), p.labels(gw), annotations(gw), time.Now()); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		ready, err := p.ensureDeployment(ctx, name, gw, tmpl, ports, params)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		static, _ := StaticAddresses(gw)
		tooMany := ""
		if len(static) > 1 {
			// The Service is kept up to date all the same, at the
			// address it has.
			tooMany = fmt.Sprintf("a Gateway's Service takes one static address; spec.addresses lists %d", len(static))
			static = nil
		}
		svc, err := p.ensureService(ctx, name, gw, ports, static, params.ServiceType)
		var unusable *addressNotUsable
		if errors.As(err, &unusable) {
			planes[nn] = DataPlane{Ready: ready, AddressProblem: unusable.msg}
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		plane := DataPlane{Addresses: serviceAddresses(svc, static), Ready: ready, AddressProblem: tooMany}
		if len(static) > 0 && len(plane.Addresses) > 0 && !slices.ContainsFunc(plane.Addresses, func(a gwv1.GatewayStatusAddress) bool {
			ip, err := netip.ParseAddr(a.Value)
			return err == nil && ip.Unmap() == static[0].Unmap()
		}) {
			plane.AddressProblem = fmt.Sprintf("the Service's load balancer has %s, not %s", plane.Addresses[0].Value, static[0])
		}
		planes[nn] = plane
	}
	errs = append(errs, p.removeUnserved(ctx, served)...)
	return planes, errors.Join(errs...)
}

// existing reports the data plane a Gateway has, without changing it.
func (p *Provisioner) existing(ctx context.Context, name string) DataPlane {
	var plane DataPlane
	if svc, err := p.Kube.CoreV1().Services(p.Namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
		plane.Addresses = serviceAddresses(svc, nil)
	}
	if d, err := p.Kube.AppsV1().Deployments(p.Namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
		plane.Ready = ptr.Deref(d.Spec.Replicas, 1) > 0 && d.Status.AvailableReplicas > 0
	}
	return plane
}

// checkXDSVolume refuses a template whose pods would not get the
// Gateway's own xDS identity: one without the XDSVolume Secret volume, or
// one that mounts the shared gateways' identity some other way (which
// reads every KIngress key).
func (p *Provisioner) checkXDSVolume(tmpl *corev1.PodTemplateSpec, name string) error {
	found := false
	for _, v := range tmpl.Spec.Volumes {
		if v.Name == XDSVolume && v.Secret != nil {
			found = true
			continue
		}
		if v.Secret != nil && v.Secret.SecretName == p.SharedXDSSecret {
			return fmt.Errorf("the gateway template %s/%s mounts the shared gateways' xDS Secret %s in volume %s; only the volume %q may, which each Gateway's data plane gets its own Secret in", p.Namespace, p.Template, p.SharedXDSSecret, v.Name, XDSVolume)
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.Secret != nil && src.Secret.Name == p.SharedXDSSecret {
					return fmt.Errorf("the gateway template %s/%s projects the shared gateways' xDS Secret %s into volume %s; only the volume %q may mount it", p.Namespace, p.Template, p.SharedXDSSecret, v.Name, XDSVolume)
				}
			}
		}
	}
	if !found {
		return fmt.Errorf("the gateway template %s/%s has no Secret volume %q: Gateway %s's data plane would have no xDS identity", p.Namespace, p.Template, XDSVolume, name)
	}
	return nil
}

// template reads the shared gateway's pod template.
func (p *Provisioner) template(ctx context.Context) (*corev1.PodTemplateSpec, error) {
	d, err := p.Kube.AppsV1().Deployments(p.Namespace).Get(ctx, p.Template, metav1.GetOptions{})
	if err == nil {
		return &d.Spec.Template, nil
	}
	if !apierrs.IsNotFound(err) {
		return nil, fmt.Errorf("reading the gateway template Deployment %s/%s: %w", p.Namespace, p.Template, err)
	}
	pt, err := p.Kube.CoreV1().PodTemplates(p.Namespace).Get(ctx, p.Template, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("no Deployment or PodTemplate %s/%s to make Gateway data planes from: %w", p.Namespace, p.Template, err)
	}
	return &pt.Template, nil
}

// listenerPort is one port of a Gateway's data plane.
type listenerPort struct {
	port      int32
	container int32
}

func (p *Provisioner) ports(gw *gwv1.Gateway, st *gwv1.GatewayStatus) []listenerPort {
	opts := Options{PrivilegedPortOffset: p.PrivilegedPortOffset}
	var out []listenerPort
	for _, l := range gw.Spec.Listeners {
		valid := st != nil && slices.ContainsFunc(st.Listeners, func(ls gwv1.ListenerStatus) bool {
			return ls.Name == l.Name && slices.ContainsFunc(ls.Conditions, func(c metav1.Condition) bool {
				return c.Type == string(gwv1.ListenerConditionProgrammed) && c.Status == metav1.ConditionTrue
			})
		})
		if !valid || slices.ContainsFunc(out, func(lp listenerPort) bool { return lp.port == int32(l.Port) }) {
			continue
		}
		out = append(out, listenerPort{port: int32(l.Port), container: int32(opts.ContainerPort(int32(l.Port)))}) //nolint:gosec // ports
	}
	slices.SortFunc(out, func(a, b listenerPort) int { return int(a.port - b.port) })
	return out
}

func (p *Provisioner) labels(gw *gwv1.Gateway) map[string]string {
	return map[string]string{LabelManagedBy: managedBy, LabelGateway: gatewayHash(gw.Namespace, gw.Name)}
}

func annotations(gw *gwv1.Gateway) map[string]string {
	return map[string]string{AnnotationGateway: gw.Namespace + "/" + gw.Name}
}

// Annotations that list the keys of spec.infrastructure propagated to a
// Service, so that a key removed from the Gateway is removed from it
// while keys others (a cloud controller) set are kept.
const (
	propagatedLabelsAnnotation      = "weir.dev/propagated-labels"
	propagatedAnnotationsAnnotation = "weir.dev/propagated-annotations"
)

// withInfrastructure returns ours with the Gateway's spec.infrastructure
// labels (or annotations) added; ours win a clash, since selectors and
// ownership rely on them.
func withInfrastructure[K ~string, V ~string](ours map[string]string, infra map[K]V) map[string]string {
	out := make(map[string]string, len(ours)+len(infra))
	for k, v := range infra {
		out[string(k)] = string(v)
	}
	for k, v := range ours {
		out[k] = v
	}
	return out
}

func infraLabels(gw *gwv1.Gateway) map[gwv1.LabelKey]gwv1.LabelValue {
	if gw.Spec.Infrastructure == nil {
		return nil
	}
	return gw.Spec.Infrastructure.Labels
}

// safeLabels leaves out the keys a Gateway may not set on its data plane
// (Build refuses them with InvalidParameters; this holds for any template
// too): ReservedLabel's, and the template's own pod label keys, which the
// shared gateways' Services select by.
func safeLabels(in map[gwv1.LabelKey]gwv1.LabelValue, template map[string]string) map[gwv1.LabelKey]gwv1.LabelValue {
	out := make(map[gwv1.LabelKey]gwv1.LabelValue, len(in))
	for k, v := range in {
		if _, taken := template[string(k)]; !taken && !ReservedLabel(string(k)) {
			out[k] = v
		}
	}
	return out
}

func infraAnnotations(gw *gwv1.Gateway) map[gwv1.AnnotationKey]gwv1.AnnotationValue {
	if gw.Spec.Infrastructure == nil {
		return nil
	}
	return gw.Spec.Infrastructure.Annotations
}

// sortedKeyList is the keys of m, sorted and comma-separated.
func sortedKeyList[K ~string, V any](m map[K]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, string(k))
	}
	slices.Sort(keys)
	return strings.Join(keys, ",")
}

// ours reports whether an object found under a Gateway's data plane name
// was made for that Gateway, and not, say, by hand.
func ours(m metav1.Object, gw *gwv1.Gateway) bool {
	return m.GetLabels()[LabelManagedBy] == managedBy && m.GetAnnotations()[AnnotationGateway] == gw.Namespace+"/"+gw.Name
}

// sharedListenerPorts are the shared gateway's listener ports, which a
// Gateway's data plane does not serve.
var sharedListenerPorts = map[string]bool{"http": true, "http-internal": true, "https": true, "https-internal": true}

// ensureDeployment makes or updates the Deployment and reports whether a
// pod of its current template is available.
func (p *Provisioner) ensureDeployment(ctx context.Context, name string, gw *gwv1.Gateway, tmpl *corev1.PodTemplateSpec, ports []listenerPort, params Parameters) (bool, error) {
	pod := tmpl.DeepCopy()
	lbls := p.labels(gw)
	pod.Labels = withInfrastructure(lbls, safeLabels(infraLabels(gw), tmpl.Labels))
	for i := range pod.Spec.Volumes {
		// The Gateway's own identity, not the shared gateways'.
		if v := &pod.Spec.Volumes[i]; v.Name == XDSVolume && v.Secret != nil {
			v.Secret.SecretName = xdsSecretName(name)
		}
	}
	pod.Annotations = withInfrastructure(pod.Annotations, infraAnnotations(gw))
	if len(pod.Spec.Containers) > 0 {
		// The first container is the gateway's, as ports below assume.
		if params.Image != "" {
			pod.Spec.Containers[0].Image = params.Image
		}
		if params.Resources != nil {
			pod.Spec.Containers[0].Resources = *params.Resources.DeepCopy()
		}
	}
	replicas := int32(1)
	if params.Replicas != nil {
		replicas = *params.Replicas
	}
	node := xds.GatewayNodePrefix + gw.Namespace + "/" + gw.Name + "/"
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for j, a := range c.Args {
			switch {
			case a == "--service-node" && j+1 < len(c.Args):
				c.Args[j+1] = node + c.Args[j+1]
			case strings.HasPrefix(a, "-node-id="):
				c.Args[j] = "-node-id=" + node + strings.TrimPrefix(a, "-node-id=")
			}
		}
		var keep []corev1.ContainerPort
		for _, cp := range c.Ports {
			if !sharedListenerPorts[cp.Name] {
				keep = append(keep, cp)
			}
		}
		if i == 0 {
			for _, lp := range ports {
				keep = append(keep, corev1.ContainerPort{Name: fmt.Sprintf("l-%d", lp.port), ContainerPort: lp.container, Protocol: corev1.ProtocolTCP})
			}
		}
		c.Ports = keep
	}
	want := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: p.Namespace,
			Labels: withInfrastructure(lbls, safeLabels(infraLabels(gw), tmpl.Labels)), Annotations: withInfrastructure(annotations(gw), infraAnnotations(gw))},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: *pod,
		},
	}
	spec, err := json.Marshal([]any{want.Spec, want.Labels, want.Annotations})
	if err != nil {
		return false, err
	}
	sum := sha256.Sum256(spec)
	want.Annotations[templateHashAnnotation] = hex.EncodeToString(sum[:8])
	deps := p.Kube.AppsV1().Deployments(p.Namespace)
	cur, err := deps.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrs.IsNotFound(err):
		_, err = deps.Create(ctx, want, metav1.CreateOptions{})
		if apierrs.IsAlreadyExists(err) {
			return false, nil // another replica made it; the next sync compares
		}
		return false, err
	case err != nil:
		return false, err
	case !ours(cur, gw):
		return false, fmt.Errorf("Deployment %s/%s exists and was not made by weir-controller for Gateway %s/%s; remove it", p.Namespace, name, gw.Namespace, gw.Name)
	case cur.Annotations[templateHashAnnotation] == want.Annotations[templateHashAnnotation]:
		// Available pods of the current template: the rollout is done.
		// Scaled to zero, nothing serves: never ready.
		return replicas > 0 && cur.Status.ObservedGeneration >= cur.Generation && cur.Status.UpdatedReplicas > 0 && cur.Status.AvailableReplicas > 0, nil
	}
	cur = cur.DeepCopy()
	cur.Annotations, cur.Labels = want.Annotations, want.Labels
	cur.Spec.Template, cur.Spec.Replicas = want.Spec.Template, want.Spec.Replicas
	_, err = deps.Update(ctx, cur, metav1.UpdateOptions{})
	return false, err
}

// ensureService makes the Gateway's Service. A static address becomes a
// load balancer's loadBalancerIP, or else the cluster IP, which the
// Service is recreated to change; an address the apiserver refuses is an
// *addressNotUsable.
func (p *Provisioner) ensureService(ctx context.Context, name string, gw *gwv1.Gateway, ports []listenerPort, static []netip.Addr, typ corev1.ServiceType) (*corev1.Service, error) {
	if typ == "" {
		typ = p.ServiceType
	}
	if typ == "" {
		typ = corev1.ServiceTypeLoadBalancer
	}
	var clusterIP, lbIP string
	if len(static) == 1 {
		if typ == corev1.ServiceTypeLoadBalancer {
			lbIP = static[0].String()
		} else {
			clusterIP = static[0].String()
		}
	}
	var sps []corev1.ServicePort
	for _, lp := range ports {
		sps = append(sps, corev1.ServicePort{Name: fmt.Sprintf("l-%d", lp.port), Port: lp.port, TargetPort: intstr.FromInt32(lp.container), Protocol: corev1.ProtocolTCP})
	}
	if len(sps) == 0 {
		// A Service needs a port; this one leads nowhere.
		sps = []corev1.ServicePort{{Name: "none", Port: 9, TargetPort: intstr.FromInt32(9), Protocol: corev1.ProtocolTCP}}
	}
	svcs := p.Kube.CoreV1().Services(p.Namespace)
	// A node sends external traffic only to its own data plane pods, so
	// the client's address survives (access logs, allow-lists).
	var etp corev1.ServiceExternalTrafficPolicy
	if typ == corev1.ServiceTypeLoadBalancer || typ == corev1.ServiceTypeNodePort {
		etp = corev1.ServiceExternalTrafficPolicyLocal
	}
	desired := func(meta metav1.ObjectMeta) *corev1.Service {
		return &corev1.Service{ObjectMeta: meta,
			Spec: corev1.ServiceSpec{Type: typ, Selector: p.labels(gw), Ports: sps, ClusterIP: clusterIP, LoadBalancerIP: lbIP, ExternalTrafficPolicy: etp}}
	}
	refused := func(err error) error {
		if apierrs.IsInvalid(err) && len(static) > 0 {
			return &addressNotUsable{fmt.Sprintf("the cluster refused %s for the Gateway's Service: %v", static[0], err)}
		}
		return err
	}
	infra := safeLabels(infraLabels(gw), nil)
	lbls, annos := withInfrastructure(p.labels(gw), infra), withInfrastructure(annotations(gw), infraAnnotations(gw))
	annos[propagatedLabelsAnnotation], annos[propagatedAnnotationsAnnotation] = sortedKeyList(infra), sortedKeyList(infraAnnotations(gw))
	create := func() (*corev1.Service, error) {
		svc, err := svcs.Create(ctx, desired(metav1.ObjectMeta{Name: name, Namespace: p.Namespace, Labels: lbls, Annotations: annos}), metav1.CreateOptions{})
		return svc, refused(err)
	}
	cur, err := svcs.Get(ctx, name, metav1.GetOptions{})
	if apierrs.IsNotFound(err) {
		return create()
	}
	if err != nil {
		return nil, err
	}
	if !ours(cur, gw) {
		return nil, fmt.Errorf("Service %s/%s exists and was not made by weir-controller for Gateway %s/%s; remove it", p.Namespace, name, gw.Namespace, gw.Name)
	}
	if clusterIP != "" && cur.Spec.ClusterIP != clusterIP {
		// A cluster IP cannot change in place. The apiserver is asked
		// first (a dry run checks the address), so a refused address
		// leaves the Service serving at the one it has.
		probe := desired(metav1.ObjectMeta{GenerateName: name + "-", Namespace: p.Namespace})
		if _, err := svcs.Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			return nil, refused(err)
		}
		if err := svcs.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &cur.UID}}); err != nil && !apierrs.IsNotFound(err) {
			return nil, err
		}
		return create()
	}
	same := len(cur.Spec.Ports) == len(sps)
	for i := 0; same && i < len(sps); i++ {
		a, b := cur.Spec.Ports[i], sps[i]
		same = a.Name == b.Name && a.Port == b.Port && a.TargetPort == b.TargetPort
	}
	// Labels and annotations: ours and the Gateway's set, those the
	// Gateway no longer has removed, anyone else's kept.
	nextLabels, nextAnnos := maps.Clone(cur.Labels), maps.Clone(cur.Annotations)
	if nextLabels == nil {
		nextLabels = map[string]string{}
	}
	if nextAnnos == nil {
		nextAnnos = map[string]string{}
	}
	for _, k := range strings.Split(cur.Annotations[propagatedLabelsAnnotation], ",") {
		delete(nextLabels, k)
	}
	for _, k := range strings.Split(cur.Annotations[propagatedAnnotationsAnnotation], ",") {
		delete(nextAnnos, k)
	}
	maps.Copy(nextLabels, lbls)
	maps.Copy(nextAnnos, annos)
	if same && cur.Spec.Type == typ && cur.Spec.LoadBalancerIP == lbIP && cur.Spec.ExternalTrafficPolicy == etp && maps.Equal(cur.Labels, nextLabels) && maps.Equal(cur.Annotations, nextAnnos) {
		return cur, nil
	}
	cur = cur.DeepCopy()
	cur.Labels, cur.Annotations = nextLabels, nextAnnos
	for i := range sps {
		// Keep the node ports the cluster assigned.
		for _, old := range cur.Spec.Ports {
			if old.Port == sps[i].Port {
				sps[i].NodePort = old.NodePort
			}
		}
	}
	cur.Spec.Ports, cur.Spec.Type, cur.Spec.LoadBalancerIP, cur.Spec.ExternalTrafficPolicy = sps, typ, lbIP, etp
	svc, err := svcs.Update(ctx, cur, metav1.UpdateOptions{})
	return svc, refused(err)
}

// serviceAddresses are a load balancer's addresses once it has them, and
// the cluster IP until then, unless the load balancer has a static address
// to get.
func serviceAddresses(svc *corev1.Service, static []netip.Addr) []gwv1.GatewayStatusAddress {
	var out []gwv1.GatewayStatusAddress
	for _, in := range svc.Status.LoadBalancer.Ingress {
		switch {
		case in.IP != "":
			out = append(out, gwv1.GatewayStatusAddress{Type: ptr.To(gwv1.IPAddressType), Value: in.IP})
		case in.Hostname != "":
			out = append(out, gwv1.GatewayStatusAddress{Type: ptr.To(gwv1.HostnameAddressType), Value: in.Hostname})
		}
	}
	waitsForLB := len(static) > 0 && svc.Spec.Type == corev1.ServiceTypeLoadBalancer
	if len(out) == 0 && !waitsForLB && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		out = append(out, gwv1.GatewayStatusAddress{Type: ptr.To(gwv1.IPAddressType), Value: svc.Spec.ClusterIP})
	}
	return out
}

// removeUnserved deletes the data planes of Gateways no longer served.
func (p *Provisioner) removeUnserved(ctx context.Context, served map[string]bool) []error {
	var errs []error
	sel := metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + managedBy}
	deps, err := p.Kube.AppsV1().Deployments(p.Namespace).List(ctx, sel)
	if err != nil {
		return []error{err}
	}
	for _, d := range deps.Items {
		if !served[d.Name] {
			if err := p.Kube.AppsV1().Deployments(p.Namespace).Delete(ctx, d.Name, metav1.DeleteOptions{}); err != nil && !apierrs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	secrets, err := p.Kube.CoreV1().Secrets(p.Namespace).List(ctx, sel)
	if err != nil {
		return append(errs, err)
	}
	for _, s := range secrets.Items {
		if name, ok := strings.CutSuffix(s.Name, "-xds"); ok && !served[name] {
			if err := p.Kube.CoreV1().Secrets(p.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	svcs, err := p.Kube.CoreV1().Services(p.Namespace).List(ctx, sel)
	if err != nil {
		return append(errs, err)
	}
	for _, s := range svcs.Items {
		if !served[s.Name] {
			if err := p.Kube.CoreV1().Services(p.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	return errs
}
