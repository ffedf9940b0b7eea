// Package gateway owns Weir's Gateway API front end: it turns
// GatewayClasses, Gateways, HTTPRoutes, GRPCRoutes, TLSRoutes and
// ReferenceGrants, with the
// Services, EndpointSlices and Secrets they refer to, into one ir.Fragment
// per Gateway, and computes the status the spec asks of each object. The
// same Build runs in weir-controller and in `weir run` / `weir translate`.
package gateway

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weir-dev/weir/pkg/envoycheck"
	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/kingress"
	"github.com/weir-dev/weir/pkg/reconciler/secrets"
)

// ControllerName is the GatewayClass controllerName Weir serves.
const ControllerName gwv1.GatewayController = "weir.dev/gateway-controller"

// Kind is the ir.ObjectRef kind of the fragments Build returns.
const Kind = "Gateway"

// Objects are the Gateway API objects to build from.
type Objects struct {
	GatewayClasses  []*gwv1.GatewayClass
	Gateways        []*gwv1.Gateway
	HTTPRoutes      []*gwv1.HTTPRoute
	GRPCRoutes      []*gwv1.GRPCRoute
	TLSRoutes       []*gwv1.TLSRoute
	ReferenceGrants []*gwv1.ReferenceGrant
	// BackendTLSPolicies say how the gateway connects to Services.
	BackendTLSPolicies []*gwv1.BackendTLSPolicy
	// NamespaceLabels are the labels of each namespace, for allowedRoutes
	// selectors; a namespace not listed has none.
	NamespaceLabels map[string]labels.Set
}

// Listers resolve backend and certificate references.
type Listers struct {
	Services       corelisters.ServiceLister
	EndpointSlices kingress.SlicesOfService
	Secrets        corelisters.SecretLister
	// ConfigMaps hold client CA bundles (ca.crt); nil reads none.
	ConfigMaps corelisters.ConfigMapLister
	// Parameters reads GatewayParameters; nil where no data plane is
	// provisioned (weir run), which accepts references unread.
	Parameters ParametersLister
}

// Options say how a Gateway's listeners map to the data plane.
type Options struct {
	// PrivilegedPortOffset, when set, is added to listener ports below
	// 1024: a data plane that runs without privileges binds 10080 for a
	// listener on 80, and its Service maps 80 to it (ContainerPort).
	PrivilegedPortOffset uint32
	// ReservedPorts are the data plane's own ports (admin, readiness),
	// which no listener may bind.
	ReservedPorts []uint32
	// Unwatched are route kinds whose CRDs the cluster lacks: no listener
	// and no GatewayClass claims them.
	Unwatched []string
	// StaticAddresses is set where a Provisioner gives a Gateway's Service
	// the IP addresses in its spec.addresses. Elsewhere (weir run) a
	// Gateway that asks for one is served but not Programmed.
	StaticAddresses bool
}

// ContainerPort is the port the data plane binds for a listener port.
func (o Options) ContainerPort(port int32) uint32 {
	p := uint32(port) //nolint:gosec // the API bounds ports to 1..65535
	if p < 1024 {
		p += o.PrivilegedPortOffset
	}
	return p
}

// Result is what Build makes of Objects.
type Result struct {
	// Fragments has one fragment per accepted Gateway, by namespace/name.
	Fragments []*ir.Fragment
	// Statuses are computed for every object this controller is
	// responsible for. Conditions carry no LastTransitionTime; SetConditions
	// keeps the previous time of an unchanged condition.
	GatewayClasses map[string]*gwv1.GatewayClassStatus
	Gateways       map[types.NamespacedName]*gwv1.GatewayStatus
	HTTPRoutes     map[types.NamespacedName]*gwv1.HTTPRouteStatus
	GRPCRoutes     map[types.NamespacedName]*gwv1.GRPCRouteStatus
	TLSRoutes      map[types.NamespacedName]*gwv1.TLSRouteStatus
	// BackendTLSPolicies have our ancestors (Gateways) only; a policy no
	// Gateway of ours uses has none.
	BackendTLSPolicies map[types.NamespacedName]*gwv1.PolicyStatus
	// Parameters shape each accepted Gateway's data plane: its class's
	// GatewayParameters overridden by its own.
	Parameters map[types.NamespacedName]Parameters
	// KeepDataPlanes are served Gateways whose parameters cannot be read
	// now: their data planes are left as they are, neither changed nor
	// removed, so a typo in a GatewayParameters costs no traffic.
	KeepDataPlanes map[types.NamespacedName]bool
	// Skipped says which objects no Weir GatewayClass takes, and why.
	Skipped []string
}

// Build computes the fragments and statuses of objs. It never fails: what
// cannot be served is left out and said in a status condition.
func Build(objs Objects, l Listers, opts Options) *Result {
	b := &builder{objs: objs, listers: l, opts: opts, res: &Result{
		GatewayClasses: map[string]*gwv1.GatewayClassStatus{},
		Gateways:       map[types.NamespacedName]*gwv1.GatewayStatus{},
		HTTPRoutes:     map[types.NamespacedName]*gwv1.HTTPRouteStatus{},
		GRPCRoutes:     map[types.NamespacedName]*gwv1.GRPCRouteStatus{},
		TLSRoutes:      map[types.NamespacedName]*gwv1.TLSRouteStatus{},

		BackendTLSPolicies: map[types.NamespacedName]*gwv1.PolicyStatus{},
		Parameters:         map[types.NamespacedName]Parameters{},
		KeepDataPlanes:     map[types.NamespacedName]bool{},
	}, grants: newGrantIndex(objs.ReferenceGrants)}
	b.classes()
	b.buildGateways()
	b.backendTLSPolicies()
	b.routes()
	b.finish()
	b.tlsPolicyStatuses()
	return b.res
}

