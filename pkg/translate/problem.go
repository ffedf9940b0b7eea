package translate

import (
	"fmt"

	"github.com/weir-dev/weir/pkg/ir"
)

// Problem is something a source object asks for that is not served as
// written: left out because Envoy would refuse it, or because another
// object already has it. Front ends turn each into a status condition on
// Source, so nothing is dropped without the user seeing it.
type Problem struct {
	// Source is the object to report it on; zero for input that has none
	// (a nil fragment, say).
	Source ir.ObjectRef
	// Reason is CamelCase, for a condition's reason.
	Reason string
	// Message says what is not served and why, naming the field where the
	// front end gave one (ir.VirtualHost.Field, ir.Certificate.Field).
	Message string
}

// Reasons of the problems translate reports.
const (
	// ReasonNotServed is the reason of a problem without a more specific one.
	ReasonNotServed = "NotServed"
	// ReasonDomainConflict: another object's virtual host has the domain.
	ReasonDomainConflict = "DomainConflict"
	// ReasonServerNameConflict: another certificate serves the TLS server name.
	ReasonServerNameConflict = "ServerNameConflict"
	// ReasonInvalidHost: a host Envoy would refuse or could confuse with
	// another's.
	ReasonInvalidHost = "InvalidHost"
	// ReasonUnsupportedCertificate: a key or certificate Envoy cannot load.
	ReasonUnsupportedCertificate = "UnsupportedCertificate"
	// ReasonInvalidRoute: a route Envoy would refuse, with the whole table.
	ReasonInvalidRoute = "InvalidRoute"
)

func (p Problem) String() string {
	if p.Source == (ir.ObjectRef{}) {
		return p.Message
	}
	return p.Source.String() + ": " + p.Message
}

// warner collects the problems of one source object and, if vhost is set,
// of one of its virtual hosts; field is the front end's name for where the
// virtual host or certificate came from.
type warner struct {
	source ir.ObjectRef
	vhost  string
	field  string
	list   []Problem
}

// add reports a problem without a specific reason.
func (w *warner) add(format string, args ...any) {
	w.addReason(ReasonNotServed, format, args...)
}

func (w *warner) addReason(reason, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if w.vhost != "" {
		msg = fmt.Sprintf("virtual host %q: %s", w.vhost, msg)
	}
	if w.field != "" {
		msg = w.field + ": " + msg
	}
	w.list = append(w.list, Problem{Source: w.source, Reason: reason, Message: msg})
}

// addAt reports a problem at field, which overrides w.field.
func (w *warner) addAt(field, reason, format string, args ...any) {
	saved := w.field
	if field != "" {
		w.field = field
	}
	w.addReason(reason, format, args...)
	w.field = saved
}

func problemStrings(ps []Problem) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// routeWarner is where the problems of a route go: to the route's own
// source object when another object than w's contributed it (an HTTPRoute
// on a Gateway's virtual host), so that object's status says so; else to w.
func routeWarner(w *warner, prov ir.Provenance) *warner {
	if len(prov) == 0 || prov[0] == w.source {
		return w
	}
	return &warner{source: prov[0], vhost: w.vhost}
}
