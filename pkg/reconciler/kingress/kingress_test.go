package kingress

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgotesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	fakenetworkingclient "knative.dev/networking/pkg/client/injection/client/fake"
	ingressreconciler "knative.dev/networking/pkg/client/injection/reconciler/networking/v1alpha1/ingress"
	fakekubeclient "knative.dev/pkg/client/injection/kube/client/fake"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/logging"
	logtesting "knative.dev/pkg/logging/testing"
	pkgreconciler "knative.dev/pkg/reconciler"
	rtesting "knative.dev/pkg/reconciler/testing"

	"github.com/weir-dev/weir/pkg/config"
	"github.com/weir-dev/weir/pkg/ir"
)

// fakeProber answers IsReady from the row's OtherTestData.
type fakeProber struct {
	ready     bool
	err       error
	mu        sync.Mutex
	cancelled []string
}

func (p *fakeProber) IsReady(context.Context, *v1alpha1.Ingress) (bool, error) { return p.ready, p.err }
func (p *fakeProber) CancelIngressProbing(obj interface{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cancelled = append(p.cancelled, obj.(*v1alpha1.Ingress).Name)
}

type countingSyncer struct{ n int }

func (s *countingSyncer) Trigger() { s.n++ }

// Keys of TableRow.OtherTestData.
const (
	dataProber     = "prober"     // *fakeProber; default ready
	dataReconciler = "reconciler" // *Reconciler, set by the factory
	dataServing    = "serving"    // []*v1alpha1.Ingress already in the model
	dataModel      = "model"      // set by the factory: *ir.Model
	dataSyncer     = "syncer"     // set by the factory: *countingSyncer
)

func factory(t *testing.T, row *rtesting.TableRow) (controller.Reconciler, rtesting.ActionRecorderList, rtesting.EventList) {
	l := newListers(row.Objects...)
	ctx := row.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	ctx = logging.WithLogger(ctx, logtesting.TestLogger(t))
	ctx, kube := fakekubeclient.With(ctx, l.kube...)
	ctx, net := fakenetworkingclient.With(ctx, l.knative...)
	for _, reactor := range row.WithReactors {
		net.PrependReactor("*", "*", reactor)
	}
	recorder := record.NewFakeRecorder(20)
	ctx = controller.WithEventRecorder(ctx, recorder)

	if row.OtherTestData == nil {
		row.OtherTestData = map[string]interface{}{}
	}
	prober, ok := row.OtherTestData[dataProber].(*fakeProber)
	if !ok {
		prober = &fakeProber{ready: true}
		row.OtherTestData[dataProber] = prober
	}
	model := ir.NewModel()
	if serving, ok := row.OtherTestData[dataServing].([]*v1alpha1.Ingress); ok {
		for _, ing := range serving {
			frag, _ := Build(ing, "", l.Listers, SecretPolicy{})
			if _, _, err := model.Set(frag); err != nil {
				t.Fatalf("seeding the model with %s: %v", ing.Name, err)
			}
		}
	}
	syncer := &countingSyncer{}
	row.OtherTestData[dataModel] = model
	row.OtherTestData[dataSyncer] = syncer

	r := &Reconciler{Listers: l.Listers, Model: model, Syncer: syncer, Prober: prober, Tracker: &rtesting.FakeTracker{},
		Enqueue: func(types.NamespacedName) {}}
	row.OtherTestData[dataReconciler] = r
	c := ingressreconciler.NewReconciler(ctx, logging.FromContext(ctx), net, l.Ingresses, recorder, r, ClassName)
	if la, ok := c.(pkgreconciler.LeaderAware); ok {
		if err := la.Promote(pkgreconciler.UniversalBucket(), func(pkgreconciler.Bucket, types.NamespacedName) {}); err != nil {
			t.Fatal(err)
		}
	}
	// As NewController runs it: behind the guard, with no first-status
	// hold (TestGuardedReconcilerHoldsTheFirstStatus covers that).
	guarded := newGuardedReconciler(c.(leaderAwareReconciler), r, l.Ingresses, net, config.NewStore(logging.FromContext(ctx)), 0)
	return guarded, rtesting.ActionRecorderList{net, kube}, rtesting.EventList{Recorder: recorder}
}

func statusUpdate(ing *v1alpha1.Ingress) clientgotesting.UpdateActionImpl {
	return clientgotesting.UpdateActionImpl{Object: ing}
}

func observed(i *v1alpha1.Ingress) { i.Status.ObservedGeneration = i.Generation }

// served asserts what the model holds after the row.
func served(name string, want bool) func(*testing.T, *rtesting.TableRow) {
	return func(t *testing.T, row *rtesting.TableRow) {
		t.Helper()
		model := row.OtherTestData[dataModel].(*ir.Model)
		_, got := model.Get(ir.ObjectRef{Kind: Kind, Namespace: testNS, Name: name})
		if got != want {
			t.Errorf("model serves %s = %v, want %v", name, got, want)
		}
	}
}

func triggered(want bool) func(*testing.T, *rtesting.TableRow) {
	return func(t *testing.T, row *rtesting.TableRow) {
		t.Helper()
		if got := row.OtherTestData[dataSyncer].(*countingSyncer).n > 0; got != want {
			t.Errorf("syncer triggered = %v, want %v", got, want)
		}
	}
}

func TestReconcile(t *testing.T) {
	older := created.Add(-time.Hour)
	table := rtesting.TableTest{{
		Name: "bad workqueue key",
		Key:  "too/many/parts",
	}, {
		Name: "key not found",
		Key:  "default/missing",
	}, {
		// One write: no finalizer patch and no Event, only the status.
		Name:              "first reconcile becomes ready with a status update only",
		Objects:           []runtime.Object{kingress("hello"), service("svc")},
		Key:               "default/hello",
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(kingress("hello", withStatus(markReady), observed))},
		PostConditions:    []func(*testing.T, *rtesting.TableRow){served("hello", true), triggered(true)},
	}, {
		Name:    "gateways not yet serving the new hash",
		Objects: []runtime.Object{kingress("hello", withFinalizer), service("svc")},
		Key:     "default/hello",
		OtherTestData: map[string]interface{}{
			dataProber: &fakeProber{ready: false},
		},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(kingress("hello", withFinalizer, observed,
			withStatus(func(s *v1alpha1.IngressStatus) { s.MarkNetworkConfigured(); s.MarkLoadBalancerNotReady() })))},
		PostConditions: []func(*testing.T, *rtesting.TableRow){served("hello", true)},
	}, {
		// Knative's webhook would refuse it, but the CRD's schema does not
		// require http, and Knative's SetDefaults dereferences it.
		Name:    "a rule without http is reported, not a panic",
		Objects: []runtime.Object{kingress("hello", withFinalizer, func(i *v1alpha1.Ingress) { i.Spec.Rules[0].HTTP = nil }), service("svc")},
		Key:     "default/hello",
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(kingress("hello", withFinalizer, observed,
			func(i *v1alpha1.Ingress) { i.Spec.Rules[0].HTTP = nil },
			withStatus(func(s *v1alpha1.IngressStatus) {
				s.MarkLoadBalancerFailed("InvalidSpec", "spec.rules[0].http is missing; every rule needs http.paths")
			})))},
		PostConditions: []func(*testing.T, *rtesting.TableRow){served("hello", false)},
	}, {
		Name:           "status already right: no update",
		Objects:        []runtime.Object{kingress("hello", withFinalizer, withStatus(markReady), observed), service("svc")},
		Key:            "default/hello",
		PostConditions: []func(*testing.T, *rtesting.TableRow){served("hello", true)},
	}, {
		Name:    "a new leader keeps a generation that was Ready while it probes again",
		Objects: []runtime.Object{kingress("hello", withFinalizer, withStatus(markReady), observed), service("svc")},
		Key:     "default/hello",
		OtherTestData: map[string]interface{}{
			dataProber: &fakeProber{ready: false},
		},
		PostConditions: []func(*testing.T, *rtesting.TableRow){served("hello", true)},
	}, {
		Name:    "a new generation is not Ready until probed",
		Objects: []runtime.Object{kingress("hello", withFinalizer, withStatus(markReady), observed, withGeneration(2)), service("svc")},
		Key:     "default/hello",
		OtherTestData: map[string]interface{}{
			dataProber: &fakeProber{ready: false},
		},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(kingress("hello", withFinalizer, withGeneration(2), observed,
			withStatus(markReady, func(s *v1alpha1.IngressStatus) { s.MarkLoadBalancerNotReady() })))},
	}, {
		Name:           "another ingress class is not touched",
		Objects:        []runtime.Object{kingress("hello", withClass("kourier.ingress.networking.knative.dev")), service("svc")},
		Key:            "default/hello",
		PostConditions: []func(*testing.T, *rtesting.TableRow){served("hello", false), triggered(false)},
	}, {
		Name:    "missing service fails the load balancer and still serves",
		Objects: []runtime.Object{kingress("hello", withFinalizer)},
		Key:     "default/hello",
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(kingress("hello", withFinalizer, observed, withStatus(markFailed(
			"ServiceNotFound", "spec.rules[0].http.paths[0].splits[0] refers to Service default/svc, which does not exist; create it or fix serviceName"))))},
		PostConditions: []func(*testing.T, *rtesting.TableRow){served("hello", true)},
	}, {
		Name:    "missing TLS secret",
		Objects: []runtime.Object{kingress("hello", withFinalizer, withTLS("", "nope", "hello.example.com")), service("svc")},
		Key:     "default/hello",
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(kingress("hello", withFinalizer, withTLS("", "nope", "hello.example.com"), observed,
			withStatus(markFailed("SecretNotFound", "spec.tls[0].secretName: Secret default/nope does not exist"))))},
		PostConditions: []func(*testing.T, *rtesting.TableRow){served("hello", true)},
	}, {
		Name:    "cross-namespace TLS secret is not allowed",
		Objects: []runtime.Object{kingress("hello", withFinalizer, withTLS("other", "tls", "hello.example.com")), service("svc"), tlsSecret("other", "tls")},
		Key:     "default/hello",
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(kingress("hello", withFinalizer, withTLS("other", "tls", "hello.example.com"), observed,
			withStatus(markFailed("SecretNotAllowed", `spec.tls[0].secretNamespace "other": a KIngress in "default" may only use Secrets in its own namespace or in a namespace listed in config-weir's tls-secret-namespaces`))))},
	}, {
		Name:    "valid TLS secret",
		Objects: []runtime.Object{kingress("hello", withFinalizer, withTLS("", "tls", "hello.example.com")), service("svc"), tlsSecret(testNS, "tls")},
		Key:     "default/hello",
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(kingress("hello", withFinalizer, withTLS("", "tls", "hello.example.com"), observed,
			withStatus(markReady)))},
		PostConditions: []func(*testing.T, *rtesting.TableRow){func(t *testing.T, row *rtesting.TableRow) {
			f, _ := row.OtherTestData[dataModel].(*ir.Model).Get(ir.ObjectRef{Kind: Kind, Namespace: testNS, Name: "hello"})
			if f == nil || len(f.Certificates) != 1 {
				t.Errorf("served fragment has no certificate: %+v", f)
			}
		}},
	}, {
		Name: "domain conflict: the younger KIngress fails, the older keeps serving",
		Objects: []runtime.Object{
			kingress("old", withFinalizer, withHosts("shared.example.com"), withCreated(older)),
			kingress("young", withFinalizer, withHosts("shared.example.com")),
			service("svc"),
		},
		Key: "default/young",
		OtherTestData: map[string]interface{}{
			dataServing: []*v1alpha1.Ingress{kingress("old", withHosts("shared.example.com"), withCreated(older))},
		},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(kingress("young", withFinalizer, withHosts("shared.example.com"), observed,
			withStatus(markFailed("DomainConflict", `domain "shared.example.com" is already served by KIngress/default/old; remove it from one of them`))))},
		PostConditions: []func(*testing.T, *rtesting.TableRow){served("old", true), served("young", false)},
	}, {
		// The informer's delete handler stops serving it (Forget); the
		// reconciler writes nothing, and leaves a legacy finalizer to
		// legacyFinalizerRemover.
		Name:    "a KIngress being deleted is not written to",
		Objects: []runtime.Object{kingress("hello", withFinalizer, withDeletion), service("svc")},
		Key:     "default/hello",
		OtherTestData: map[string]interface{}{
			dataServing: []*v1alpha1.Ingress{kingress("hello")},
		},
		PostConditions: []func(*testing.T, *rtesting.TableRow){served("hello", true)},
	}, {
		// An error would go through the workqueue's shared retry limit
		// and write an Event per KIngress; a gateway pod becoming ready
		// enqueues the KIngress instead.
		Name:    "no ready gateway pod is a wait, not an error",
		Objects: []runtime.Object{kingress("hello", withFinalizer), service("svc")},
		Key:     "default/hello",
		OtherTestData: map[string]interface{}{
			dataProber: &fakeProber{err: fmt.Errorf("listing: %w", &NoGatewayPodsError{Service: types.NamespacedName{Namespace: "weir-system", Name: "weir"}})},
		},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(kingress("hello", withFinalizer, observed,
			withStatus(func(s *v1alpha1.IngressStatus) {
				s.MarkNetworkConfigured()
				s.MarkLoadBalancerNotReady()
				s.MarkIngressNotReady("NoGatewayPods", `no ready gateway pods behind Service weir-system/weir (port "http"); check that the gateway Deployment is running and ready`)
			})))},
		PostConditions: []func(*testing.T, *rtesting.TableRow){func(t *testing.T, row *rtesting.TableRow) {
			r := row.OtherTestData[dataReconciler].(*Reconciler)
			var enqueued []types.NamespacedName
			r.GatewayWaiters.GatewaysChanged(func(k types.NamespacedName) { enqueued = append(enqueued, k) })
			if want := []types.NamespacedName{{Namespace: "default", Name: "hello"}}; !slices.Equal(enqueued, want) {
				t.Errorf("a gateway change enqueued %v, want %v", enqueued, want)
			}
			enqueued = nil
			r.GatewayWaiters.GatewaysChanged(func(k types.NamespacedName) { enqueued = append(enqueued, k) })
			if len(enqueued) != 0 {
				t.Errorf("a second gateway change enqueued %v again", enqueued)
			}
		}},
	}, {
		Name:    "prober error is retried",
		Objects: []runtime.Object{kingress("hello", withFinalizer), service("svc")},
		Key:     "default/hello",
		OtherTestData: map[string]interface{}{
			dataProber: &fakeProber{err: errors.New("connection refused")},
		},
		WantErr: true,
		WantEvents: []string{rtesting.Eventf("Warning", "InternalError",
			"probing the gateways for default/hello: connection refused")},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(kingress("hello", withFinalizer, observed,
			withStatus(func(s *v1alpha1.IngressStatus) { s.MarkNetworkConfigured() })))},
	}, {
		Name:    "status update failure is reported",
		Objects: []runtime.Object{kingress("hello", withFinalizer), service("svc")},
		Key:     "default/hello",
		WithReactors: []clientgotesting.ReactionFunc{
			rtesting.InduceFailure("update", "ingresses"),
		},
		WantErr:           true,
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(kingress("hello", withFinalizer, withStatus(markReady), observed))},
		WantEvents: []string{rtesting.Eventf("Warning", "UpdateFailed",
			fmt.Sprintf("Failed to update status for %q: inducing failure for update ingresses", "hello"))},
	}}
	table.Test(t, factory)
}