type builder struct {
	objs    Objects
	listers Listers
	opts    Options
	res     *Result
	grants  grantIndex
	ours    map[string]*gwv1.GatewayClass
	// classParams are the GatewayParameters of the classes that have them;
	// classParamsProblem says why a class's cannot be read.
	classParams        map[string]*Parameters
	classParamsProblem map[string]string
	gateways           map[types.NamespacedName]*gatewayState
	order              []*gatewayState
	// tlsPolicies are the BackendTLSPolicies by target.
	tlsPolicies *tlsPolicies
	// usedServices collects the Services of the route being built.
	usedServices map[types.NamespacedName]bool
}

// gatewayState is one Gateway being built.
type gatewayState struct {
	gw        *gwv1.Gateway
	status    *gwv1.GatewayStatus
	listeners []*listenerState
	frag      *ir.Fragment
	backends  map[string]*ir.Backend
	// attachments are the route rules attached per listener name.
	attachments map[string][]attachment
	// addressProblem says why spec.addresses cannot be accepted, or "".
	addressProblem string
	// paramsProblem says why spec.infrastructure.parametersRef cannot
	// be used, or "".
	paramsProblem string
	// clientCert names the certificate presented to TLS backends
	// (spec.tls.backend), or is "". refsReason and refsMsg say why it
	// could not be read.
	clientCert, refsReason, refsMsg string
}

type listenerState struct {
	spec  *gwv1.Listener
	index int
	// valid listeners are served. Routes attach to attachable ones, which
	// may be invalid only for an unresolved reference (a certificate):
	// the spec counts those routes in attachedRoutes all the same.
	valid, attachable bool
	status            *gwv1.ListenerStatus
	kinds             []gwv1.RouteGroupKind
	certs             []string
}

func (b *builder) classes() {
	b.ours = map[string]*gwv1.GatewayClass{}
	b.classParams = map[string]*Parameters{}
	b.classParamsProblem = map[string]string{}
	for _, gc := range b.objs.GatewayClasses {
		if gc.Spec.ControllerName != ControllerName {
			continue
		}
		b.ours[gc.Name] = gc
		st := &gwv1.GatewayClassStatus{SupportedFeatures: supportedFeatures(b.opts.Unwatched)}
		setCondition(&st.Conditions, gc.Generation, string(gwv1.GatewayClassConditionStatusAccepted), true,
			string(gwv1.GatewayClassReasonAccepted), "Weir serves this class")
		if ref := gc.Spec.ParametersRef; ref != nil {
			ns := ""
			if ref.Namespace != nil {
				ns = string(*ref.Namespace)
			}
			params, problem := b.parametersRef(ref.Group, ref.Kind, ns, ref.Name, "spec.parametersRef")
			if problem != "" {
				setCondition(&st.Conditions, gc.Generation, string(gwv1.GatewayClassConditionStatusAccepted), false,
					string(gwv1.GatewayClassReasonInvalidParameters), problem)
				b.classParamsProblem[gc.Name] = problem
			}
			b.classParams[gc.Name] = params
		}
		b.res.GatewayClasses[gc.Name] = st
	}
}

// SupportedFeatures are the Gateway API features Weir implements, as the
// GatewayClass status reports them and the conformance suite tests them.
var SupportedFeatures = []string{
	"Gateway", "HTTPRoute", "GRPCRoute", "TLSRoute", "ReferenceGrant",
	"GRPCRouteNamedRouteRule", "BackendTLSPolicy", "BackendTLSPolicySANValidation",
	"GatewayAddressEmpty", "GatewayFrontendClientCertificateValidation", "GatewayFrontendClientCertificateValidationInsecureFallback",
	"GatewayHTTPListenerIsolation", "GatewayHTTPSListenerDetectMisdirectedRequests", "GatewayPort8080", "GatewayStaticAddresses",
	"HTTPRoute303RedirectStatusCode", "HTTPRoute307RedirectStatusCode", "HTTPRoute308RedirectStatusCode",
	"HTTPRouteBackendProtocolH2C", "HTTPRouteBackendProtocolWebSocket", "HTTPRouteBackendRequestHeaderModification",
	"HTTPRouteBackendTimeout", "HTTPRouteCORS",
	"HTTPRouteHostRewrite", "HTTPRouteMethodMatching", "HTTPRouteNamedRouteRule", "HTTPRouteParentRefPort",
	"HTTPRoutePathRedirect", "HTTPRoutePathRewrite", "HTTPRoutePortRedirect", "HTTPRouteQueryParamMatching",
	"HTTPRouteRequestMirror", "HTTPRouteRequestMultipleMirrors", "HTTPRouteRequestPercentageMirror",
	"HTTPRouteRequestTimeout", "HTTPRouteResponseHeaderModification", "HTTPRouteSchemeRedirect",
	"TLSRouteModeTerminate", "TLSRouteModeMixed",
	"GatewayBackendClientCertificate", "HTTPRouteDestinationPortMatching",
}

