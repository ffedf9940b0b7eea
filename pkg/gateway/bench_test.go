package gateway

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/kingress"
	"github.com/weir-dev/weir/pkg/translate"
	"github.com/weir-dev/weir/pkg/xds"
)

const benchIngresses = 10_000

// benchWorld is 10,000 Knative-shaped KIngresses, each with 3 hosts and a
// 2-way split over two revision Services with one endpoint each.
type benchWorld struct {
	listers   kingress.Listers
	ingresses []*v1alpha1.Ingress
}

func newBenchWorld(b *testing.B) *benchWorld {
	b.Helper()
	idx := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	svcs, slices := idx(), idx()
	must(b, slices.AddIndexers(kingress.SliceIndexers))
	w := &benchWorld{}
	for i := 0; i < benchIngresses; i++ {
		ns := fmt.Sprintf("ns-%d", i%100)
		name := fmt.Sprintf("svc-%d", i)
		var splits []v1alpha1.IngressBackendSplit
		for r, pct := range []int{90, 10} {
			rev := fmt.Sprintf("%s-%05d", name, r+1)
			must(b, svcs.Add(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: rev, Namespace: ns},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(8012)}}}}))
			must(b, slices.Add(&discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Name: rev + "-x", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: rev}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8012)}},
				Endpoints: []discoveryv1.Endpoint{{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", i/65536, (i/256)%256, i%256)},
					Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
			}))
			splits = append(splits, v1alpha1.IngressBackendSplit{
				IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: ns, ServiceName: rev, ServicePort: intstr.FromInt(80)},
				Percent:        pct,
				AppendHeaders:  map[string]string{"Knative-Serving-Revision": rev},
			})
		}
		w.ingresses = append(w.ingresses, &v1alpha1.Ingress{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, CreationTimestamp: metav1.Unix(int64(i), 0)},
			Spec: v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{{
				Hosts:      []string{name + "." + ns + ".example.com", name + "-canary." + ns + ".example.com", name + "." + ns + ".svc.cluster.local"},
				Visibility: v1alpha1.IngressVisibilityExternalIP,
				HTTP:       &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{Splits: splits}}},
			}}},
		})
	}
	w.listers = kingress.Listers{
		Services:       corelisters.NewServiceLister(svcs),
		EndpointSlices: kingress.IndexedSlices(slices),
		Secrets:        corelisters.NewSecretLister(idx()),
	}
	return w
}

func must(b *testing.B, err error) {
	if err != nil {
		b.Fatal(err)
	}
}

// load reconciles every KIngress into a fresh model and syncs it.
func (w *benchWorld) load(b *testing.B) (*Syncer, *xds.Server) {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	server := xds.NewServer(ctx, xds.Options{PointerIdentity: true}) // as weir-controller runs it
	s := NewSyncer(ir.NewModel(), translate.DefaultOptions(), server, zap.NewNop().Sugar())
	rec := w.reconciler(s)
	for _, ing := range w.ingresses {
		ing = ing.DeepCopy()
		must(b, rec.ReconcileKind(ctx, ing))
		if !ing.IsReady() {
			b.Fatalf("%s is not Ready: %+v", ing.Name, ing.Status)
		}
	}
	must(b, s.Sync())
	return s, server
}

// reconciler is the controller's KIngress reconciler over the bench's
// listers: the probe hash (Knative's ComputeHash), Build and the model, as
// in production. Its prober says Ready at once: probing is measured by
// make bench-scale, which runs the real one.
func (w *benchWorld) reconciler(s *Syncer) *kingress.Reconciler {
	return &kingress.Reconciler{Listers: w.listers, Model: s.Model(), Syncer: s, Prober: readyProber{},
		Enqueue: func(types.NamespacedName) {}}
}

type readyProber struct{}

func (readyProber) IsReady(context.Context, *v1alpha1.Ingress) (bool, error) { return true, nil }
func (readyProber) CancelIngressProbing(any)                                 {}

// BenchmarkColdStart10k: reconcile, translate and load into the xDS cache
// 10,000 KIngresses from nothing, as a restarted controller does.
func BenchmarkColdStart10k(b *testing.B) {
	w := newBenchWorld(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.load(b)
	}
}

// BenchmarkUpdateToCache10k: with 10,000 KIngresses served, the time from
// one KIngress's new spec (a split change, as `kn service update --traffic`
// makes) to its resources being in the xDS cache, ready to push. It also
// reports the heap the control plane holds for 10,000 KIngresses.
func BenchmarkUpdateToCache10k(b *testing.B) {
	w := newBenchWorld(b)
	s, _ := w.load(b)
	rec := w.reconciler(s)
	ctx := context.Background()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap := float64(ms.HeapInuse) / (1 << 20)

	b.ReportAllocs()
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		ing := w.ingresses[i%benchIngresses].DeepCopy()
		splits := ing.Spec.Rules[0].HTTP.Paths[0].Splits
		splits[0].Percent, splits[1].Percent = 50+i%40, 50-i%40
		start := time.Now()
		must(b, rec.ReconcileKind(ctx, ing))
		must(b, s.Sync())
		total += time.Since(start)
	}
	b.ReportMetric(heap, "MiB-heap-10k")
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs-update-to-cache")
}
