package manifest

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/gateway"
	"github.com/weir-dev/weir/pkg/reconciler/kingress"
)

// GatewayObjects returns the served Gateway API objects and namespace
// labels, for gateway.Build.
func (s *Store) GatewayObjects() gateway.Objects {
	s.mu.Lock()
	defer s.mu.Unlock()
	objs := gateway.Objects{NamespaceLabels: map[string]labels.Set{}}
	for _, o := range s.gatewayAPI["Namespace"].List() {
		ns := o.(*corev1.Namespace)
		objs.NamespaceLabels[ns.Name] = labels.Set(ns.Labels)
	}
	for _, o := range s.gatewayAPI["GatewayClass"].List() {
		objs.GatewayClasses = append(objs.GatewayClasses, o.(*gwv1.GatewayClass))
	}
	for _, o := range s.gatewayAPI["Gateway"].List() {
		objs.Gateways = append(objs.Gateways, o.(*gwv1.Gateway))
	}
	for _, o := range s.gatewayAPI["HTTPRoute"].List() {
		objs.HTTPRoutes = append(objs.HTTPRoutes, o.(*gwv1.HTTPRoute))
	}
	for _, o := range s.gatewayAPI["GRPCRoute"].List() {
		objs.GRPCRoutes = append(objs.GRPCRoutes, o.(*gwv1.GRPCRoute))
	}
	for _, o := range s.gatewayAPI["TLSRoute"].List() {
		objs.TLSRoutes = append(objs.TLSRoutes, o.(*gwv1.TLSRoute))
	}
	for _, o := range s.gatewayAPI["ReferenceGrant"].List() {
		objs.ReferenceGrants = append(objs.ReferenceGrants, o.(*gwv1.ReferenceGrant))
	}
	for _, o := range s.gatewayAPI["BackendTLSPolicy"].List() {
		objs.BackendTLSPolicies = append(objs.BackendTLSPolicies, o.(*gwv1.BackendTLSPolicy))
	}
	return objs
}

// GatewayListers resolves the Gateway API front end's references.
func (s *Store) GatewayListers() gateway.Listers {
	return gateway.Listers{
		Services:       corelisters.NewServiceLister(s.services),
		EndpointSlices: kingress.IndexedSlices(s.slices),
		Secrets:        corelisters.NewSecretLister(s.secrets),
		ConfigMaps:     corelisters.NewConfigMapLister(s.gatewayAPI["ConfigMap"]),
	}
}

// GatewaySync keeps the model's Gateway fragments equal to what
// gateway.Build makes of the store. Every sync rebuilds every Gateway:
// Build is cheap next to translating, and an unchanged fragment is not
// translated again (ir.Model.Set compares it).
type GatewaySync struct {
	Model  *ir.Model
	Syncer kingress.Syncer

	mu   sync.Mutex
	last *gateway.Result
}

// Sync builds the Gateways of store into the model, triggers the syncer
// if anything changed, and returns the statuses.
func (g *GatewaySync) Sync(store *Store) *gateway.Result {
	g.mu.Lock()
	defer g.mu.Unlock()
	// weir run binds the listeners' own ports.
	res := gateway.Build(store.GatewayObjects(), store.GatewayListers(), gateway.Options{})
	changed := false
	keep := map[ir.ObjectRef]bool{}
	for _, f := range res.Fragments {
		keep[f.Source] = true
		// Gateway fragments serve on their own listeners only, so they
		// claim no shared domain and Set cannot refuse them.
		if _, c, err := g.Model.Set(f); err == nil && c {
			changed = true
		}
	}
	for _, f := range g.Model.Fragments() {
		if f.Source.Kind == gateway.Kind && !keep[f.Source] {
			changed = g.Model.Delete(f.Source) || changed
		}
	}
	g.last = res
	if changed && g.Syncer != nil {
		g.Syncer.Trigger()
	}
	return res
}

// Last returns the result of the latest Sync, or nil.
func (g *GatewaySync) Last() *gateway.Result {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.last
}

// isGatewayInput reports whether a change of this kind can change what
// gateway.Build makes.
func isGatewayInput(kind string) bool { return kind != kingress.Kind }