// supportedFeatures are SupportedFeatures without those of unwatched kinds
// (a feature of a kind is named after it).
func supportedFeatures(unwatched []string) []gwv1.SupportedFeature {
	var out []gwv1.SupportedFeature
	for _, n := range slices.Sorted(slices.Values(SupportedFeatures)) {
		if !slices.ContainsFunc(unwatched, func(kind string) bool { return strings.HasPrefix(n, kind) }) {
			out = append(out, gwv1.SupportedFeature{Name: gwv1.FeatureName(n)})
		}
	}
	return out
}

func (b *builder) buildGateways() {
	b.gateways = map[types.NamespacedName]*gatewayState{}
	gws := slices.Clone(b.objs.Gateways)
	slices.SortFunc(gws, func(a, c *gwv1.Gateway) int { return compareAge(&a.ObjectMeta, &c.ObjectMeta) })
	for _, gw := range gws {
		gc := b.ours[string(gw.Spec.GatewayClassName)]
		if gc == nil {
			b.res.Skipped = append(b.res.Skipped, fmt.Sprintf("Gateway %s/%s: GatewayClass %q is not one with controllerName %s", gw.Namespace, gw.Name, gw.Spec.GatewayClassName, ControllerName))
			continue
		}
		classProblem := b.classParamsProblem[gc.Name]
		if st := b.res.GatewayClasses[gc.Name]; classProblem == "" && !meta.IsStatusConditionTrue(st.Conditions, string(gwv1.GatewayClassConditionStatusAccepted)) {
			continue
		}
		g := &gatewayState{gw: gw, status: &gwv1.GatewayStatus{}, backends: map[string]*ir.Backend{}, attachments: map[string][]attachment{}}
		nn := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
		b.gateways[nn] = g
		b.order = append(b.order, g)
		b.res.Gateways[nn] = g.status
		g.frag = &ir.Fragment{Source: ir.ObjectRef{Kind: Kind, Namespace: gw.Namespace, Name: gw.Name}, Created: gw.CreationTimestamp.Time}
		_, g.addressProblem = StaticAddresses(gw)
		params := Parameters{}.over(b.classParams[gc.Name])
		if classProblem != "" {
			g.paramsProblem = fmt.Sprintf("GatewayClass %s: %s", gc.Name, classProblem)
		}
		if infra := gw.Spec.Infrastructure; infra != nil {
			if ref := infra.ParametersRef; ref != nil && g.paramsProblem == "" {
				own, problem := b.parametersRef(ref.Group, ref.Kind, gw.Namespace, ref.Name, "spec.infrastructure.parametersRef")
				if problem == "" && own != nil && own.Image != "" {
					// Whoever may make a Gateway may not pick what runs
					// in the data planes' namespace.
					problem = fmt.Sprintf("spec.infrastructure.parametersRef: GatewayParameters %s/%s sets image, which only a GatewayClass's parameters may", gw.Namespace, ref.Name)
				}
				g.paramsProblem = problem
				params = params.over(own)
			}
			for _, k := range slices.Sorted(maps.Keys(infra.Labels)) {
				if g.paramsProblem == "" && ReservedLabel(string(k)) {
					g.paramsProblem = fmt.Sprintf("spec.infrastructure.labels[%s]: the key is reserved (app, app.kubernetes.io/*, weir.dev/*): Services select gateway pods by them", k)
				}
			}
		}
		if g.paramsProblem != "" {
			b.res.KeepDataPlanes[nn] = true
		} else {
			b.res.Parameters[nn] = params
		}
		b.listeners(g)
		b.backendClientCertificate(g)
	}
}

