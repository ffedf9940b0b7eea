package kingress

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netclientset "knative.dev/networking/pkg/client/clientset/versioned"
	netlisters "knative.dev/networking/pkg/client/listers/networking/v1alpha1"
	"knative.dev/pkg/controller"
	pkgreconciler "knative.dev/pkg/reconciler"

	"github.com/weir-dev/weir/pkg/config"
)

// FirstStatusHold is how long a new KIngress's first status may wait for
// its probe (guardedReconciler).
const FirstStatusHold = 30 * time.Second

// leaderAwareReconciler is what Knative's generated reconciler is.
type leaderAwareReconciler interface {
	controller.Reconciler
	pkgreconciler.LeaderAware
	IsLeaderFor(types.NamespacedName) bool
}

// guardedReconciler wraps the generated reconciler.
//
// It keeps a KIngress whose rule has no http away from it: Knative's
// SetDefaults, which the generated reconciler calls first, dereferences
// rule.http, and the CRD's schema does not require it (Knative's webhook
// refuses such a KIngress, but nothing makes a cluster run it). Such a
// KIngress gets its InvalidSpec status here.
//
// And a KIngress that has never had a status gets none while its probe is
// under way: the first status written is then Ready, one write instead of
// two. A new KIngress is usually probed within a second; at a
// controller's start with 10,000 of them, the gateways first connect,
// load the config and become ready, and the interim "not ready yet"
// writes doubled the status writes, which the API server takes at a few
// hundred a second. After hold, or if reconciling finds anything else to
// say (a failure, a conflict), the status is written as usual.
type guardedReconciler struct {
	leaderAwareReconciler
	r       *Reconciler
	lister  netlisters.IngressLister
	client  netclientset.Interface
	store   *config.Store
	hold    time.Duration
	now     func() time.Time
	mu      sync.Mutex
	firstAt map[types.UID]time.Time
}

func newGuardedReconciler(inner leaderAwareReconciler, r *Reconciler, lister netlisters.IngressLister, client netclientset.Interface, store *config.Store, hold time.Duration) *guardedReconciler {
	return &guardedReconciler{leaderAwareReconciler: inner, r: r, lister: lister, client: client, store: store, hold: hold,
		now: time.Now, firstAt: map[types.UID]time.Time{}}
}

// Reconcile implements controller.Reconciler.
func (h *guardedReconciler) Reconcile(ctx context.Context, key string) (err error) {
	// The informers' KIngresses are served first (ServeExisting).
	if err := h.r.WaitForExisting(ctx); err != nil {
		return err
	}
	if ing, leader := h.lookup(key); ing != nil {
		if done, err := h.malformed(ctx, ing, leader); done {
			return err
		}
		if wait, ok := h.holding(ctx, ing, leader); ok {
			return controller.NewRequeueAfter(wait)
		}
	}
	// An update that removed a rule's http may land between the check
	// above and the generated reconciler's SetDefaults.
	defer func() {
		if p := recover(); p != nil {
			if ing, leader := h.lookup(key); ing != nil {
				if done, merr := h.malformed(ctx, ing, leader); done {
					err = merr
					return
				}
			}
			panic(p)
		}
	}()
	return h.leaderAwareReconciler.Reconcile(ctx, key)
}

// lookup returns key's KIngress if it is of Weir's class, and whether this
// replica leads for it.
func (h *guardedReconciler) lookup(key string) (*v1alpha1.Ingress, bool) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil, false
	}
	ing, err := h.lister.Ingresses(ns).Get(name)
	if err != nil || ing.Annotations[networking.IngressClassAnnotationKey] != ClassName {
		return nil, false
	}
	return ing, h.IsLeaderFor(types.NamespacedName{Namespace: ns, Name: name})
}

// hasRuleWithoutHTTP reports whether Knative's SetDefaults would panic on
// ing.
func hasRuleWithoutHTTP(ing *v1alpha1.Ingress) bool {
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			return true
		}
	}
	return false
}

// malformed reconciles ing here if the generated reconciler cannot: it is
// not served (serve refuses it; a version served before keeps serving)
// and, on the leader, its status says why.
func (h *guardedReconciler) malformed(ctx context.Context, ing *v1alpha1.Ingress, leader bool) (bool, error) {
	if !hasRuleWithoutHTTP(ing) {
		return false, nil
	}
	if !leader || ing.DeletionTimestamp != nil {
		return true, nil
	}
	ing = ing.DeepCopy()
	before := ing.Status.DeepCopy()
	_, _ = h.r.reconcile(h.store.ToContext(ctx), ing)
	ing.Status.ObservedGeneration = ing.Generation
	if equality.Semantic.DeepEqual(before, &ing.Status) {
		return true, nil
	}
	_, err := h.client.NetworkingV1alpha1().Ingresses(ing.Namespace).UpdateStatus(ctx, ing, metav1.UpdateOptions{})
	return true, err
}

// holding reconciles ing without writing its status if it may be held,
// and says for how long at most.
func (h *guardedReconciler) holding(ctx context.Context, ing *v1alpha1.Ingress, leader bool) (time.Duration, bool) {
	if !leader || ing.DeletionTimestamp != nil ||
		len(ing.Status.Conditions) > 0 || ing.Status.ObservedGeneration != 0 || hasRuleWithoutHTTP(ing) {
		h.release(ing.UID)
		return 0, false
	}
	now := h.now()
	h.mu.Lock()
	first, seen := h.firstAt[ing.UID]
	if !seen {
		first = now
		h.firstAt[ing.UID] = now
	}
	h.mu.Unlock()
	left := h.hold - now.Sub(first)
	if left <= 0 {
		h.release(ing.UID)
		return 0, false
	}
	// As the generated reconciler would, on a copy whose status is
	// dropped: it serves the KIngress and starts or reads its probe.
	ing = ing.DeepCopy()
	ctx = h.store.ToContext(ctx)
	ing.SetDefaults(ctx)
	if waiting, event := h.r.reconcile(ctx, ing); !waiting || event != nil {
		h.release(ing.UID)
		return 0, false
	}
	return left, true
}

// release forgets uid: its status is being written, or it is gone.
func (h *guardedReconciler) release(uid types.UID) {
	h.mu.Lock()
	delete(h.firstAt, uid)
	h.mu.Unlock()
}

// Forget is called when a KIngress is deleted.
func (h *guardedReconciler) Forget(obj interface{}) {
	if ing, ok := obj.(*v1alpha1.Ingress); ok {
		h.release(ing.UID)
	}
}
