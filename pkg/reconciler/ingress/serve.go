package ingress

import (
	"errors"
	"fmt"

	"github.com/weir-dev/weir/pkg/ir"
)

// Served is what putting a Result into a model did.
type Served struct {
	// Changed is true when the model changed.
	Changed bool
	// Displaced are other sources a host took a domain from: younger
	// KIngresses, to reconcile again.
	Displaced []ir.ObjectRef
	// Conflicts are hosts an older source owns, by host.
	Conflicts map[string]string
	// Freed is true when a host left the model: a KIngress refused for
	// its domain may take it now.
	Freed bool
}

// Serve makes model's Ingress host fragments res's: a host an older
// source (a KIngress) owns is left out, and every Ingress of that host
// gets a problem saying so.
func Serve(model *ir.Model, res *Result) Served {
	out := Served{Conflicts: map[string]string{}}
	keep := map[ir.ObjectRef]bool{}
	for _, f := range res.Fragments {
		keep[f.Source] = true
		displaced, changed, err := model.Set(f)
		out.Displaced = append(out.Displaced, displaced...)
		var conflict *ir.ConflictError
		if errors.As(err, &conflict) && f.Source.Kind == RedirectKind {
			// Something else serves the name: no redirect, as in
			// ingress-nginx, and nothing to report.
			continue
		}
		if errors.As(err, &conflict) {
			out.Conflicts[f.Source.Name] = err.Error()
			if model.Delete(f.Source) {
				out.Changed, out.Freed = true, true
			}
			for _, r := range res.Ingresses {
				for _, h := range r.Hosts {
					if h == f.Source.Name {
						r.Problems = append(r.Problems, Problem{Field: "spec.rules", Reason: "DomainConflict",
							Message: fmt.Sprintf("host %s is not served: %v", h, err)})
					}
				}
			}
			continue
		}
		out.Changed = out.Changed || changed
	}
	for _, f := range model.Fragments() {
		if (f.Source.Kind == HostKind || f.Source.Kind == RedirectKind) && !keep[f.Source] && model.Delete(f.Source) {
			out.Changed, out.Freed = true, true
		}
	}
	return out
}

// Serves reports whether the gateway serves any of r's Ingress: a version
// of it is built, and some host of it is not left out for an older
// source. Status must not claim more.
func (s Served) Serves(r *IngressResult) bool {
	if r.Refused && !r.LastGood {
		return false
	}
	for _, h := range r.Hosts {
		if _, lost := s.Conflicts[h]; !lost {
			return true
		}
	}
	return false
}