// listeners validates each listener and reports it, as the spec names the
// conditions: Accepted, Programmed, ResolvedRefs and Conflicted.
func (b *builder) listeners(g *gatewayState) {
	gw := g.gw
	// First pass: who shares a port or a port and hostname. Conflicting
	// listeners are all marked; none is picked as the winner.
	protocols := map[gwv1.PortNumber]map[gwv1.ProtocolType]bool{}
	hostnames := map[string]int{}
	containers := map[uint32]map[gwv1.PortNumber]bool{}
	for i := range gw.Spec.Listeners {
		spec := &gw.Spec.Listeners[i]
		if protocols[spec.Port] == nil {
			protocols[spec.Port] = map[gwv1.ProtocolType]bool{}
		}
		protocols[spec.Port][spec.Protocol] = true
		hostnames[listenerKey(spec)]++
		cp := b.opts.ContainerPort(int32(spec.Port))
		if containers[cp] == nil {
			containers[cp] = map[gwv1.PortNumber]bool{}
		}
		containers[cp][spec.Port] = true
	}
	for i := range gw.Spec.Listeners {
		spec := &gw.Spec.Listeners[i]
		ls := &listenerState{spec: spec, index: i, valid: true, status: &gwv1.ListenerStatus{Name: spec.Name, Conditions: []metav1.Condition{}}}
		g.listeners = append(g.listeners, ls)
		accepted, acceptedReason, acceptedMsg := true, string(gwv1.ListenerReasonAccepted), "the listener is valid"
		resolved, resolvedReason, resolvedMsg := true, string(gwv1.ListenerReasonResolvedRefs), "every reference resolved"
		conflicted, conflictReason, conflictMsg := false, string(gwv1.ListenerReasonNoConflicts), "no conflict"

		protocolServed := true
		switch spec.Protocol {
		case gwv1.HTTPProtocolType, gwv1.HTTPSProtocolType:
		case gwv1.TLSProtocolType:
			if spec.TLS == nil {
				accepted, acceptedReason, protocolServed = false, string(gwv1.ListenerReasonUnsupportedValue), false
				acceptedMsg = fmt.Sprintf("spec.listeners[%d].tls is required on a TLS listener: mode Passthrough, or Terminate with certificateRefs", i)
			}
		default:
			accepted, acceptedReason, protocolServed = false, string(gwv1.ListenerReasonUnsupportedProtocol), false
			acceptedMsg = fmt.Sprintf("spec.listeners[%d].protocol %q is not supported; use HTTP, HTTPS or TLS", i, spec.Protocol)
		}
		host := ""
		if spec.Hostname != nil {
			host = strings.ToLower(string(*spec.Hostname))
		}
		cp := b.opts.ContainerPort(int32(spec.Port))
		switch {
		case !accepted:
		case slices.Contains(b.opts.ReservedPorts, cp):
			accepted, acceptedReason = false, string(gwv1.ListenerReasonPortUnavailable)
			acceptedMsg = fmt.Sprintf("spec.listeners[%d].port %d: the data plane uses port %d itself; choose another port", i, spec.Port, cp)
		case len(containers[cp]) > 1:
			accepted, acceptedReason = false, string(gwv1.ListenerReasonPortUnavailable)
			acceptedMsg = fmt.Sprintf("spec.listeners[%d].port %d: another listener's port also binds %d in the data plane (ports below 1024 bind %d higher)", i, spec.Port, cp, b.opts.PrivilegedPortOffset)
		case len(protocols[spec.Port]) > 1:
			conflicted, conflictReason = true, string(gwv1.ListenerReasonProtocolConflict)
			conflictMsg = fmt.Sprintf("spec.listeners[%d]: listeners on port %d have different protocols", i, spec.Port)
		case hostnames[listenerKey(spec)] > 1:
			conflicted, conflictReason = true, string(gwv1.ListenerReasonHostnameConflict)
			conflictMsg = fmt.Sprintf("spec.listeners[%d]: another listener on port %d has hostname %q", i, spec.Port, host)
		}

		ls.kinds, resolved, resolvedReason, resolvedMsg = routeKinds(spec, i, b.opts.Unwatched, resolved, resolvedReason, resolvedMsg)
		if !protocolServed {
			// Nothing can attach to a listener Weir cannot serve at all.
			ls.kinds = nil
		}
		certsOK := true
		if accepted && (spec.Protocol == gwv1.HTTPSProtocolType || spec.Protocol == gwv1.TLSProtocolType && !passthrough(spec)) {
			var reason, msg string
			if certsOK, reason, msg = b.listenerCertificates(g, ls); !certsOK {
				resolved, resolvedReason, resolvedMsg = false, reason, msg
			}
		}
		var clientCA *ir.ClientValidation
		if accepted && certsOK && (spec.Protocol == gwv1.HTTPSProtocolType || spec.Protocol == gwv1.TLSProtocolType && !passthrough(spec)) {
			var reason, msg string
			clientCA, reason, msg = b.clientValidation(g, spec)
			if reason != "" {
				resolved, resolvedReason, resolvedMsg = false, reason, msg
			}
			if clientCA == nil && reason != "" {
				accepted, acceptedReason = false, string(gwv1.ListenerReasonNoValidCACertificate)
				acceptedMsg = fmt.Sprintf("spec.listeners[%d]: no client CA certificate could be read, so no client would be let in: %s", i, msg)
			}
		}
		// A listener with some route kinds Weir does not serve still serves
		// the others; one with a bad certificate serves nothing.
		ls.attachable = accepted && !conflicted && len(ls.kinds) > 0
		ls.valid = ls.attachable && certsOK
		ls.status.SupportedKinds = ls.kinds
		if ls.status.SupportedKinds == nil {
			ls.status.SupportedKinds = []gwv1.RouteGroupKind{}
		}
		gen := gw.Generation
		setCondition(&ls.status.Conditions, gen, string(gwv1.ListenerConditionAccepted), accepted, acceptedReason, acceptedMsg)
		setCondition(&ls.status.Conditions, gen, string(gwv1.ListenerConditionResolvedRefs), resolved, resolvedReason, resolvedMsg)
		setCondition(&ls.status.Conditions, gen, string(gwv1.ListenerConditionConflicted), conflicted, conflictReason, conflictMsg)
		if ls.valid {
			setCondition(&ls.status.Conditions, gen, string(gwv1.ListenerConditionProgrammed), true, string(gwv1.ListenerReasonProgrammed), "the listener is served")
		} else {
			setCondition(&ls.status.Conditions, gen, string(gwv1.ListenerConditionProgrammed), false, string(gwv1.ListenerReasonInvalid), "the listener is not served: see its other conditions")
			continue
		}
		l := &ir.Listener{
			Name:             string(spec.Name),
			Port:             b.opts.ContainerPort(int32(spec.Port)),
			Protocol:         ir.ProtocolHTTP,
			Hostname:         host,
			Certificates:     ls.certs,
			ClientValidation: clientCA,
			Provenance:       ir.Provenance{g.frag.Source},
			Field:            fmt.Sprintf("spec.listeners[%d]", i),
		}
		switch spec.Protocol {
		case gwv1.HTTPSProtocolType:
			l.Protocol = ir.ProtocolHTTPS
		case gwv1.TLSProtocolType:
			l.Protocol = ir.ProtocolTLSTerminate
			if passthrough(spec) {
				l.Protocol = ir.ProtocolTLSPassthrough
			}
		}
		g.frag.Listeners = append(g.frag.Listeners, l)
	}
}

