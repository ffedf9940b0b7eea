package gateway

import (
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// grantIndex answers whether a ReferenceGrant allows a cross-namespace
// reference. Grants live in the namespace of the object referred to.
type grantIndex map[string][]*gwv1.ReferenceGrant

func newGrantIndex(grants []*gwv1.ReferenceGrant) grantIndex {
	out := grantIndex{}
	for _, g := range grants {
		out[g.Namespace] = append(out[g.Namespace], g)
	}
	return out
}

// allows reports whether an object of fromGroup/fromKind in fromNS may
// refer to toGroup/toKind toName in toNS.
func (gi grantIndex) allows(fromGroup, fromKind, fromNS, toGroup, toKind, toNS, toName string) bool {
	if fromNS == toNS {
		return true
	}
	for _, g := range gi[toNS] {
		from := false
		for _, f := range g.Spec.From {
			if string(f.Group) == fromGroup && string(f.Kind) == fromKind && string(f.Namespace) == fromNS {
				from = true
				break
			}
		}
		if !from {
			continue
		}
		for _, t := range g.Spec.To {
			if string(t.Group) == toGroup && string(t.Kind) == toKind && (t.Name == nil || *t.Name == "" || string(*t.Name) == toName) {
				return true
			}
		}
	}
	return false
}
