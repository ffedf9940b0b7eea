package policy

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/weir-dev/weir/pkg/ir"
)

// Condition types and reasons of a policy's status, Gateway API's.
const (
	ConditionAccepted      = "Accepted"
	ReasonAccepted         = "Accepted"
	ReasonInvalid          = "Invalid"
	ReasonConflicted       = "Conflicted"
	ReasonTargetNotFound   = "TargetNotFound"
	serviceKind            = "Service"
	globalRateLimitRetries = "1"
)

// Limit is one global limit for Weir's rate limit service: the filter a
// route gets names it.
type Limit = ir.GlobalRateLimit

// Result is what a set of policies does.
type Result struct {
	// Statuses are each policy's, by namespace/name.
	Statuses map[types.NamespacedName]TrafficPolicyStatus
	// Limits are the global limits of the accepted policies, sorted by
	// name, for the rate limit service.
	Limits []*Limit
	// Unresolved says which annotated objects name a policy that does
	// not exist, one line each.
	Unresolved []string
}

// annotatedTarget is the TargetRef of an annotated Ingress or KIngress.
func annotatedTarget(ref ir.ObjectRef) TargetRef {
	if ref.Kind == "KIngress" {
		return TargetRef{Group: "networking.internal.knative.dev", Kind: "Ingress", Name: ref.Name}
	}
	return TargetRef{Group: "networking.k8s.io", Kind: "Ingress", Name: ref.Name}
}

// kindName is how messages name a target's kind.
func kindName(t TargetRef) string {
	if k := targetKinds[GroupKind{t.Group, t.Kind}]; k != "" {
		return k
	}
	return t.Kind
}

// TargetExists reports whether a target (its ir.ObjectRef kind, its
// namespace and name) exists.
type TargetExists func(ref ir.ObjectRef) bool

// Attacher adds the accepted policies' filters to the routes of their
// targets. Fragments it does not change pass through as they are; one it
// changes is copied, once per fragment and policy set, so the translator
// sees the same pointer until either changes.
type Attacher struct {
	mu sync.Mutex
	// byTarget is what the winning policy attaches to each target.
	byTarget map[ir.ObjectRef]*attachment
	// targets counts the changes of byTarget.
	targets uint64
	// cache holds each fragment's decorated copy; calls counts Decorate's
	// calls, to drop fragments gone.
	cache map[*ir.Fragment]decorated
	calls uint64
}

// decorated is a fragment's copy, made or last found right at targets
// version checked, from the lookups in used.
type decorated struct {
	out     *ir.Fragment
	seen    uint64
	checked uint64
	used    []lookup
}

// lookup is a target a fragment looked up, and what it gave for what
// the fragment used: a route's limit, a backend's bound, or both.
type lookup struct {
	ref                ir.ObjectRef
	forLimit, forBound bool
	limit              *Limit
	maxRequests        uint32
}

// holds reports whether what l found still stands in byTarget.
func (l lookup) holds(byTarget map[ir.ObjectRef]*attachment) bool {
	var limit *Limit
	var bound uint32
	if att := byTarget[l.ref]; att != nil {
		limit, bound = att.limit, att.maxRequests
	}
	return (!l.forLimit || limit == l.limit) && (!l.forBound || bound == l.maxRequests)
}

// attachment is what a policy attaches to one target: a rate limit for
// its routes and, on a Service, a bound on requests in flight to it.
type attachment struct {
	// policy is the policy's namespace/name.
	policy      string
	limit       *Limit
	maxRequests uint32
}

func equalAttachments(a, b *attachment) bool {
	if a.maxRequests != b.maxRequests || (a.limit == nil) != (b.limit == nil) {
		return false
	}
	return a.limit == nil || equalLimits(a.limit, b.limit)
}

// NewAttacher returns an Attacher without policies.
func NewAttacher() *Attacher { return &Attacher{cache: map[*ir.Fragment]decorated{}} }

// Annotation on an Ingress or a KIngress names a TrafficPolicy of its
// namespace to take it as a target, as if the policy's targetRefs listed
// it. Knative Serving copies a Knative Service's annotations to its
// KIngress, so a ksvc can name its policy.
const Annotation = "weir.dev/traffic-policy"