// passthrough reports whether a listener forwards TLS without terminating
// it; tls.mode defaults to Terminate.
func passthrough(spec *gwv1.Listener) bool {
	return spec.TLS != nil && spec.TLS.Mode != nil && *spec.TLS.Mode == gwv1.TLSModePassthrough
}

// listenerKey is a listener's port and hostname, which must be unique.
func listenerKey(spec *gwv1.Listener) string {
	host := ""
	if spec.Hostname != nil {
		host = strings.ToLower(string(*spec.Hostname))
	}
	return fmt.Sprintf("%d/%s", spec.Port, host)
}

// routeKinds returns the route kinds a listener allows that Weir serves,
// and a ResolvedRefs failure for any it does not.
func routeKinds(spec *gwv1.Listener, i int, unwatched []string, resolved bool, reason, msg string) ([]gwv1.RouteGroupKind, bool, string, string) {
	supported := slices.DeleteFunc(slices.Clone(map[gwv1.ProtocolType][]gwv1.Kind{
		gwv1.HTTPProtocolType:  {RouteKind, GRPCRouteKind},
		gwv1.HTTPSProtocolType: {RouteKind, GRPCRouteKind},
		gwv1.TLSProtocolType:   {TLSRouteKind},
	}[spec.Protocol]), func(k gwv1.Kind) bool { return slices.Contains(unwatched, string(k)) })
	group := gwv1.Group(gwv1.GroupName)
	if spec.AllowedRoutes == nil || len(spec.AllowedRoutes.Kinds) == 0 {
		var out []gwv1.RouteGroupKind
		for _, k := range supported {
			out = append(out, gwv1.RouteGroupKind{Group: &group, Kind: k})
		}
		return out, resolved, reason, msg
	}
	var out []gwv1.RouteGroupKind
	for j, k := range spec.AllowedRoutes.Kinds {
		g := gwv1.Group(gwv1.GroupName)
		if k.Group != nil {
			g = *k.Group
		}
		if g == gwv1.GroupName && slices.Contains(supported, k.Kind) {
			out = append(out, gwv1.RouteGroupKind{Group: &group, Kind: k.Kind})
			continue
		}
		resolved, reason = false, string(gwv1.ListenerReasonInvalidRouteKinds)
		msg = fmt.Sprintf("spec.listeners[%d].allowedRoutes.kinds[%d]: %s/%s routes are not supported on a %s listener", i, j, g, k.Kind, spec.Protocol)
	}
	return out, resolved, reason, msg
}

// clientValidation is the frontend TLS validation of the listener's port
// (spec.tls.frontend: the port's own, else the default): the client CA
// bundle from its ConfigMaps. A reference that cannot be read is reported
// (reason, msg) and left out; nil with a reason means none could be read.
func (b *builder) clientValidation(g *gatewayState, spec *gwv1.Listener) (*ir.ClientValidation, string, string) {
	ft := g.gw.Spec.TLS
	if ft == nil || ft.Frontend == nil {
		return nil, "", ""
	}
	v, field := ft.Frontend.Default.Validation, "spec.tls.frontend.default.validation"
	for k, pp := range ft.Frontend.PerPort {
		if pp.Port == spec.Port {
			v, field = pp.TLS.Validation, fmt.Sprintf("spec.tls.frontend.perPort[%d].tls.validation", k)
		}
	}
	if v == nil {
		return nil, "", ""
	}
	var bundle []byte
	reason, msg := "", ""
	fail := func(r, format string, args ...any) {
		if reason == "" {
			reason, msg = r, fmt.Sprintf(format, args...)
		}
	}
	for j, ref := range v.CACertificateRefs {
		rfield := fmt.Sprintf("%s.caCertificateRefs[%d]", field, j)
		if ref.Group != "" || ref.Kind != "ConfigMap" {
			fail(string(gwv1.ListenerReasonInvalidCACertificateKind), "%s: %s %q: client CA certificates are read from core ConfigMaps only", rfield, ref.Kind, ref.Name)
			continue
		}
		ns, granted := b.gatewayRef(g, "ConfigMap", ref.Namespace, string(ref.Name))
		if !granted {
			fail(string(gwv1.ListenerReasonRefNotPermitted), "%s: no ReferenceGrant in namespace %s lets Gateways in %s use ConfigMap %s", rfield, ns, g.gw.Namespace, ref.Name)
			continue
		}
		var cm *corev1.ConfigMap
		var err error = apierrs.NewNotFound(corev1.Resource("configmaps"), string(ref.Name))
		if b.listers.ConfigMaps != nil {
			cm, err = b.listers.ConfigMaps.ConfigMaps(ns).Get(string(ref.Name))
		}
		if err != nil {
			fail(string(gwv1.ListenerReasonInvalidCACertificateRef), "%s: ConfigMap %s/%s cannot be read: %v", rfield, ns, ref.Name, err)
			continue
		}
		pemData := []byte(cm.Data[caCertKey])
		if _, err := envoycheck.CABundle(pemData); err != nil {
			fail(string(gwv1.ListenerReasonInvalidCACertificateRef), "%s: ConfigMap %s/%s, %s: %v", rfield, ns, ref.Name, caCertKey, err)
			continue
		}
		bundle = append(append(bundle, pemData...), '\n')
	}
	if len(bundle) == 0 {
		if reason == "" {
			reason, msg = string(gwv1.ListenerReasonInvalidCACertificateRef), field+".caCertificateRefs: none listed"
		}
		return nil, reason, msg
	}
	return &ir.ClientValidation{CACertificates: bundle, AllowInsecureFallback: v.Mode == gwv1.AllowInsecureFallback}, reason, msg
}