func TestReportRejectedRecordsEventsOnKIngresses(t *testing.T) {
	l := newListers(kingress("hello"))
	rec := record.NewFakeRecorder(5)
	r := &Reconciler{Ingresses: l.Ingresses, Recorder: rec}
	r.ReportRejected([]ir.ObjectRef{
		{Kind: Kind, Namespace: testNS, Name: "hello"},
		{Kind: Kind, Namespace: testNS, Name: "gone"},
		{Kind: "HTTPRoute", Namespace: testNS, Name: "hello"},
	}, "unknown field x")
	if len(rec.Events) != 1 {
		t.Fatalf("events = %d, want 1", len(rec.Events))
	}
	if e := <-rec.Events; e != "Warning GatewayRejectedConfig A gateway rejected the Envoy config built from this KIngress, and keeps serving its previous config: unknown field x" {
		t.Errorf("event = %q", e)
	}
}

func TestServeExistingFillsTheModelBeforeTheWorkqueue(t *testing.T) {
	// As stored by an older API server: no defaults (the reconciler sets
	// them, and the probe hash covers them).
	undefaulted := func(i *v1alpha1.Ingress) {
		i.Spec.HTTPOption = ""
		i.Spec.Rules[0].Visibility = ""
	}
	l := newListers(kingress("hello", undefaulted), kingress("theirs", withClass("kourier.ingress.networking.knative.dev")),
		kingress("leaving", withDeletion), service("svc"))
	syncer := &countingSyncer{}
	model := ir.NewModel()
	r := &Reconciler{Listers: l.Listers, Model: model, Syncer: syncer, Prober: &fakeProber{ready: true},
		Tracker: &rtesting.FakeTracker{}, Ingresses: l.Ingresses, Enqueue: func(types.NamespacedName) {}}
	ctx := logtesting.TestContextWithLogger(t)

	synced := false
	r.synced = func() bool { return synced }
	if n, ok := r.ServeExisting(ctx); ok || n != 0 {
		t.Fatalf("before the informers synced: ServeExisting = %d, %v; want 0, false", n, ok)
	}
	r.primed = make(chan struct{})
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := r.WaitForExisting(cancelled); err == nil {
		t.Fatal("a reconcile did not wait for ServeExisting")
	}
	synced = true
	if n, ok := r.ServeExisting(ctx); !ok || n != 1 {
		t.Fatalf("ServeExisting = %d, %v; want 1, true (only hello is Weir's and not being deleted)", n, ok)
	}
	if err := r.WaitForExisting(cancelled); err != nil {
		t.Errorf("after ServeExisting, reconciles still wait: %v", err)
	}
	for name, want := range map[string]bool{"hello": true, "theirs": false, "leaving": false} {
		if _, got := model.Get(ir.ObjectRef{Kind: Kind, Namespace: testNS, Name: name}); got != want {
			t.Errorf("model serves %s = %v, want %v", name, got, want)
		}
	}

	// The first reconcile finds the fragment it would build, so the
	// gateways get no second config for it.
	triggers := syncer.n
	ing := kingress("hello", undefaulted)
	ing.SetDefaults(ctx)
	if err := r.ReconcileKind(ctx, ing); err != nil {
		t.Fatal(err)
	}
	if syncer.n != triggers {
		t.Errorf("the first reconcile after ServeExisting changed the model (%d triggers, want %d)", syncer.n, triggers)
	}
}
