package gateway

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weir-dev/weir/pkg/envoycheck"
	"github.com/weir-dev/weir/pkg/ir"
)

// BackendTLSPolicyKind is the ir.ObjectRef kind of a BackendTLSPolicy.
const BackendTLSPolicyKind = "BackendTLSPolicy"

// maxPolicyAncestors is the CRD's bound on status.ancestors.
const maxPolicyAncestors = 16

// tlsPolicy is one BackendTLSPolicy as the builder resolved it.
type tlsPolicy struct {
	obj *gwv1.BackendTLSPolicy
	// tls is what a backend it applies to connects with; nil when the
	// policy cannot be used (accepted is false).
	tls *ir.BackendTLS
	// accepted, with reason and msg, is the policy's own validity; a
	// conflict with another policy is per target (lost).
	accepted            bool
	reason, msg         string
	refsReason, refsMsg string
	// lost says, for each target another policy won, which one.
	lost []string
	// ancestors are the Gateways whose routes use a Service it targets.
	ancestors map[types.NamespacedName]bool
}

func (p *tlsPolicy) String() string {
	return fmt.Sprintf("BackendTLSPolicy %s/%s", p.obj.Namespace, p.obj.Name)
}

// tlsPolicies indexes BackendTLSPolicies by the Service they target.
type tlsPolicies struct {
	all []*tlsPolicy
	// byTarget holds, per target (tlsTarget), the policies in precedence
	// order: the first applies.
	byTarget map[string][]*tlsPolicy
	// byService holds every policy that targets a Service, for status.
	byService map[types.NamespacedName][]*tlsPolicy
}

// tlsTarget keys a Service, or one of its ports by name.
func tlsTarget(ns, service, port string) string {
	return ns + "/" + service + "#" + port
}

// backendTLSPolicies resolves every policy and decides, per target, which
// one applies: the oldest, then the first by namespace/name, as the spec
// says; the others are Conflicted there.
func (b *builder) backendTLSPolicies() {
	idx := &tlsPolicies{byTarget: map[string][]*tlsPolicy{}, byService: map[types.NamespacedName][]*tlsPolicy{}}
	pols := slices.Clone(b.objs.BackendTLSPolicies)
	slices.SortFunc(pols, func(a, c *gwv1.BackendTLSPolicy) int { return compareAge(&a.ObjectMeta, &c.ObjectMeta) })
	for _, obj := range pols {
		p := b.resolveTLSPolicy(obj)
		idx.all = append(idx.all, p)
		seen := map[types.NamespacedName]bool{}
		for _, t := range obj.Spec.TargetRefs {
			if t.Group != "" || t.Kind != "Service" {
				continue
			}
			svc := types.NamespacedName{Namespace: obj.Namespace, Name: string(t.Name)}
			if !seen[svc] {
				seen[svc] = true
				idx.byService[svc] = append(idx.byService[svc], p)
			}
			section := string(ptr.Deref(t.SectionName, ""))
			key := tlsTarget(obj.Namespace, string(t.Name), section)
			if winners := idx.byTarget[key]; len(winners) > 0 {
				what := "Service " + svc.String()
				if section != "" {
					what += ", port " + section
				}
				p.lost = append(p.lost, fmt.Sprintf("the older %s targets %s too, and applies there instead", winners[0], what))
			}
			idx.byTarget[key] = append(idx.byTarget[key], p)
		}
	}
	b.tlsPolicies = idx
}