// caCertKey is where a ConfigMap holds a CA bundle, as Gateway API says.
const caCertKey = "ca.crt"

// gatewayRef is the namespace of a core object (kind) that Gateway g
// refers to, and whether a ReferenceGrant lets it when it is not g's own.
func (b *builder) gatewayRef(g *gatewayState, kind string, ns *gwv1.Namespace, name string) (string, bool) {
	if ns == nil || string(*ns) == g.gw.Namespace {
		return g.gw.Namespace, true
	}
	return string(*ns), b.grants.allows(gwv1.GroupName, "Gateway", g.gw.Namespace, "", kind, string(*ns), name)
}

// backendClientCertificate loads the certificate g presents to backends
// it connects to over TLS (spec.tls.backend.clientCertificateRef). One
// that cannot be read is reported in the Gateway's ResolvedRefs, and
// backends are connected to without one.
func (b *builder) backendClientCertificate(g *gatewayState) {
	tls := g.gw.Spec.TLS
	if tls == nil || tls.Backend == nil || tls.Backend.ClientCertificateRef == nil {
		return
	}
	const field = "spec.tls.backend.clientCertificateRef"
	ref := tls.Backend.ClientCertificateRef
	fail := func(reason, format string, args ...any) {
		g.refsReason, g.refsMsg = reason, field+": "+fmt.Sprintf(format, args...)
	}
	if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Secret") {
		fail(string(gwv1.GatewayReasonInvalidClientCertificateRef), "only core Secrets hold client certificates")
		return
	}
	ns, granted := b.gatewayRef(g, "Secret", ref.Namespace, string(ref.Name))
	if !granted {
		fail(string(gwv1.GatewayReasonRefNotPermitted), "no ReferenceGrant in namespace %s lets Gateways in %s use Secret %s", ns, g.gw.Namespace, ref.Name)
		return
	}
	chain, key, problem := b.tlsSecret(ns, string(ref.Name))
	if problem != "" {
		fail(string(gwv1.GatewayReasonInvalidClientCertificateRef), "%s", problem)
		return
	}
	name := ns + "/" + string(ref.Name)
	if !slices.ContainsFunc(g.frag.Certificates, func(c *ir.Certificate) bool { return c.Name == name }) {
		g.frag.Certificates = append(g.frag.Certificates, &ir.Certificate{
			Name: name, CertChain: chain, PrivateKey: key, Provenance: ir.Provenance{g.frag.Source}, Field: field,
		})
	}
	g.clientCert = name
}

// tlsSecret reads a kubernetes.io/tls Secret's key pair, or says why it
// cannot be used; the reason never holds key bytes.
func (b *builder) tlsSecret(ns, name string) (chain, key []byte, problem string) {
	return secrets.TLSKeyPair(b.listers.Secrets, ns, name)
}

// listenerCertificates loads the certificates of an HTTPS listener.
func (b *builder) listenerCertificates(g *gatewayState, ls *listenerState) (bool, string, string) {
	spec, i := ls.spec, ls.index
	if spec.TLS == nil || len(spec.TLS.CertificateRefs) == 0 {
		return false, string(gwv1.ListenerReasonInvalidCertificateRef), fmt.Sprintf("spec.listeners[%d].tls.certificateRefs: a listener that terminates TLS needs a certificate", i)
	}
	if passthrough(spec) {
		return false, string(gwv1.ListenerReasonInvalidCertificateRef), fmt.Sprintf("spec.listeners[%d].tls.mode: an HTTPS listener terminates TLS; for passthrough use protocol TLS", i)
	}
	ok, reason, msg := true, "", ""
	fail := func(r, format string, args ...any) {
		if ok {
			ok, reason, msg = false, r, fmt.Sprintf(format, args...)
		}
	}
	for j, ref := range spec.TLS.CertificateRefs {
		field := fmt.Sprintf("spec.listeners[%d].tls.certificateRefs[%d]", i, j)
		if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Secret") {
			fail(string(gwv1.ListenerReasonInvalidCertificateRef), "%s: only core Secrets hold certificates", field)
			continue
		}
		ns, granted := b.gatewayRef(g, "Secret", ref.Namespace, string(ref.Name))
		if !granted {
			fail(string(gwv1.ListenerReasonRefNotPermitted), "%s: no ReferenceGrant in namespace %s lets Gateways in %s use Secret %s", field, ns, g.gw.Namespace, ref.Name)
			continue
		}
		chain, key, problem := b.tlsSecret(ns, string(ref.Name))
		if problem != "" {
			fail(string(gwv1.ListenerReasonInvalidCertificateRef), "%s: %s", field, problem)
			continue
		}
		name := ns + "/" + string(ref.Name)
		if !slices.ContainsFunc(g.frag.Certificates, func(c *ir.Certificate) bool { return c.Name == name }) {
			g.frag.Certificates = append(g.frag.Certificates, &ir.Certificate{
				Name: name, CertChain: chain, PrivateKey: key, Provenance: ir.Provenance{g.frag.Source}, Field: field,
			})
		}
		ls.certs = append(ls.certs, name)
	}
	return ok, reason, msg
}

