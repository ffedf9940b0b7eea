package manifest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"github.com/weir-dev/weir/pkg/config"
	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/kingress"
)

const (
	scaleFiles   = 10
	scalePerFile = 1000
)

// doc wraps obj as document i of file, with the sum of its content.
func doc(file string, i int, obj runtime.Object) Document {
	b, err := json.Marshal(obj)
	if err != nil {
		panic(err)
	}
	return Document{File: file, Index: i, Object: obj, Sum: sha256.Sum256(b)}
}

// app is one Knative-shaped KIngress with its Service and EndpointSlice.
func app(n int, port int32, ip string) []runtime.Object {
	ns, name := fmt.Sprintf("ns-%d", n%50), fmt.Sprintf("app-%d", n)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(port)}}}}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	ing := &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.Unix(int64(n), 0),
			Annotations: map[string]string{networking.IngressClassAnnotationKey: kingress.ClassName}},
		Spec: v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
			{Hosts: []string{name + "." + ns + ".example.com"}, Visibility: v1alpha1.IngressVisibilityExternalIP,
				HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{Splits: []v1alpha1.IngressBackendSplit{{
					IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: ns, ServiceName: name, ServicePort: intstr.FromInt(80)}, Percent: 100}}}}}},
			{Hosts: []string{name + "." + ns + ".svc.cluster.local"}, Visibility: v1alpha1.IngressVisibilityClusterLocal,
				HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{Splits: []v1alpha1.IngressBackendSplit{{
					IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: ns, ServiceName: name, ServicePort: intstr.FromInt(80)}, Percent: 100}}}}}},
		}},
	}
	return []runtime.Object{svc, slice, ing}
}

func fileDocs(f int, tweak func(n int, objs []runtime.Object)) []Document {
	name := fmt.Sprintf("apps-%02d.yaml", f)
	var docs []Document
	for n := f * scalePerFile; n < (f+1)*scalePerFile; n++ {
		objs := app(n, 8080, fmt.Sprintf("10.1.%d.%d", n/250, n%250))
		if tweak != nil {
			tweak(n, objs)
		}
		for _, o := range objs {
			docs = append(docs, doc(name, len(docs)+1, o))
		}
	}
	return docs
}

type countingSyncer struct{ triggers int }

func (s *countingSyncer) Trigger() { s.triggers++ }

// enqueued records the distinct keys the controller hands its workqueue.
type enqueued struct{ keys map[string]bool }

func (e *enqueued) observe(k types.NamespacedName) { e.keys[k.String()] = true }

// take returns the keys enqueued since the last call, sorted.
func (e *enqueued) take() []string {
	var keys []string
	for k := range e.keys {
		keys = append(keys, k)
	}
	clear(e.keys)
	slices.Sort(keys)
	return keys
}