// resolveTLSPolicy reads a policy's CA certificates and names.
func (b *builder) resolveTLSPolicy(obj *gwv1.BackendTLSPolicy) *tlsPolicy {
	p := &tlsPolicy{obj: obj, ancestors: map[types.NamespacedName]bool{}}
	refuse := func(reason, format string, args ...any) *tlsPolicy {
		p.accepted, p.reason, p.msg = false, reason, fmt.Sprintf(format, args...)
		return p
	}
	v := obj.Spec.Validation
	tls := &ir.BackendTLS{ServerName: string(v.Hostname), Source: &ir.ObjectRef{Kind: BackendTLSPolicyKind, Namespace: obj.Namespace, Name: obj.Name}}
	if len(obj.Spec.Options) > 0 {
		keys := make([]string, 0, len(obj.Spec.Options))
		for k := range obj.Spec.Options {
			keys = append(keys, string(k))
		}
		sort.Strings(keys)
		return refuse(string(gwv1.PolicyReasonInvalid), "spec.options: Weir supports no TLS options; remove %s", strings.Join(keys, ", "))
	}
	for i, san := range v.SubjectAltNames {
		switch san.Type {
		case gwv1.HostnameSubjectAltNameType:
			tls.SubjectAltNames = append(tls.SubjectAltNames, ir.SubjectAltName{Value: string(san.Hostname)})
		case gwv1.URISubjectAltNameType:
			tls.SubjectAltNames = append(tls.SubjectAltNames, ir.SubjectAltName{URI: true, Value: string(san.URI)})
		default:
			return refuse(string(gwv1.PolicyReasonInvalid), "spec.validation.subjectAltNames[%d].type: %q is neither Hostname nor URI", i, san.Type)
		}
	}
	if wk := v.WellKnownCACertificates; wk != nil && *wk != "" {
		if *wk != gwv1.WellKnownCACertificatesSystem {
			return refuse(string(gwv1.PolicyReasonInvalid), "spec.validation.wellKnownCACertificates: %q is not supported; use System", *wk)
		}
		// The gateway's system bundle (translate.Options.UpstreamTrustedCA).
		p.tls, p.accepted = tls, true
		p.refsReason, p.refsMsg = string(gwv1.BackendTLSPolicyReasonResolvedRefs), "the gateway's system CA bundle is used"
		return p
	}
	var bundle []byte
	for i, ref := range v.CACertificateRefs {
		field := fmt.Sprintf("spec.validation.caCertificateRefs[%d]", i)
		bad := func(reason, format string, args ...any) {
			if p.refsReason == "" {
				p.refsReason, p.refsMsg = reason, field+": "+fmt.Sprintf(format, args...)
			}
		}
		if ref.Group != "" || ref.Kind != "ConfigMap" {
			bad(string(gwv1.BackendTLSPolicyReasonInvalidKind), "%s %q: CA certificates are read from core ConfigMaps only", ref.Kind, ref.Name)
			continue
		}
		var cm *corev1.ConfigMap
		err := fmt.Errorf("ConfigMaps are not read here")
		if b.listers.ConfigMaps != nil {
			cm, err = b.listers.ConfigMaps.ConfigMaps(obj.Namespace).Get(string(ref.Name))
		}
		if err != nil {
			bad(string(gwv1.BackendTLSPolicyReasonInvalidCACertificateRef), "ConfigMap %s/%s cannot be read: %v", obj.Namespace, ref.Name, err)
			continue
		}
		pemData := []byte(cm.Data[caCertKey])
		if _, err := envoycheck.CABundle(pemData); err != nil {
			bad(string(gwv1.BackendTLSPolicyReasonInvalidCACertificateRef), "ConfigMap %s/%s, %s: %v", obj.Namespace, ref.Name, caCertKey, err)
			continue
		}
		bundle = append(append(bundle, pemData...), '\n')
	}
	if len(bundle) == 0 {
		if p.refsReason == "" {
			p.refsReason, p.refsMsg = string(gwv1.BackendTLSPolicyReasonInvalidCACertificateRef), "spec.validation: neither caCertificateRefs nor wellKnownCACertificates is set"
		}
		return refuse(string(gwv1.BackendTLSPolicyReasonNoValidCACertificate), "no CA certificate could be read (%s); requests to its backends fail until one can", p.refsMsg)
	}
	tls.CACertificates = string(bundle)
	p.tls, p.accepted = tls, true
	if p.refsReason == "" {
		p.refsReason, p.refsMsg = string(gwv1.BackendTLSPolicyReasonResolvedRefs), "every CA certificate reference was read"
	}
	return p
}

// forPort is the policy that applies to a Service port: one that names
// the port wins over one for the whole Service.
func (idx *tlsPolicies) forPort(ns, service, port string) *tlsPolicy {
	if idx == nil {
		return nil
	}
	if port != "" {
		if ps := idx.byTarget[tlsTarget(ns, service, port)]; len(ps) > 0 {
			return ps[0]
		}
	}
	if ps := idx.byTarget[tlsTarget(ns, service, "")]; len(ps) > 0 {
		return ps[0]
	}
	return nil
}