// finish sets the Gateway conditions and attached route counts, and builds
// each Gateway's virtual hosts from its attachments.
func (b *builder) finish() {
	for _, g := range b.order {
		gen := g.gw.Generation
		if g.refsReason != "" {
			setCondition(&g.status.Conditions, gen, string(gwv1.GatewayConditionResolvedRefs), false, g.refsReason, g.refsMsg)
		} else {
			setCondition(&g.status.Conditions, gen, string(gwv1.GatewayConditionResolvedRefs), true, string(gwv1.GatewayReasonResolvedRefs), "the Gateway's references are resolved")
		}
		programmed := 0
		for _, ls := range g.listeners {
			ls.status.AttachedRoutes = int32(countRoutes(g.attachments[string(ls.spec.Name)])) //nolint:gosec // bounded by the routes
			g.status.Listeners = append(g.status.Listeners, *ls.status)
			if ls.valid {
				programmed++
			}
		}
		if g.addressProblem != "" {
			for i := range g.status.Listeners {
				setCondition(&g.status.Listeners[i].Conditions, gen, string(gwv1.ListenerConditionProgrammed), false, string(gwv1.ListenerReasonInvalid), "the Gateway is not accepted")
			}
			setCondition(&g.status.Conditions, gen, string(gwv1.GatewayConditionAccepted), false, string(gwv1.GatewayReasonUnsupportedAddress), g.addressProblem)
			setCondition(&g.status.Conditions, gen, string(gwv1.GatewayConditionProgrammed), false, string(gwv1.GatewayReasonInvalid), "the Gateway is not accepted")
			delete(b.res.Parameters, types.NamespacedName{Namespace: g.gw.Namespace, Name: g.gw.Name})
			delete(b.res.KeepDataPlanes, types.NamespacedName{Namespace: g.gw.Namespace, Name: g.gw.Name})
			continue
		}
		if len(g.listeners) > 0 && programmed == 0 {
			setCondition(&g.status.Conditions, gen, string(gwv1.GatewayConditionAccepted), false, string(gwv1.GatewayReasonListenersNotValid), "no listener is valid: see the listener conditions")
			setCondition(&g.status.Conditions, gen, string(gwv1.GatewayConditionProgrammed), false, string(gwv1.GatewayReasonInvalid), "no listener is served")
			continue
		}
		if programmed < len(g.listeners) {
			setCondition(&g.status.Conditions, gen, string(gwv1.GatewayConditionAccepted), true, string(gwv1.GatewayReasonListenersNotValid), "some listeners are not valid: see their conditions")
		} else {
			setCondition(&g.status.Conditions, gen, string(gwv1.GatewayConditionAccepted), true, string(gwv1.GatewayReasonAccepted), "the Gateway is valid")
		}
		setCondition(&g.status.Conditions, gen, string(gwv1.GatewayConditionProgrammed), true, string(gwv1.GatewayReasonProgrammed), "the Gateway's listeners are served")
		if g.paramsProblem != "" {
			// Its routes keep being served by the data plane it has.
			setCondition(&g.status.Conditions, gen, string(gwv1.GatewayConditionAccepted), false, string(gwv1.GatewayReasonInvalidParameters),
				g.paramsProblem+"; the data plane is left as it was and keeps serving")
		}
		if slices.ContainsFunc(g.frag.Listeners, func(l *ir.Listener) bool {
			return l.ClientValidation != nil && l.ClientValidation.AllowInsecureFallback
		}) {
			setCondition(&g.status.Conditions, gen, string(gwv1.GatewayConditionInsecureFrontendValidationMode), true, string(gwv1.GatewayReasonConfigurationChanged),
				"spec.tls.frontend lets clients in without a valid certificate (AllowInsecureFallback)")
		}
		if ips, _ := StaticAddresses(g.gw); len(ips) > 0 && !b.opts.StaticAddresses {
			setCondition(&g.status.Conditions, gen, string(gwv1.GatewayConditionProgrammed), false, string(gwv1.GatewayReasonAddressNotUsable),
				"the listeners are served on this machine's own addresses: remove the values of spec.addresses")
		}
		b.virtualHosts(g)
		b.tlsRoutes(g)
		renamed := map[string]string{}
		for _, name := range sortedKeys(g.backends) {
			be := g.backends[name]
			if be.TLS != nil && g.clientCert != "" {
				// Backends are shared by the Gateways a route attaches
				// to; the certificate is this Gateway's. The name says
				// which, so that where Gateways share one cluster table
				// (weir run) each presents its own certificate.
				cp, tls := *be, *be.TLS
				tls.ClientCertificate = g.clientCert
				cp.TLS = &tls
				cp.Name = clientCertBackendName(be.Name, g.clientCert)
				renamed[be.Name] = cp.Name
				be = &cp
			}
			g.frag.Backends = append(g.frag.Backends, be)
		}
		renameBackendRefs(g.frag, renamed)
		b.res.Fragments = append(b.res.Fragments, g.frag)
	}
	slices.SortFunc(b.res.Fragments, func(a, c *ir.Fragment) int {
		return strings.Compare(a.Source.Namespace+"/"+a.Source.Name, c.Source.Namespace+"/"+c.Source.Name)
	})
}

