package gateway

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"github.com/weir-dev/weir/pkg/ir"
)

// StatusProber is kingress.StatusProber, repeated to keep this package
// free of front ends.
type StatusProber interface {
	IsReady(ctx context.Context, ing *v1alpha1.Ingress) (bool, error)
	CancelIngressProbing(obj interface{})
}

// AckReadiness holds a KIngress back until the gateways have acknowledged
// an xDS push of a sync at or after the model revision its fragment was
// set at, and then asks Then, if any (Knative's prober, which probes each
// gateway over HTTP), or calls it ready.
//
// In front of the prober it saves the failed probes, and their backoff,
// of a KIngress probed before any gateway has its config: Knative's prober
// retries at most 50 probes a second in all, which at 10,000 KIngresses
// is minutes. It never makes anything Ready that Then would not.
type AckReadiness struct {
	model  *ir.Model
	syncer *Syncer
	// acked reports whether the gateways have acknowledged every push so
	// far; see xds.Server.Acknowledged and AllAcknowledged.
	acked   func() bool
	then    StatusProber
	enqueue func(types.NamespacedName)
	// enqueueAfter and patience: a KIngress held back for patience is
	// handed to Then anyway (a gateway that never acknowledges must not
	// hold every KIngress back); unused without Then.
	enqueueAfter func(types.NamespacedName, time.Duration)
	patience     time.Duration

	mu sync.Mutex
	// served is the newest model revision the gateways acknowledged.
	served  uint64
	waiting map[types.NamespacedName]waiter
}

type waiter struct {
	revision uint64
	since    time.Time
}

// AckReadinessOptions configure NewAckReadiness.
type AckReadinessOptions struct {
	Acked   func() bool
	Then    StatusProber
	Enqueue func(types.NamespacedName)
	// EnqueueAfter and Patience are needed with Then.
	EnqueueAfter func(types.NamespacedName, time.Duration)
	Patience     time.Duration
}

// NewAckReadiness returns an AckReadiness for the syncer's model. Call
// Check after every sync (Syncer.OnSynced) and every ACK.
func NewAckReadiness(syncer *Syncer, opts AckReadinessOptions) *AckReadiness {
	return &AckReadiness{model: syncer.Model(), syncer: syncer, acked: opts.Acked, then: opts.Then,
		enqueue: opts.Enqueue, enqueueAfter: opts.EnqueueAfter, patience: opts.Patience,
		waiting: map[types.NamespacedName]waiter{}}
}

// IsReady implements StatusProber.
func (a *AckReadiness) IsReady(ctx context.Context, ing *v1alpha1.Ingress) (bool, error) {
	rev, ok := a.model.RevisionOf(ir.ObjectRef{Kind: "KIngress", Namespace: ing.Namespace, Name: ing.Name})
	if !ok {
		return false, nil
	}
	key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
	a.mu.Lock()
	w, held := a.waiting[key]
	switch {
	case rev <= a.served:
		delete(a.waiting, key)
	case a.then != nil && held && w.revision == rev && time.Since(w.since) >= a.patience:
		// Waited long enough: let the prober decide.
	default:
		if !held || w.revision != rev {
			a.waiting[key] = waiter{revision: rev, since: time.Now()}
			if a.then != nil {
				a.enqueueAfter(key, a.patience)
			}
		}
		a.mu.Unlock()
		return false, nil
	}
	a.mu.Unlock()
	if a.then == nil {
		return true, nil
	}
	return a.then.IsReady(ctx, ing)
}

// CancelIngressProbing implements StatusProber.
func (a *AckReadiness) CancelIngressProbing(obj interface{}) {
	if ing, ok := obj.(*v1alpha1.Ingress); ok {
		a.mu.Lock()
		delete(a.waiting, types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name})
		a.mu.Unlock()
	}
	if a.then != nil {
		a.then.CancelIngressProbing(obj)
	}
}

// Check moves served forward if the gateways have acknowledged
// everything, and re-enqueues the KIngresses that may now be ready.
func (a *AckReadiness) Check() {
	// Read before asking: every push of the sync that produced rev was
	// recorded by the time its revision was stored.
	rev := a.syncer.Revision()
	if !a.acked() {
		return
	}
	a.mu.Lock()
	if rev <= a.served {
		a.mu.Unlock()
		return
	}
	a.served = rev
	var ready []types.NamespacedName
	for key, w := range a.waiting {
		if w.revision <= rev {
			ready = append(ready, key)
			delete(a.waiting, key)
		}
	}
	a.mu.Unlock()
	for _, key := range ready {
		a.enqueue(key)
	}
}