// backendTLS applies the policy for a Service port to be, or says why the
// backend cannot be used: a policy that cannot be honoured must not fall
// back to plaintext.
func (b *builder) backendTLS(be *ir.Backend, port string) string {
	p := b.tlsPolicies.forPort(be.Service.Namespace, be.Service.Name, port)
	if p == nil {
		return ""
	}
	if p.tls == nil {
		return fmt.Sprintf("%s cannot be used: %s", p, p.msg)
	}
	be.TLS = p.tls
	return ""
}

// usesServices records that Gateway g routes to services, which makes it
// an ancestor of every policy that targets them.
func (b *builder) usesServices(g *gatewayState, services map[types.NamespacedName]bool) {
	for svc := range services {
		for _, p := range b.tlsPolicies.byService[svc] {
			p.ancestors[types.NamespacedName{Namespace: g.gw.Namespace, Name: g.gw.Name}] = true
		}
	}
}

// tlsPolicyStatuses reports each policy per ancestor Gateway: Accepted
// (or why not: Conflicted, NoValidCACertificate, Invalid) and
// ResolvedRefs.
func (b *builder) tlsPolicyStatuses() {
	for _, p := range b.tlsPolicies.all {
		nn := types.NamespacedName{Namespace: p.obj.Namespace, Name: p.obj.Name}
		st := &gwv1.PolicyStatus{}
		gen := p.obj.Generation
		for _, gwNN := range sortedNames(p.ancestors) {
			if len(st.Ancestors) == maxPolicyAncestors {
				break
			}
			ns := gwv1.Namespace(gwNN.Namespace)
			a := gwv1.PolicyAncestorStatus{
				AncestorRef:    gwv1.ParentReference{Group: ptr.To(gwv1.Group(gwv1.GroupName)), Kind: ptr.To(gwv1.Kind("Gateway")), Namespace: &ns, Name: gwv1.ObjectName(gwNN.Name)},
				ControllerName: ControllerName,
			}
			accepted, reason, msg := p.accepted, p.reason, p.msg
			if accepted {
				reason, msg = string(gwv1.PolicyReasonAccepted), "the policy applies to its targets' connections from this Gateway"
				if len(p.lost) > 0 {
					accepted, reason, msg = false, string(gwv1.PolicyReasonConflicted), strings.Join(p.lost, "; ")
				}
			}
			setCondition(&a.Conditions, gen, string(gwv1.PolicyConditionAccepted), accepted, reason, msg)
			setCondition(&a.Conditions, gen, string(gwv1.BackendTLSPolicyConditionResolvedRefs), p.refsReason == string(gwv1.BackendTLSPolicyReasonResolvedRefs), p.refsReason, p.refsMsg)
			st.Ancestors = append(st.Ancestors, a)
		}
		b.res.BackendTLSPolicies[nn] = st
	}
}

// NextPolicyStatus is a policy's status with our ancestors replaced by
// ours, and whether it must be written. Other controllers' are kept.
func NextPolicyStatus(prev gwv1.PolicyStatus, ours *gwv1.PolicyStatus, now metav1.Time) (gwv1.PolicyStatus, bool) {
	var next gwv1.PolicyStatus
	for _, a := range prev.Ancestors {
		if a.ControllerName != ControllerName {
			next.Ancestors = append(next.Ancestors, a)
		}
	}
	if ours != nil {
		for _, a := range ours.Ancestors {
			if len(next.Ancestors) == maxPolicyAncestors {
				break
			}
			var was []metav1.Condition
			for _, p := range prev.Ancestors {
				if p.ControllerName == ControllerName && equalIgnoringTimes(p.AncestorRef, a.AncestorRef) {
					was = p.Conditions
				}
			}
			a.Conditions = SetConditions(was, a.Conditions, now)
			next.Ancestors = append(next.Ancestors, a)
		}
	}
	return next, !equalIgnoringTimes(prev, next)
}