// clientCertBackendName names the cluster of backend when a Gateway
// presents the client certificate cert to it: Gateways presenting the
// same certificate share it, others do not.
func clientCertBackendName(backend, cert string) string {
	return backend + "+client-cert=" + cert
}

// renameBackendRefs points f's routes at the renamed backends. Routes are
// shared between Gateways and listeners, so a changed one is a copy.
func renameBackendRefs(f *ir.Fragment, renamed map[string]string) {
	if len(renamed) == 0 {
		return
	}
	// rename returns a renamed copy of bs, or nil if nothing in it is
	// renamed.
	rename := func(bs []ir.WeightedBackend) []ir.WeightedBackend {
		var out []ir.WeightedBackend
		for i, wb := range bs {
			if to, ok := renamed[wb.BackendName]; ok && !wb.Unresolved {
				if out == nil {
					out = slices.Clone(bs)
				}
				out[i].BackendName = to
			}
		}
		return out
	}
	for vi, vh := range f.VirtualHosts {
		var routes []*ir.Route
		for ri, r := range vh.Routes {
			backends := rename(r.Backends)
			var mirrors []ir.Mirror
			for mi, m := range r.Mirrors {
				if to, ok := renamed[m.BackendName]; ok {
					if mirrors == nil {
						mirrors = slices.Clone(r.Mirrors)
					}
					mirrors[mi].BackendName = to
				}
			}
			if backends == nil && mirrors == nil {
				continue
			}
			if routes == nil {
				routes = slices.Clone(vh.Routes)
			}
			rc := *r
			if backends != nil {
				rc.Backends = backends
			}
			if mirrors != nil {
				rc.Mirrors = mirrors
			}
			routes[ri] = &rc
		}
		if routes != nil {
			vc := *vh
			vc.Routes = routes
			f.VirtualHosts[vi] = &vc
		}
	}
	for _, tr := range f.TLSRoutes {
		// Each TLSRoute is already this Gateway's copy.
		if bs := rename(tr.Backends); bs != nil {
			tr.Backends = bs
		}
	}
}

// setCondition sets a condition without a transition time; SetConditions
// gives it one when it is written.
func setCondition(conds *[]metav1.Condition, generation int64, typ string, status bool, reason, message string) {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	for i := range *conds {
		if (*conds)[i].Type == typ {
			(*conds)[i] = metav1.Condition{Type: typ, Status: s, Reason: reason, Message: message, ObservedGeneration: generation}
			return
		}
	}
	*conds = append(*conds, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: message, ObservedGeneration: generation})
}

// SetConditions writes next over prev: a condition whose status did not
// change keeps its LastTransitionTime; others get now.
func SetConditions(prev []metav1.Condition, next []metav1.Condition, now metav1.Time) []metav1.Condition {
	out := make([]metav1.Condition, len(next))
	for i, c := range next {
		c.LastTransitionTime = now
		if old := meta.FindStatusCondition(prev, c.Type); old != nil && old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
		out[i] = c
	}
	return out
}

func compareAge(a, c *metav1.ObjectMeta) int {
	if !a.CreationTimestamp.Equal(&c.CreationTimestamp) {
		if a.CreationTimestamp.Before(&c.CreationTimestamp) {
			return -1
		}
		return 1
	}
	return strings.Compare(a.Namespace+"/"+a.Name, c.Namespace+"/"+c.Name)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// StaticAddresses are the IP addresses a Gateway asks for in
// spec.addresses, or why they cannot be served. An IPAddress entry without
// a value asks for any address, which every Gateway gets; a Hostname or
// any other type cannot be assigned.
func StaticAddresses(gw *gwv1.Gateway) ([]netip.Addr, string) {
	var out []netip.Addr
	for i, a := range gw.Spec.Addresses {
		if a.Type != nil && *a.Type != gwv1.IPAddressType {
			return nil, fmt.Sprintf("spec.addresses[%d].type %q is not supported: a Gateway's Service can be given only IP addresses", i, *a.Type)
		}
		if a.Value == "" {
			continue
		}
		ip, err := netip.ParseAddr(a.Value)
		if err != nil || ip.Zone() != "" {
			return nil, fmt.Sprintf("spec.addresses[%d].value %q is not an IP address", i, a.Value)
		}
		out = append(out, ip)
	}
	return out, ""
}
