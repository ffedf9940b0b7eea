package kingress

import (
	"context"
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	fakenetworkingclient "knative.dev/networking/pkg/client/clientset/versioned/fake"
	"knative.dev/pkg/controller"
	logtesting "knative.dev/pkg/logging/testing"
	pkgreconciler "knative.dev/pkg/reconciler"
	rtesting "knative.dev/pkg/reconciler/testing"

	"github.com/weir-dev/weir/pkg/config"
	"github.com/weir-dev/weir/pkg/ir"
)

// fakeGenerated stands in for the generated reconciler: it counts the
// reconciles that would write status.
type fakeGenerated struct {
	pkgreconciler.LeaderAwareFuncs
	leader bool
	calls  int
	during func() // runs inside Reconcile
}

func (f *fakeGenerated) Reconcile(context.Context, string) error {
	f.calls++
	if f.during != nil {
		f.during()
	}
	return nil
}
func (f *fakeGenerated) IsLeaderFor(types.NamespacedName) bool { return f.leader }

func TestGuardedReconcilerHoldsTheFirstStatus(t *testing.T) {
	const hold = 30 * time.Second
	for _, tc := range []struct {
		name     string
		ing      *v1alpha1.Ingress
		prober   *fakeProber
		notOurs  bool
		after    time.Duration // since the KIngress was first held
		wantHeld bool
	}{
		{name: "probe under way: held, no status", ing: kingress("hello"), prober: &fakeProber{}, wantHeld: true},
		{name: "no gateway pod yet: held", ing: kingress("hello"),
			prober: &fakeProber{err: &NoGatewayPodsError{Service: types.NamespacedName{Namespace: "weir-system", Name: "weir"}}}, wantHeld: true},
		{name: "probed Ready: written", ing: kingress("hello"), prober: &fakeProber{ready: true}},
		{name: "a probe error: written", ing: kingress("hello"), prober: &fakeProber{err: errors.New("refused")}},
		{name: "a KIngress that had a status: written", ing: kingress("hello", withStatus(markReady), observed), prober: &fakeProber{}},
		{name: "the hold is over: written", ing: kingress("hello"), prober: &fakeProber{}, after: hold},
		{name: "another replica leads: observed", ing: kingress("hello"), prober: &fakeProber{}, notOurs: true},
		{name: "a failure to report: written", ing: kingress("hello", func(i *v1alpha1.Ingress) { i.Spec.Rules[0].HTTP.Paths[0].Splits[0].ServiceName = "missing" }),
			prober: &fakeProber{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newListers(tc.ing, service("svc"))
			model := ir.NewModel()
			r := &Reconciler{Listers: l.Listers, Model: model, Syncer: &countingSyncer{}, Prober: tc.prober,
				Tracker: &rtesting.FakeTracker{}, Enqueue: func(types.NamespacedName) {}}
			inner := &fakeGenerated{leader: !tc.notOurs}
			store := config.NewStore(logtesting.TestLogger(t))
			h := newGuardedReconciler(inner, r, l.Ingresses, nil, store, hold)
			start := time.Now()
			h.now = func() time.Time { return start }
			ctx := logtesting.TestContextWithLogger(t)

			if tc.after > 0 {
				// Held once, then the clock moves on.
				if err := h.Reconcile(ctx, "default/hello"); err == nil {
					t.Fatal("the first reconcile was not held")
				}
				h.now = func() time.Time { return start.Add(tc.after) }
			}
			err := h.Reconcile(ctx, "default/hello")
			requeue, wait := controller.IsRequeueKey(err)
			if tc.wantHeld {
				if !requeue || wait <= 0 || wait > hold || inner.calls != 0 {
					t.Errorf("Reconcile = %v (requeue %v after %v), %d status-writing reconciles; want held", err, requeue, wait, inner.calls)
				}
				if _, served := model.Get(ir.ObjectRef{Kind: Kind, Namespace: testNS, Name: "hello"}); !served {
					t.Error("a held KIngress is not served")
				}
				return
			}
			if err != nil || inner.calls != 1 {
				t.Errorf("Reconcile = %v, %d status-writing reconciles; want 1", err, inner.calls)
			}
			if len(h.firstAt) != 0 {
				t.Errorf("%d KIngresses still held after their status was written", len(h.firstAt))
			}
		})
	}
}

// TestGuardedReconcilerSurvivesARuleLosingHTTP: an update that removes a
// rule's http lands after the guard's check, and Knative's SetDefaults
// panics on it inside the generated reconciler; the guard reports it as
// the malformed KIngress it now is. Any other panic goes on.
func TestGuardedReconcilerSurvivesARuleLosingHTTP(t *testing.T) {
	ing := kingress("hello", withStatus(markReady), observed)
	l := newListers(ing, service("svc"))
	net := fakenetworkingclient.NewSimpleClientset(ing)
	r := &Reconciler{Listers: l.Listers, Model: ir.NewModel(), Syncer: &countingSyncer{}, Prober: &fakeProber{ready: true},
		Tracker: &rtesting.FakeTracker{}, Enqueue: func(types.NamespacedName) {}}
	inner := &fakeGenerated{leader: true}
	inner.during = func() {
		broken := ing.DeepCopy()
		broken.Spec.Rules[0].HTTP = nil
		if err := l.ingressIndexer.Update(broken); err != nil {
			t.Fatal(err)
		}
		var nilRule *v1alpha1.HTTPIngressRuleValue
		_ = nilRule.Paths // as SetDefaults does
	}
	h := newGuardedReconciler(inner, r, l.Ingresses, net, config.NewStore(logtesting.TestLogger(t)), 0)
	if err := h.Reconcile(logtesting.TestContextWithLogger(t), "default/hello"); err != nil {
		t.Fatalf("Reconcile = %v", err)
	}
	got, err := net.NetworkingV1alpha1().Ingresses(testNS).Get(context.Background(), "hello", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := got.Status.GetCondition(v1alpha1.IngressConditionLoadBalancerReady); c == nil || c.Reason != "InvalidSpec" {
		t.Errorf("status after the panic: %+v, want LoadBalancerReady False InvalidSpec", got.Status.Conditions)
	}

	inner.during = func() { panic("something else") }
	defer func() {
		if p := recover(); p != "something else" {
			t.Errorf("another panic came out as %v", p)
		}
	}()
	if err := l.ingressIndexer.Update(ing); err != nil {
		t.Fatal(err)
	}
	_ = h.Reconcile(logtesting.TestContextWithLogger(t), "default/hello")
	t.Error("another panic was swallowed")
}
