package kingress

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netlisters "knative.dev/networking/pkg/client/listers/networking/v1alpha1"
)

const testNS = "default"

var created = metav1.NewTime(time.Unix(1_700_000_000, 0))

type ingressOption func(*v1alpha1.Ingress)

// kingress returns a KIngress of Weir's class with one external rule for
// host that sends everything to service:80.
func kingress(name string, opts ...ingressOption) *v1alpha1.Ingress {
	ing := &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: testNS, Generation: 1, CreationTimestamp: created,
			Annotations: map[string]string{networking.IngressClassAnnotationKey: ClassName},
		},
		Spec: v1alpha1.IngressSpec{
			HTTPOption: v1alpha1.HTTPOptionEnabled,
			Rules: []v1alpha1.IngressRule{{
				Hosts:      []string{name + ".example.com"},
				Visibility: v1alpha1.IngressVisibilityExternalIP,
				HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{
					Splits: []v1alpha1.IngressBackendSplit{split("svc", 80, 100)},
				}}},
			}},
		},
	}
	for _, o := range opts {
		o(ing)
	}
	return ing
}

func split(svc string, port, percent int) v1alpha1.IngressBackendSplit {
	return v1alpha1.IngressBackendSplit{
		IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: testNS, ServiceName: svc, ServicePort: intstr.FromInt(port)},
		Percent:        percent,
	}
}

func withClass(c string) ingressOption {
	return func(i *v1alpha1.Ingress) { i.Annotations[networking.IngressClassAnnotationKey] = c }
}

func withCreated(t time.Time) ingressOption {
	return func(i *v1alpha1.Ingress) { i.CreationTimestamp = metav1.NewTime(t) }
}

func withHosts(hosts ...string) ingressOption {
	return func(i *v1alpha1.Ingress) { i.Spec.Rules[0].Hosts = hosts }
}

func withTLS(secretNS, secretName string, hosts ...string) ingressOption {
	return func(i *v1alpha1.Ingress) {
		i.Spec.TLS = append(i.Spec.TLS, v1alpha1.IngressTLS{Hosts: hosts, SecretName: secretName, SecretNamespace: secretNS})
	}
}

func withGeneration(g int64) ingressOption {
	return func(i *v1alpha1.Ingress) { i.Generation = g }
}

func withFinalizer(i *v1alpha1.Ingress) {
	i.Finalizers = append(i.Finalizers, "ingresses.networking.internal.knative.dev")
}

func withDeletion(i *v1alpha1.Ingress) {
	now := metav1.NewTime(created.Add(time.Hour))
	i.DeletionTimestamp = &now
}

// withStatus applies status marks the way the reconciler would.
func withStatus(marks ...func(*v1alpha1.IngressStatus)) ingressOption {
	return func(i *v1alpha1.Ingress) {
		i.Status.InitializeConditions()
		for _, m := range marks {
			m(&i.Status)
		}
	}
}

func markReady(s *v1alpha1.IngressStatus) {
	s.MarkNetworkConfigured()
	s.MarkLoadBalancerReady(
		[]v1alpha1.LoadBalancerIngressStatus{{DomainInternal: "weir.weir-system.svc.cluster.local"}},
		[]v1alpha1.LoadBalancerIngressStatus{{DomainInternal: "weir-internal.weir-system.svc.cluster.local"}})
}

func markFailed(reason, msg string) func(*v1alpha1.IngressStatus) {
	return func(s *v1alpha1.IngressStatus) { s.MarkLoadBalancerFailed(reason, msg) }
}

func service(name string, ports ...corev1.ServicePort) *corev1.Service {
	if len(ports) == 0 {
		ports = []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("user-port")}}
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: ports},
	}
}

type sliceEndpoint struct {
	addr  string
	ready *bool
}

func ready(addr string) sliceEndpoint    { return sliceEndpoint{addr, ptr.To(true)} }
func notReady(addr string) sliceEndpoint { return sliceEndpoint{addr, ptr.To(false)} }

func endpointSlice(name, svc, portName string, port int32, eps ...sliceEndpoint) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(portName), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{e.addr}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready}})
	}
	return s
}

var testCertPEM, testKeyPEM = selfSigned()

func selfSigned() ([]byte, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "example.com"},
		DNSNames: []string{"*.example.com"}, NotBefore: time.Unix(0, 0), NotAfter: time.Unix(4_000_000_000, 0),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

func tlsSecret(ns, name string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: testCertPEM, corev1.TLSPrivateKeyKey: testKeyPEM},
	}
}

// testListers indexes objects the way informers would.
type testListers struct {
	Listers
	Ingresses      netlisters.IngressLister
	ingressIndexer cache.Indexer
	kube           []runtime.Object
	knative        []runtime.Object
}

func newListers(objs ...runtime.Object) *testListers {
	idx := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	svcs, slices, secrets, ings := idx(), idx(), idx(), idx()
	if err := slices.AddIndexers(SliceIndexers); err != nil {
		panic(err)
	}
	l := &testListers{}
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.Service:
			err = svcs.Add(o)
			l.kube = append(l.kube, o)
		case *discoveryv1.EndpointSlice:
			err = slices.Add(o)
			l.kube = append(l.kube, o)
		case *corev1.Secret:
			err = secrets.Add(o)
			l.kube = append(l.kube, o)
		case *v1alpha1.Ingress:
			err = ings.Add(o)
			l.knative = append(l.knative, o)
		default:
			panic("unexpected object type")
		}
		if err != nil {
			panic(err)
		}
	}
	l.Listers = Listers{
		Services:       corelisters.NewServiceLister(svcs),
		EndpointSlices: IndexedSlices(slices),
		Secrets:        corelisters.NewSecretLister(secrets),
	}
	l.Ingresses = netlisters.NewIngressLister(ings)
	l.ingressIndexer = ings
	return l
}
