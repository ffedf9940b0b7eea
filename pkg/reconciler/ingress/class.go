package ingress

import (
	"slices"
	"strconv"

	netv1 "k8s.io/api/networking/v1"
)

const (
	// ControllerName is the spec.controller of Weir's IngressClasses.
	ControllerName = "weir.dev/ingress-controller"
	// LegacyClassAnnotation names the class of an Ingress from before
	// spec.ingressClassName; it wins over the field, as in ingress-nginx.
	LegacyClassAnnotation = "kubernetes.io/ingress.class"
	// DefaultClassAnnotation marks the IngressClass of Ingresses that
	// name none.
	DefaultClassAnnotation = "ingressclass.kubernetes.io/is-default-class"
)

// Classes decides which Ingresses are Weir's.
type Classes struct {
	// Ours are the names of IngressClasses whose controller is
	// ControllerName.
	Ours []string
	// Default is true when an IngressClass of ours is the cluster's
	// default.
	Default bool
	// Extra are further class names served, with or without an
	// IngressClass, so that Weir can run beside ingress-nginx and take
	// hosts over one at a time.
	Extra []string
	// All serves every Ingress, whatever its class: weir check judges
	// Ingresses before their class is switched.
	All bool
}

// ClassesOf reads which classes are Weir's from the cluster's
// IngressClasses and the extra names of the --ingress-class flag.
func ClassesOf(classes []*netv1.IngressClass, extra []string) Classes {
	c := Classes{Extra: extra}
	for _, ic := range classes {
		if ic.Spec.Controller != ControllerName {
			continue
		}
		c.Ours = append(c.Ours, ic.Name)
		if def, _ := strconv.ParseBool(ic.Annotations[DefaultClassAnnotation]); def {
			c.Default = true
		}
	}
	slices.Sort(c.Ours)
	return c
}

// Serves reports whether ing is Weir's: by its legacy class annotation,
// else by spec.ingressClassName, else by the default class.
func (c Classes) Serves(ing *netv1.Ingress) bool {
	if c.All {
		return true
	}
	name, ok := className(ing)
	if !ok {
		return c.Default
	}
	return slices.Contains(c.Ours, name) || slices.Contains(c.Extra, name)
}

// Owns reports whether ing's class is one of Weir's own IngressClasses
// (or the default one): only then does Weir write its status. An Ingress
// of an extra class is served beside its own controller, which keeps its
// status.
func (c Classes) Owns(ing *netv1.Ingress) bool {
	name, ok := className(ing)
	if !ok {
		return c.Default
	}
	return slices.Contains(c.Ours, name)
}

func className(ing *netv1.Ingress) (string, bool) {
	name, ok := ing.Annotations[LegacyClassAnnotation]
	if !ok && ing.Spec.IngressClassName != nil {
		name, ok = *ing.Spec.IngressClassName, true
	}
	return name, ok
}
