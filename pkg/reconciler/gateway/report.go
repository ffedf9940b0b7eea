package gateway

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// NotReady lists, one line each, every condition that says an object or
// part of it is not served: the lines `weir translate` and `weir run`
// print, so a user sees what a cluster would show in status.
func (r *Result) NotReady() []string {
	var out []string
	bad := func(prefix string, conds []metav1.Condition) {
		for _, c := range conds {
			positive := c.Type != "Conflicted"
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
