package manifest

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	netv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/ingress"
	"github.com/weir-dev/weir/pkg/reconciler/kingress"
)

// StandaloneClass is the IngressClass weir run always serves, as if
// config/'s IngressClass were installed.
const StandaloneClass = "weir"

// IngressSync keeps the model's Ingress host fragments equal to what the
// Ingress front end makes of the store.
type IngressSync struct {
	Model  *ir.Model
	Syncer kingress.Syncer
	// Classes are served besides StandaloneClass (--ingress-class).
	Classes []string
	// MirrorTargetHosts may be named by mirror-target
	// (--mirror-target-host).
	MirrorTargetHosts []string
	// AuthServiceNamespaces may hold the Service of another namespace's
	// auth-url.
	AuthServiceNamespaces []string
	// InternalKey, when set, replaces the random key of the tokens of
	// internal redirects (ingress.Options.InternalKey).
	InternalKey []byte
	// Displaced, when set, hears of KIngresses a host took a domain from.
	Displaced func(ir.ObjectRef)

	mu      sync.Mutex
	builder *ingress.Builder
	last    *IngressReport
}

// IngressReport is the outcome of the last sync.
type IngressReport struct {
	*ingress.Result
	// Skipped lists Ingresses of another class.
	Skipped []types.NamespacedName
	// Conflicts are hosts an older KIngress owns, by host.
	Conflicts map[string]string
}

// Sync builds the store's Ingresses into the model, triggers the syncer if
// anything changed, and returns the report.
func (g *IngressSync) Sync(store *Store) *IngressReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.builder == nil {
		g.builder = ingress.NewBuilder()
	}
	store.mu.Lock()
	var ings []*netv1.Ingress
	for _, o := range store.gatewayAPI["Ingress"].List() {
		ings = append(ings, o.(*netv1.Ingress))
	}
	var ics []*netv1.IngressClass
	for _, o := range store.gatewayAPI["IngressClass"].List() {
		ics = append(ics, o.(*netv1.IngressClass))
	}
	store.mu.Unlock()
	classes := ingress.ClassesOf(ics, append([]string{StandaloneClass}, g.Classes...))
	// weir run is the only controller on its machine: an Ingress that
	// names no class is its.
	classes.Default = true
	listers := ingress.Listers{
		Services:       corelisters.NewServiceLister(store.services),
		EndpointSlices: kingress.IndexedSlices(store.slices),
		Secrets:        corelisters.NewSecretLister(store.secrets),
		AuthSecrets:    corelisters.NewSecretLister(store.secrets),
	}
	rep := &IngressReport{Result: g.builder.Build(ings, classes, listers, ingress.Options{MirrorTargetHosts: g.MirrorTargetHosts, AuthServiceNamespaces: g.AuthServiceNamespaces, InternalKey: g.InternalKey})}
	for _, ing := range ings {
		if !classes.Serves(ing) {
			rep.Skipped = append(rep.Skipped, types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name})
		}
	}
	slices.SortFunc(rep.Skipped, func(a, b types.NamespacedName) int { return strings.Compare(a.String(), b.String()) })
	served := ingress.Serve(g.Model, rep.Result)
	rep.Conflicts = served.Conflicts
	for _, d := range served.Displaced {
		if g.Displaced != nil {
			g.Displaced(d)
		}
	}
	changed := served.Changed
	g.last = rep
	if changed && g.Syncer != nil {
		g.Syncer.Trigger()
	}
	return rep
}

// Last returns the report of the latest Sync, or nil.
func (g *IngressSync) Last() *IngressReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.last
}

// Lines says, one line each, what a person must know: Ingresses skipped
// or not served, annotations not honoured as written, and problems.
func (r *IngressReport) Lines() []string {
	if r == nil {
		return nil
	}
	var out []string
	for _, k := range r.Skipped {
		out = append(out, fmt.Sprintf("skipped: Ingress %s: its class is not Weir's (%q); pass --ingress-class to serve it", k, StandaloneClass))
	}
	keys := make([]types.NamespacedName, 0, len(r.Ingresses))
	for k := range r.Ingresses {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b types.NamespacedName) int { return strings.Compare(a.String(), b.String()) })
	for _, k := range keys {
		res := r.Ingresses[k]
		if res.Refused {
			state := "nothing of it is served"
			if res.LastGood {
				state = "its last good version keeps serving"
			}
			out = append(out, fmt.Sprintf("not served: Ingress %s: %s", k, state))
		}
		for _, f := range res.Findings {
			switch f.Support {
			case ingress.Refused:
				out = append(out, fmt.Sprintf("refused: Ingress %s: %s=%q: %s", k, f.Key, f.Value, f.Message))
			case ingress.Ignored:
				out = append(out, fmt.Sprintf("ignored: Ingress %s: %s: %s", k, f.Key, f.Message))
			}
		}
		for _, p := range res.Problems {
			out = append(out, fmt.Sprintf("left out: Ingress %s: %s", k, p))
		}
	}
	return out
}

// Skips reports whether the report's build skipped the Ingress ns/name
// (another class).
func (r *IngressReport) Skips(namespace, name string) bool {
	if r == nil {
		return false
	}
	_, found := slices.BinarySearchFunc(r.Skipped, types.NamespacedName{Namespace: namespace, Name: name}, func(a, b types.NamespacedName) int {
		return strings.Compare(a.String(), b.String())
	})
	return found
}

// isIngressInput reports whether a change of this kind can change what
// the Ingress front end makes.
func isIngressInput(kind string) bool {
	switch kind {
	case "Ingress", "IngressClass", "Service", "EndpointSlice", "Secret":
		return true
	}
	return false
}
