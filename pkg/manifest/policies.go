package manifest

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/kingress"
	"github.com/weir-dev/weir/pkg/reconciler/policy"
)

// PolicySync keeps the policies' attachments and global limits equal to
// the store's TrafficPolicies.
type PolicySync struct {
	Attacher *policy.Attacher
	// Limits, when set, gets the global limits of every sync, for the
	// rate limit service.
	Limits func([]*ir.GlobalRateLimit)
	Syncer kingress.Syncer

	mu   sync.Mutex
	last *policy.Result
}

// Sync attaches the store's policies, hands their limits on, triggers the
// syncer, and returns their statuses.
func (p *PolicySync) Sync(store *Store) *policy.Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ps []*policy.TrafficPolicy
	for _, o := range store.indexer(policy.Kind).List() {
		ps = append(ps, o.(*policy.TrafficPolicy))
	}
	if len(ps) == 0 && p.last != nil && len(p.last.Statuses) == 0 {
		return p.last // none before, none now: a target came or went
	}
	res := p.Attacher.Set(ps, func(ref ir.ObjectRef) bool {
		kind := ref.Kind
		if kind == "HTTPRoute" || kind == "Ingress" || kind == "Service" || kind == kingress.Kind {
			_, ok, _ := store.indexer(kind).GetByKey(ref.Namespace + "/" + ref.Name)
			return ok
		}
		return false
	})
	if p.Limits != nil {
		p.Limits(res.Limits)
	}
	p.last = &res
	if p.Syncer != nil {
		p.Syncer.Trigger()
	}
	return &res
}

// Last returns the result of the latest Sync, or nil.
func (p *PolicySync) Last() *policy.Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// Status is the status of the TrafficPolicy ns/name after the latest
// Sync.
func (p *PolicySync) Status(ns, name string) (policy.TrafficPolicyStatus, bool) {
	last := p.Last()
	if last == nil {
		return policy.TrafficPolicyStatus{}, false
	}
	st, ok := last.Statuses[types.NamespacedName{Namespace: ns, Name: name}]
	return st, ok
}

// isPolicyInput reports whether a change can change what the policies
// attach: a policy, or a target coming or going.
func isPolicyInput(ch Change) bool {
	switch ch.Key.Kind {
	case policy.Kind:
		return true
	case "HTTPRoute", "Ingress", "Service", kingress.Kind:
		return ch.Old == nil || ch.New == nil
	}
	return false
}
