package manifest

import (
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"

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
	// Skipped, when set, reports the networking.k8s.io Ingresses the
	// Ingress front end does not serve (another class): their annotation
	// names no target.
	Skipped func(namespace, name string) bool

	mu   sync.Mutex
	last *policy.Result
	// annotated are the Ingresses and KIngresses whose annotation names a
	// policy: read from the store at the first Sync, then kept by Observe.
	annotated map[ir.ObjectRef]string
}

// Observe keeps the annotation index up to date with a change of an
// Ingress or a KIngress, and reports whether it changed.
func (p *PolicySync) Observe(ch Change) bool {
	kind := annotatedKind(ch.Key.Kind)
	if kind == "" {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.annotated == nil {
		return false // the first Sync reads the store
	}
	ref := ir.ObjectRef{Kind: kind, Namespace: ch.Key.Namespace, Name: ch.Key.Name}
	old, had := p.annotated[ref]
	name := annotationOf(ch.New)
	if name == "" {
		delete(p.annotated, ref)
	} else {
		p.annotated[ref] = name
	}
	return had != (name != "") || old != name
}

// annotatedKind is the ir kind of an object that may carry the
// annotation, or "".
func annotatedKind(kind string) string {
	switch kind {
	case "Ingress", kingress.Kind:
		return kind
	}
	return ""
}

func annotationOf(o runtime.Object) string {
	if o == nil {
		return ""
	}
	m, err := meta.Accessor(o)
	if err != nil {
		return ""
	}
	return m.GetAnnotations()[policy.Annotation]
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
	if p.annotated == nil {
		p.annotated = map[ir.ObjectRef]string{}
		for _, kind := range []string{"Ingress", kingress.Kind} {
			for _, o := range store.indexer(kind).List() {
				if name := annotationOf(o.(runtime.Object)); name != "" {
					m, _ := meta.Accessor(o)
					p.annotated[ir.ObjectRef{Kind: kind, Namespace: m.GetNamespace(), Name: m.GetName()}] = name
				}
			}
		}
	}
	if len(ps) == 0 && len(p.annotated) == 0 && p.last != nil && len(p.last.Statuses) == 0 && len(p.last.Unresolved) == 0 {
		return p.last // none before, none now: a target came or went
	}
	annotated := p.annotated
	if p.Skipped != nil {
		annotated = make(map[ir.ObjectRef]string, len(p.annotated))
		for ref, name := range p.annotated {
			if ref.Kind != "Ingress" || !p.Skipped(ref.Namespace, ref.Name) {
				annotated[ref] = name
			}
		}
	}
	res := p.Attacher.Set(ps, func(ref ir.ObjectRef) bool {
		kind := ref.Kind
		if kind == "HTTPRoute" || kind == "Ingress" || kind == "Service" || kind == kingress.Kind {
			_, ok, _ := store.indexer(kind).GetByKey(ref.Namespace + "/" + ref.Name)
			return ok
		}
		return false
	}, annotated)
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

// isPolicyInput reports whether a change can change what the policies
// attach: a policy, or a target coming or going (a changed annotation is
// Observe's to tell).
func isPolicyInput(ch Change) bool {
	switch ch.Key.Kind {
	case policy.Kind:
		return true
	case "Ingress":
		// An annotated Ingress whose class changed comes or goes as a
		// target.
		return ch.Old == nil || ch.New == nil || annotationOf(ch.Old) != "" || annotationOf(ch.New) != ""
	case "HTTPRoute", "Service", kingress.Kind:
		return ch.Old == nil || ch.New == nil
	}
	return false
}
