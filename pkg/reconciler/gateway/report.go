package gateway

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/translate"
)

// NotReady lists, one line each, every condition that says an object or
// part of it is not served: the lines `weir translate` and `weir run`
// print, so a user sees what a cluster would show in status.
func (r *Result) NotReady() []string {
	var out []string
	bad := func(prefix string, conds []metav1.Condition) {
		for _, c := range conds {
			positive := c.Type != "Conflicted" && c.Type != string(gwv1.RouteConditionPartiallyInvalid)
			if (c.Status == metav1.ConditionTrue) != positive {
				out = append(out, fmt.Sprintf("%s: %s=%s %s: %s", prefix, c.Type, c.Status, c.Reason, c.Message))
			}
		}
	}
	for _, name := range sortedKeys(r.GatewayClasses) {
		bad("GatewayClass "+name, r.GatewayClasses[name].Conditions)
	}
	for _, nn := range sortedNames(r.Gateways) {
		st := r.Gateways[nn]
		bad("Gateway "+nn.String(), st.Conditions)
		for _, l := range st.Listeners {
			bad(fmt.Sprintf("Gateway %s listener %s", nn, l.Name), l.Conditions)
		}
	}
	for _, nn := range sortedNames(r.HTTPRoutes) {
		for _, p := range r.HTTPRoutes[nn].Parents {
			bad(fmt.Sprintf("HTTPRoute %s parent %s", nn, p.ParentRef.Name), p.Conditions)
		}
	}
	for _, nn := range sortedNames(r.GRPCRoutes) {
		for _, p := range r.GRPCRoutes[nn].Parents {
			bad(fmt.Sprintf("GRPCRoute %s parent %s", nn, p.ParentRef.Name), p.Conditions)
		}
	}
	for _, nn := range sortedNames(r.TLSRoutes) {
		for _, p := range r.TLSRoutes[nn].Parents {
			bad(fmt.Sprintf("TLSRoute %s parent %s", nn, p.ParentRef.Name), p.Conditions)
		}
	}
	for _, nn := range sortedNames(r.BackendTLSPolicies) {
		for _, a := range r.BackendTLSPolicies[nn].Ancestors {
			bad(fmt.Sprintf("BackendTLSPolicy %s ancestor %s", nn, a.AncestorRef.Name), a.Conditions)
		}
	}
	return append(out, r.Skipped...)
}

// sortedNames returns the keys of m in namespace/name order.
func sortedNames[V any](m map[types.NamespacedName]V) []types.NamespacedName {
	out := make([]types.NamespacedName, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b types.NamespacedName) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// AttachProblems puts what translate left out of a route on the route: an
// accepted parent status for gateway gets PartiallyInvalid=True
// (UnsupportedValue, "Dropped Rule: ..."), as the spec asks when rules are
// dropped and the rest is served. It returns the problems that are the
// Gateway's own.
func (r *Result) AttachProblems(gateway ir.ObjectRef, problems []translate.Problem) []translate.Problem {
	var own []translate.Problem
	byRoute := map[ir.ObjectRef][]translate.Problem{}
	var order []ir.ObjectRef
	for _, p := range problems {
		if p.Source == gateway || r.routeStatus(p.Source) == nil {
			own = append(own, p)
			continue
		}
		if byRoute[p.Source] == nil {
			order = append(order, p.Source)
		}
		byRoute[p.Source] = append(byRoute[p.Source], p)
	}
	for _, ref := range order {
		ps := byRoute[ref]
		msg := ps[0].Message
		if len(ps) > 1 {
			msg = fmt.Sprintf("%s (and %d more)", msg, len(ps)-1)
		}
		st := r.routeStatus(ref)
		for i := range st.Parents {
			pr := st.Parents[i].ParentRef
			ns := ref.Namespace
			if pr.Namespace != nil {
				ns = string(*pr.Namespace)
			}
			if string(pr.Name) != gateway.Name || ns != gateway.Namespace {
				continue
			}
			accepted := meta.FindStatusCondition(st.Parents[i].Conditions, string(gwv1.RouteConditionAccepted))
			if accepted == nil || accepted.Status != metav1.ConditionTrue {
				continue // not accepted: the condition must not be set
			}
			setCondition(&st.Parents[i].Conditions, accepted.ObservedGeneration, string(gwv1.RouteConditionPartiallyInvalid), true, string(gwv1.RouteReasonUnsupportedValue),
				"Dropped Rule: "+msg)
		}
	}
	return own
}

// routeStatus is the RouteStatus of the route ref names, or nil.
func (r *Result) routeStatus(ref ir.ObjectRef) *gwv1.RouteStatus {
	nn := types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}
	switch ref.Kind {
	case RouteKind:
		if st := r.HTTPRoutes[nn]; st != nil {
			return &st.RouteStatus
		}
	case GRPCRouteKind:
		if st := r.GRPCRoutes[nn]; st != nil {
			return &st.RouteStatus
		}
	case TLSRouteKind:
		if st := r.TLSRoutes[nn]; st != nil {
			return &st.RouteStatus
		}
	}
	return nil
}
