package gateway

import (
	"fmt"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/kingress"
	"github.com/weir-dev/weir/pkg/translate"
)

const (
	benchGateways = 10
	benchRoutes   = 5000
)

// benchWorld is 10 Gateways with one HTTP listener each and 5,000
// HTTPRoutes, 500 per Gateway, each with its own host, two path rules, a
// header modifier and a 90/10 split over two Services with two endpoints.
func benchWorld(b *testing.B) (Objects, Listers) {
	b.Helper()
	idx := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	svcs, slices, secrets := idx(), idx(), idx()
	if err := slices.AddIndexers(kingress.SliceIndexers); err != nil {
		b.Fatal(err)
	}
	objs := Objects{NamespaceLabels: map[string]labels.Set{}}
	objs.GatewayClasses = []*gwv1.GatewayClass{{ObjectMeta: metav1.ObjectMeta{Name: "weir"}, Spec: gwv1.GatewayClassSpec{ControllerName: ControllerName}}}
	for g := 0; g < benchGateways; g++ {
		objs.Gateways = append(objs.Gateways, &gwv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("gw%d", g), Namespace: "infra"},
			Spec: gwv1.GatewaySpec{GatewayClassName: "weir", Listeners: []gwv1.Listener{{
				Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType,
				AllowedRoutes: &gwv1.AllowedRoutes{Namespaces: &gwv1.RouteNamespaces{From: ptr.To(gwv1.NamespacesFromAll)}},
			}}},
		})
	}
	for i := 0; i < benchRoutes; i++ {
		ns := fmt.Sprintf("team%d", i%50)
		for v := 1; v <= 2; v++ {
			name := fmt.Sprintf("app%d-v%d", i, v)
			_ = svcs.Add(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}})
			_ = slices.Add(&discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
				Endpoints: []discoveryv1.Endpoint{
					{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", v, i/250, i%250)}},
					{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", v+10, i/250, i%250)}},
				},
			})
		}
		objs.HTTPRoutes = append(objs.HTTPRoutes, benchRoute(i, ns, 90))
	}
	return objs, Listers{Services: corelisters.NewServiceLister(svcs), EndpointSlices: kingress.IndexedSlices(slices), Secrets: corelisters.NewSecretLister(secrets)}
}

func benchRoute(i int, ns string, weight int32) *gwv1.HTTPRoute {
	backend := func(v int, w int32) gwv1.HTTPBackendRef {
		return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{Weight: ptr.To(w), BackendObjectReference: gwv1.BackendObjectReference{
			Name: gwv1.ObjectName(fmt.Sprintf("app%d-v%d", i, v)), Port: ptr.To[gwv1.PortNumber](80),
		}}}
	}
	return &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app%d", i), Namespace: ns},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{
				Name: gwv1.ObjectName(fmt.Sprintf("gw%d", i%benchGateways)), Namespace: ptr.To[gwv1.Namespace]("infra"),
			}}},
			Hostnames: []gwv1.Hostname{gwv1.Hostname(fmt.Sprintf("app%d.example.com", i))},
			Rules: []gwv1.HTTPRouteRule{{
				Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchPathPrefix), Value: ptr.To("/api")}}},
				Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gwv1.HTTPHeaderFilter{
					Set: []gwv1.HTTPHeader{{Name: "x-app", Value: fmt.Sprintf("app%d", i)}},
				}}},
				BackendRefs: []gwv1.HTTPBackendRef{backend(1, weight), backend(2, 100-weight)},
			}, {
				BackendRefs: []gwv1.HTTPBackendRef{backend(1, 1)},
			}},
		},
	}
}

// translateAll translates each Gateway's fragment with its own translator,
// as weir-controller does.
func translateAll(b *testing.B, ts map[ir.ObjectRef]*gatewayTranslator, res *Result) (translated int) {
	for _, f := range res.Fragments {
		t := ts[f.Source]
		if t == nil {
			t = newGatewayTranslator(translate.DefaultOptions())
			ts[f.Source] = t
		}
		_, changed, err := t.translate(f)
		if err != nil {
			b.Fatal(err)
		}
		if changed {
			translated++
		}
	}
	return translated
}

// BenchmarkGatewayAPIColdTranslate5k: Build and translate 5,000 HTTPRoutes
// on 10 Gateways from nothing.
func BenchmarkGatewayAPIColdTranslate5k(b *testing.B) {
	objs, l := benchWorld(b)
	b.ReportAllocs()
	var keep map[ir.ObjectRef]*gatewayTranslator
	for b.Loop() {
		res := Build(objs, l, Options{})
		if len(res.Fragments) != benchGateways {
			b.Fatalf("%d fragments", len(res.Fragments))
		}
		keep = map[ir.ObjectRef]*gatewayTranslator{}
		translateAll(b, keep, res)
	}
	// What stays: the objects (as informers hold them), the fragments
	// and the translators' memo and served resources.
	b.StopTimer()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "live-heap-MiB")
	runtime.KeepAlive(keep)
	runtime.KeepAlive(objs)
}

// BenchmarkGatewayAPIOneRouteChange5k: one HTTPRoute's split changes; the
// controller rebuilds every Gateway and translates them, and only the
// changed Gateway's fragment differs.
func BenchmarkGatewayAPIOneRouteChange5k(b *testing.B) {
	objs, l := benchWorld(b)
	ts := map[ir.ObjectRef]*gatewayTranslator{}
	translateAll(b, ts, Build(objs, l, Options{}))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		objs.HTTPRoutes[7] = benchRoute(7, "team7", int32(1+i%98))
		if n := translateAll(b, ts, Build(objs, l, Options{})); n != 1 {
			b.Fatalf("%d Gateways translated, want the changed one", n)
		}
	}
}
