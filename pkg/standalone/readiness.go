package standalone

import (
	"context"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"github.com/weir-dev/weir/pkg/gateway"
	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/kingress"
	"github.com/weir-dev/weir/pkg/xds"
)

// appliedReadiness is `weir run`'s kingress.StatusProber. A KIngress is
// ready once the embedded proxy has acknowledged every xDS push of a sync
// that translated the model at or after the revision its fragment was set
// at. It costs one map entry per waiting KIngress, where probing costs an
// HTTP request per host; a NACK keeps everything after it not ready.
type appliedReadiness struct {
	model   *ir.Model
	syncer  *gateway.Syncer
	server  *xds.Server
	node    string
	enqueue func(types.NamespacedName)

	mu sync.Mutex
	// served is the newest model revision the proxy is known to serve.
	served  uint64
	waiting map[types.NamespacedName]uint64
}

var _ kingress.StatusProber = (*appliedReadiness)(nil)

func newAppliedReadiness(model *ir.Model, syncer *gateway.Syncer, server *xds.Server, node string, enqueue func(types.NamespacedName)) *appliedReadiness {
	return &appliedReadiness{model: model, syncer: syncer, server: server, node: node, enqueue: enqueue,
		waiting: map[types.NamespacedName]uint64{}}
}

// IsReady implements kingress.StatusProber.
func (a *appliedReadiness) IsReady(_ context.Context, ing *v1alpha1.Ingress) (bool, error) {
	rev, ok := a.model.RevisionOf(ir.ObjectRef{Kind: kingress.Kind, Namespace: ing.Namespace, Name: ing.Name})
	if !ok {
		return false, nil
	}
	key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
	a.mu.Lock()
	defer a.mu.Unlock()
	if rev <= a.served {
		delete(a.waiting, key)
		return true, nil
	}
	a.waiting[key] = rev
	return false, nil
}

// CancelIngressProbing implements kingress.StatusProber.
func (a *appliedReadiness) CancelIngressProbing(obj interface{}) {
	if ing, ok := obj.(*v1alpha1.Ingress); ok {
		a.mu.Lock()
		delete(a.waiting, types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name})
		a.mu.Unlock()
	}
}

// check moves served forward if the proxy has acknowledged everything, and
// re-enqueues the KIngresses that became ready. It runs after every sync
// and every ACK of the proxy's node.
func (a *appliedReadiness) check() {
	// Read before asking the server: every push of the sync that produced
	// rev was recorded by the time its revision was stored.
	rev := a.syncer.Revision()
	if !a.server.Acknowledged(a.node) {
		return
	}
	a.mu.Lock()
	if rev <= a.served {
		a.mu.Unlock()
		return
	}
	a.served = rev
	var ready []types.NamespacedName
	for key, r := range a.waiting {
		if r <= rev {
			ready = append(ready, key)
			delete(a.waiting, key)
		}
	}
	a.mu.Unlock()
	for _, key := range ready {
		a.enqueue(key)
	}
}