// Set replaces the policies and reports what they do. exists may be nil:
// every target then exists. annotated maps the Ingresses and KIngresses
// whose Annotation names a policy to that policy's name.
func (a *Attacher) Set(policies []*TrafficPolicy, exists TargetExists, annotated map[ir.ObjectRef]string) Result {
	ps := slices.Clone(policies)
	byPolicy := map[types.NamespacedName][]TargetRef{}
	for ref, name := range annotated {
		byPolicy[types.NamespacedName{Namespace: ref.Namespace, Name: name}] = append(byPolicy[types.NamespacedName{Namespace: ref.Namespace, Name: name}], annotatedTarget(ref))
	}
	for _, p := range ps {
		delete(byPolicy, types.NamespacedName{Namespace: p.Namespace, Name: p.Name})
	}
	// The older policy wins a target, as Gateway API's conflict rule.
	sort.SliceStable(ps, func(i, j int) bool {
		ti, tj := ps[i].CreationTimestamp, ps[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return ps[i].Namespace+"/"+ps[i].Name < ps[j].Namespace+"/"+ps[j].Name
	})
	res := Result{Statuses: map[types.NamespacedName]TrafficPolicyStatus{}}
	byTarget := map[ir.ObjectRef]*attachment{}
	for _, p := range ps {
		key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
		var st TrafficPolicyStatus
		if err := validateMeta(p); err != nil || p.Spec.Validate() != nil {
			if err == nil {
				err = p.Spec.Validate()
			}
			for _, t := range p.Spec.TargetRefs {
				st.Ancestors = append(st.Ancestors, ancestor(t, p, metav1.ConditionFalse, ReasonInvalid, err.Error()))
			}
			if len(p.Spec.TargetRefs) == 0 {
				st.Ancestors = append(st.Ancestors, ancestor(TargetRef{}, p, metav1.ConditionFalse, ReasonInvalid, err.Error()))
			}
			res.Statuses[key] = st
			continue
		}
		targets := slices.Clone(p.Spec.TargetRefs)
		for ref, name := range annotated {
			if ref.Namespace == p.Namespace && name == p.Name && !slices.ContainsFunc(targets, func(t TargetRef) bool { return t.SectionName == nil && t == annotatedTarget(ref) }) {
				targets = append(targets, annotatedTarget(ref))
			}
		}
		// Annotated targets in name order, after the policy's own.
		slices.SortStableFunc(targets[len(p.Spec.TargetRefs):], func(x, y TargetRef) int { return strings.Compare(x.Kind+x.Group+"/"+x.Name, y.Kind+y.Group+"/"+y.Name) })
		seen := map[ir.ObjectRef]bool{}
		for _, t := range targets {
			ref := ir.ObjectRef{Kind: targetKinds[GroupKind{t.Group, t.Kind}], Namespace: p.Namespace, Name: t.Name}
			if seen[ref] {
				continue
			}
			seen[ref] = true
			switch won := byTarget[ref]; {
			case won != nil:
				st.Ancestors = append(st.Ancestors, ancestor(t, p, metav1.ConditionFalse, ReasonConflicted,
					fmt.Sprintf("TrafficPolicy %s is older and targets %s %s too; it wins", won.policy, t.Kind, t.Name)))
			case p.Spec.Concurrency != nil && ref.Kind != serviceKind:
				// An annotated Ingress or KIngress: the schema keeps
				// targetRefs to Services.
				st.Ancestors = append(st.Ancestors, ancestor(t, p, metav1.ConditionFalse, ReasonInvalid,
					fmt.Sprintf("%s %s: concurrency is counted per Service (Envoy's cluster circuit breaker); target Services", kindName(t), t.Name)))
			case exists != nil && !exists(ref):
				st.Ancestors = append(st.Ancestors, ancestor(t, p, metav1.ConditionFalse, ReasonTargetNotFound,
					fmt.Sprintf("%s %s/%s does not exist", t.Kind, p.Namespace, t.Name)))
			default:
				att := &attachment{policy: key.String()}
				msg := "Attached to the target's routes; Weir's rate limit service counts it"
				if p.Spec.RateLimit != nil {
					att.limit = limitOf(p, ref)
					res.Limits = append(res.Limits, att.limit)
				}
				if c := p.Spec.Concurrency; c != nil {
					att.maxRequests = uint32(c.MaxConcurrency) //nolint:gosec // 1..maxConcurrency
					msg = "Attached to the Service's clusters (a circuit breaker per gateway)"
					if att.limit != nil {
						msg = "Attached to the target's routes, counted by Weir's rate limit service, and to the Service's clusters (a circuit breaker per gateway)"
					}
				}
				byTarget[ref] = att
				st.Ancestors = append(st.Ancestors, ancestor(t, p, metav1.ConditionTrue, ReasonAccepted, msg))
			}
		}
		res.Statuses[key] = st
	}
	sort.Slice(res.Limits, func(i, j int) bool { return res.Limits[i].Name < res.Limits[j].Name })
	for key, refs := range byPolicy {
		for _, t := range refs {
			res.Unresolved = append(res.Unresolved, fmt.Sprintf("%s %s/%s: %s names TrafficPolicy %s, which does not exist", kindName(t), key.Namespace, t.Name, Annotation, key))
		}
	}
	sort.Strings(res.Unresolved)
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := len(a.byTarget) != len(byTarget)
	for ref, l := range byTarget {
		// An unchanged limit keeps its pointer, so a fragment's copy
		// that looked it up stays right.
		old := a.byTarget[ref]
		switch {
		case old != nil && equalAttachments(old, l):
			byTarget[ref] = old
		case old != nil && old.limit != nil && l.limit != nil && equalLimits(old.limit, l.limit):
			l.limit = old.limit // the routes' copies stand; the bound changed
			changed = true
		default:
			changed = true
		}
	}
	if changed {
		a.byTarget = byTarget
		a.targets++
	}
	return res
}

// Lines says, one line per policy and target, sorted, whether the policy
// is in force there and, if not, why.
func (r *Result) Lines() []string {
	var out []string
	for key, st := range r.Statuses {
		for _, a := range st.Ancestors {
			for _, c := range a.Conditions {
				out = append(out, fmt.Sprintf("TrafficPolicy %s on %s %s: %s=%s (%s): %s", key, a.AncestorRef.Kind, a.AncestorRef.Name, c.Type, c.Status, c.Reason, c.Message))
			}
		}
	}
	out = append(out, r.Unresolved...)
	sort.Strings(out)
	return out
}

// validateMeta refuses names that are not Kubernetes names: they become
// part of the limits' names, which the gateways send.
func validateMeta(p *TrafficPolicy) error {
	if errs := validation.IsDNS1123Label(p.Namespace); len(errs) > 0 {
		return fmt.Errorf("metadata.namespace: %q: %s", p.Namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(p.Name); len(errs) > 0 {
		return fmt.Errorf("metadata.name: %q: %s", p.Name, strings.Join(errs, "; "))
	}
	return nil
}

func equalLimits(a, b *Limit) bool {
	return a.Name == b.Name && a.QPS == b.QPS && a.PartitionBy == b.PartitionBy && a.Header == b.Header &&
		a.Throttle == b.Throttle && a.MaxQueueing == b.MaxQueueing && a.WarmUp == b.WarmUp &&
		a.ColdFactor == b.ColdFactor && a.FailClosed == b.FailClosed && a.Block.Body == b.Block.Body &&
		slices.Equal(a.Block.Headers, b.Block.Headers)
}

func ancestor(t TargetRef, p *TrafficPolicy, status metav1.ConditionStatus, reason, message string) AncestorStatus {
	return AncestorStatus{AncestorRef: t, Conditions: []metav1.Condition{{
		Type: ConditionAccepted, Status: status, Reason: reason, Message: message, ObservedGeneration: p.Generation,
	}}}
}

// limitOf is the global limit of p on one target; its name is unique per
// policy and target.
func limitOf(p *TrafficPolicy, target ir.ObjectRef) *Limit {
	rl := p.Spec.RateLimit
	l := &Limit{
		Name:       fmt.Sprintf("%s/%s#%s/%s", p.Namespace, p.Name, target.Kind, target.Name),
		QPS:        rl.QPS,
		FailClosed: rl.FailureMode == FailureModeDeny,
		// Envoy's ratelimit filter answers 429; Retry-After says when to
		// try again, as the API promises.
		Block: ir.BlockResponse{Headers: []ir.Header{{Name: "Retry-After", Value: globalRateLimitRetries}}},
	}
	if rl.By != nil {
		switch rl.By.Type {
		case ByClientIP:
			l.PartitionBy = ir.PartitionClient
		case ByHeader:
			l.PartitionBy, l.Header = ir.PartitionHeader, strings.ToLower(rl.By.Header)
		}
	}
	if rl.ControlBehavior == BehaviorThrottle {
		l.Throttle, l.MaxQueueing = true, rl.MaxQueueingTime.Duration
	}
	if w := rl.WarmUp; w != nil {
		l.WarmUp, l.ColdFactor = w.Period.Duration, w.ColdFactor
		if l.ColdFactor == 0 {
			l.ColdFactor = defaultColdFactor
		}
	}
	if b := p.Spec.BlockResponse; b != nil {
		l.Block.Body = b.Body
		if slices.ContainsFunc(b.Headers, func(h ResponseHeader) bool { return strings.EqualFold(h.Name, "Retry-After") }) {
			l.Block.Headers = nil // the policy's own wins
		}
		for _, h := range b.Headers {
			l.Block.Headers = append(l.Block.Headers, ir.Header{Name: h.Name, Value: h.Value})
		}
	}
	return l
}

// Decorate returns frags with the policies' filters on the routes of
// their targets. A route's own object (its HTTPRoute, Ingress or
// KIngress) is a more specific target than the Service it sends to, and
// wins.
func (a *Attacher) Decorate(frags []*ir.Fragment) []*ir.Fragment {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.byTarget) == 0 {
		return frags
	}
	a.calls++
	call := a.calls
	out := make([]*ir.Fragment, len(frags))
	for i, f := range frags {
		d, ok := a.cache[f]
		if ok && d.checked != a.targets {
			// The targets changed: the copy holds if every target its
			// routes looked up gives what it gave.
			ok = !slices.ContainsFunc(d.used, func(l lookup) bool { return !l.holds(a.byTarget) })
		}
		if !ok {
			d.out, d.used = a.decorate(f)
		}
		d.checked = a.targets
		d.seen = call
		a.cache[f] = d
		out[i] = d.out
	}
	for f, d := range a.cache {
		if d.seen != call {
			delete(a.cache, f)
		}
	}
	return out
}

// decorate copies f with the filters its routes get, or returns f when
// no route gets one; used are the targets it looked up.
func (a *Attacher) decorate(f *ir.Fragment) (*ir.Fragment, []lookup) {
	if f == nil {
		return nil, nil
	}
	var used []lookup
	lookFor := func(ref ir.ObjectRef, forLimit bool) *attachment {
		att := a.byTarget[ref]
		i := slices.IndexFunc(used, func(u lookup) bool { return u.ref == ref })
		if i < 0 {
			l := lookup{ref: ref}
			if att != nil {
				l.limit, l.maxRequests = att.limit, att.maxRequests
			}
			used = append(used, l)
			i = len(used) - 1
		}
		if forLimit {
			used[i].forLimit = true
		} else {
			used[i].forBound = true
		}
		return att
	}
	look := func(ref ir.ObjectRef) *attachment { return lookFor(ref, true) }
	services := map[string]ir.ObjectRef{}
	var copied *ir.Fragment
	backendsCopied := false
	copyFragment := func() {
		if copied == nil {
			c := *f
			copied = &c
		}
	}
	for bi, b := range f.Backends {
		if b == nil {
			continue
		}
		ref := ir.ObjectRef{Kind: serviceKind, Namespace: b.Service.Namespace, Name: b.Service.Name}
		services[b.Name] = ref
		// Every fragment with the Service's backend gets its bound, so
		// that the cluster they share is the same from each.
		if att := lookFor(ref, false); att != nil && att.maxRequests > 0 && b.MaxRequests != att.maxRequests {
			copyFragment()
			if !backendsCopied {
				copied.Backends = slices.Clone(f.Backends)
				backendsCopied = true
			}
			bc := *b
			bc.MaxRequests = att.maxRequests
			copied.Backends[bi] = &bc
		}
	}
	vhostsCopied := false
	for vi, vh := range f.VirtualHosts {
		var vhCopy *ir.VirtualHost
		for ri, r := range vh.Routes {
			if len(r.Backends) == 0 || r.Redirect != nil || r.DirectResponse != nil {
				continue // Envoy asks only for a route that forwards
			}
			l := limitFor(r, services, look)
			if l == nil {
				continue
			}
			copyFragment()
			if !vhostsCopied {
				copied.VirtualHosts = slices.Clone(f.VirtualHosts)
				vhostsCopied = true
			}
			if vhCopy == nil {
				v := *vh
				v.Routes = slices.Clone(vh.Routes)
				vhCopy = &v
				copied.VirtualHosts[vi] = vhCopy
			}
			rc := *r
			rc.Filters = append(slices.Clip(r.Filters), l)
			vhCopy.Routes[ri] = &rc
		}
	}
	if copied == nil {
		return f, used
	}
	return copied, used
}

// limitFor is the limit a route gets: its own object's policy, else that
// of a Service that takes a share of its requests (the first with one).
// The count is the route's: a route split between Services is limited as
// a whole, since the gateway asks before it picks the backend.
func limitFor(r *ir.Route, services map[string]ir.ObjectRef, look func(ir.ObjectRef) *attachment) *Limit {
	for _, src := range r.Provenance {
		if att := look(src); att != nil && att.limit != nil {
			return att.limit
		}
	}
	for _, b := range r.Backends {
		if b.Weight == 0 {
			continue
		}
		if ref, ok := services[b.BackendName]; ok {
			if att := look(ref); att != nil && att.limit != nil {
				return att.limit
			}
		}
	}
	return nil
}