// TestControllerReconcilesOnlyWhatChanged is `weir run` at 10,000
// KIngresses (30,000 objects in 10 files): each kind of change enqueues
// exactly the KIngresses it affects.
func TestControllerReconcilesOnlyWhatChanged(t *testing.T) {
	ctx := context.Background()
	store, model, syncer := NewStore(), ir.NewModel(), &countingSyncer{}
	c := NewController(ctx, ControllerOptions{Store: store, Model: model, Syncer: syncer, Config: &config.Config{Weir: config.Default()}})
	queue := &enqueued{keys: map[string]bool{}}
	c.observe = queue.observe
	setFile := func(f int, docs []Document) []Change {
		t.Helper()
		changes, warnings, errs := store.SetFile(ctx, fmt.Sprintf("apps-%02d.yaml", f), docs)
		if len(warnings) > 0 || len(errs) > 0 {
			t.Fatalf("SetFile: warnings %v, errors %v", warnings, errs)
		}
		c.Changed(changes)
		return changes
	}
	// At start the files are loaded and everything reconciled once.
	for f := range scaleFiles {
		changes, _, errs := store.SetFile(ctx, fmt.Sprintf("apps-%02d.yaml", f), fileDocs(f, nil))
		if len(changes) != 3*scalePerFile || len(errs) > 0 {
			t.Fatalf("file %d: %d changes (want %d), errors %v", f, len(changes), 3*scalePerFile, errs)
		}
	}
	if errs := c.ReconcileAll(ctx); len(errs) > 0 {
		t.Fatal(errs)
	}
	if got, want := len(model.Fragments()), scaleFiles*scalePerFile; got != want {
		t.Fatalf("%d fragments served, want %d", got, want)
	}
	if got := c.Reconciles(); got != scaleFiles*scalePerFile {
		t.Errorf("%d reconciles to start, want one per KIngress (%d)", got, scaleFiles*scalePerFile)
	}

	// reconcile processes what is queued, as the workers would, and
	// returns the keys and how many reconciles they cost.
	reconcile := func() ([]string, uint64) {
		t.Helper()
		keys := queue.take()
		before := c.Reconciles()
		for _, k := range keys {
			if err := c.Reconcile(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		return keys, c.Reconciles() - before
	}
	// ReconcileAll queues nothing: Knative's tracker would enqueue each
	// KIngress as it first tracks its references.
	if keys, _ := reconcile(); len(keys) != 0 {
		t.Errorf("ReconcileAll left %d keys queued", len(keys))
	}
	triggers := syncer.triggers

	ref := func(n int) ir.ObjectRef {
		return ir.ObjectRef{Kind: kingress.Kind, Namespace: fmt.Sprintf("ns-%d", n%50), Name: fmt.Sprintf("app-%d", n)}
	}
	key := func(n int) string { return fmt.Sprintf("ns-%d/app-%d", n%50, n) }

	// The same content again: nothing changes, nothing is queued.
	if got := len(setFile(3, fileDocs(3, nil))); got != 0 {
		t.Errorf("re-reading an unchanged file: %d changes, want 0", got)
	}
	if keys, _ := reconcile(); len(keys) != 0 {
		t.Errorf("an unchanged file queued %v", keys)
	}

	// One KIngress gains a host.
	before, _ := model.Get(ref(3456))
	setFile(3, fileDocs(3, func(n int, objs []runtime.Object) {
		if n == 3456 {
			ing := objs[2].(*v1alpha1.Ingress)
			ing.Spec.Rules[0].Hosts = append(ing.Spec.Rules[0].Hosts, "extra.example.com")
		}
	}))
	if keys, n := reconcile(); !slices.Equal(keys, []string{key(3456)}) || n != 1 {
		t.Errorf("one changed KIngress: queued %v (%d reconciles), want [%s]", keys, n, key(3456))
	}
	if after, _ := model.Get(ref(3456)); after == before || !slices.Contains(after.Domains(), "extra.example.com") {
		t.Error("the changed KIngress's fragment does not have its new host")
	}

	// One Service changes its target port; one EndpointSlice moves.
	setFile(5, fileDocs(5, func(n int, objs []runtime.Object) {
		if n == 5001 {
			objs[0].(*corev1.Service).Spec.Ports[0].TargetPort = intstr.FromInt32(9090)
		}
		if n == 5999 {
			objs[1].(*discoveryv1.EndpointSlice).Endpoints[0].Addresses = []string{"10.9.9.9"}
		}
	}))
	if keys, n := reconcile(); !slices.Equal(keys, []string{key(5001), key(5999)}) || n != 2 {
		t.Errorf("a changed Service and EndpointSlice: queued %v (%d reconciles), want [%s %s]", keys, n, key(5001), key(5999))
	}

	// Deleting a file removes exactly its objects.
	triggers = syncer.triggers
	changes := store.RemoveFile("apps-07.yaml")
	c.Changed(changes)
	if len(changes) != 3*scalePerFile {
		t.Errorf("removing a file: %d changes, want %d", len(changes), 3*scalePerFile)
	}
	keys, _ := reconcile()
	if len(keys) != scalePerFile || !slices.Contains(keys, key(7000)) || !slices.Contains(keys, key(7999)) {
		t.Errorf("removing a file queued %d keys, want its %d KIngresses", len(keys), scalePerFile)
	}
	if got, want := len(model.Fragments()), (scaleFiles-1)*scalePerFile; got != want {
		t.Errorf("%d fragments after removing a file, want %d", got, want)
	}
	for n := 7000; n < 8000; n++ {
		if _, ok := model.Get(ref(n)); ok {
			t.Fatalf("KIngress %s of the removed file is still served", key(n))
		}
	}
	if _, ok := model.Get(ref(6999)); !ok {
		t.Error("a KIngress of another file went away with the removed file")
	}
	if syncer.triggers == triggers {
		t.Error("removing a file did not trigger a sync")
	}
}

// TestStoreDuplicatesAcrossFiles: the file first in name order is served,
// the other is reported, and removing the first serves the second.
func TestStoreDuplicatesAcrossFiles(t *testing.T) {
	ctx := context.Background()
	s := NewStore()
	svc := func(port int32) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: port}}}}
	}
	if _, w, _ := s.SetFile(ctx, "b.yaml", []Document{doc("b.yaml", 1, svc(2))}); len(w) != 0 {
		t.Fatalf("warnings for a single definition: %v", w)
	}
	changes, warnings, _ := s.SetFile(ctx, "a.yaml", []Document{doc("a.yaml", 1, svc(1))})
	if len(changes) != 1 || changes[0].New.(*corev1.Service).Spec.Ports[0].Port != 1 {
		t.Errorf("a.yaml's Service does not take over: %+v", changes)
	}
	if len(warnings) != 1 {
		t.Errorf("warnings = %v, want one naming both files", warnings)
	}
	got, _ := s.Listers().Services.Services("default").Get("web")
	if got == nil || got.Spec.Ports[0].Port != 1 {
		t.Errorf("served Service = %+v, want a.yaml's", got)
	}
	changes = s.RemoveFile("a.yaml")
	if len(changes) != 1 || changes[0].New.(*corev1.Service).Spec.Ports[0].Port != 2 {
		t.Errorf("removing a.yaml does not serve b.yaml's Service: %+v", changes)
	}
	if changes := s.RemoveFile("b.yaml"); len(changes) != 1 || changes[0].New != nil {
		t.Errorf("removing b.yaml: %+v, want the Service gone", changes)
	}
	if _, err := s.Listers().Services.Services("default").Get("web"); err == nil {
		t.Error("the Service is still listed after both files went")
	}
}
