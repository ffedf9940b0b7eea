// Package policy owns Weir's TrafficPolicy (policy.weir.dev/v1alpha1,
// config/120-trafficpolicy.yaml): its API types and validation, which
// targets each policy takes (the older of two policies on one target
// wins), the ir filters it attaches to the routes of its targets, and the
// limits Weir's rate limit service counts for them.
package policy

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/weir-dev/weir/pkg/ir"
)

// Group and Version of TrafficPolicy.
const (
	Group   = "policy.weir.dev"
	Version = "v1alpha1"
	Kind    = "TrafficPolicy"
)

// SchemeGroupVersion is TrafficPolicy's API version.
var SchemeGroupVersion = schema.GroupVersion{Group: Group, Version: Version}

// Resource is the TrafficPolicy resource.
var Resource = SchemeGroupVersion.WithResource("trafficpolicies")

// AddToScheme registers TrafficPolicy and its list.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion, &TrafficPolicy{}, &TrafficPolicyList{})
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}

// TrafficPolicy limits the traffic of its targets.
type TrafficPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TrafficPolicySpec   `json:"spec"`
	Status TrafficPolicyStatus `json:"status,omitempty"`
}

// TrafficPolicyList is a list of TrafficPolicies.
type TrafficPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrafficPolicy `json:"items"`
}

// TrafficPolicySpec says what the policy targets and how it limits them.
type TrafficPolicySpec struct {
	// TargetRefs are the objects whose routes the policy limits, in the
	// policy's namespace: an HTTPRoute, a networking.k8s.io Ingress, a
	// KIngress, or a Service (every route to it). An Ingress or KIngress
	// may instead name the policy in its weir.dev/traffic-policy
	// annotation.
	TargetRefs []TargetRef `json:"targetRefs,omitempty"`
	RateLimit  *RateLimit  `json:"rateLimit,omitempty"`
	// Concurrency bounds the requests in flight to a Service target, per
	// gateway and Service port (Envoy's cluster circuit breaker).
	Concurrency *Concurrency `json:"concurrency,omitempty"`
	// BlockResponse is the answer to a refused request; 429 with
	// Retry-After when unset.
	BlockResponse *BlockResponse `json:"blockResponse,omitempty"`
}

// TargetRef names a target in the policy's namespace.
type TargetRef struct {
	Group string `json:"group"`
	Kind  string `json:"kind"`
	Name  string `json:"name"`
	// SectionName names one rule of an HTTPRoute.
	SectionName *string `json:"sectionName,omitempty"`
}

// RateLimit is a requests-per-second limit.
type RateLimit struct {
	// QPS is the number of requests admitted a second.
	QPS float64 `json:"qps"`
	// Scope Global counts over every gateway, in Weir's rate limit
	// service; PerGateway in each gateway.
	Scope string `json:"scope,omitempty"`
	// By partitions the count; unset counts the whole target.
	By *RateLimitBy `json:"by,omitempty"`
	// ControlBehavior Reject refuses a request over the limit; Throttle
	// makes it wait its turn up to MaxQueueingTime.
	ControlBehavior string           `json:"controlBehavior,omitempty"`
	MaxQueueingTime *metav1.Duration `json:"maxQueueingTime,omitempty"`
	WarmUp          *WarmUp          `json:"warmUp,omitempty"`
	// FailureMode is what a gateway does while the rate limit service
	// does not answer: Allow (the default) or Deny.
	FailureMode string `json:"failureMode,omitempty"`
}

// Concurrency is a bound on requests in flight.
type Concurrency struct {
	// MaxConcurrency requests may be in flight at once to each port of
	// the Service, counted by each gateway on its own; the next is
	// answered 503 with x-envoy-overloaded and not sent.
	MaxConcurrency int32 `json:"maxConcurrency"`
}

// RateLimitBy is what a limit counts separately.
type RateLimitBy struct {
	// Type is ClientIP or Header.
	Type   string `json:"type"`
	Header string `json:"header,omitempty"`
}

// WarmUp starts a limit at QPS/ColdFactor and raises it over Period.
type WarmUp struct {
	Period     metav1.Duration `json:"period"`
	ColdFactor uint32          `json:"coldFactor,omitempty"`
}

// BlockResponse is the answer to a refused request.
type BlockResponse struct {
	Status  int32            `json:"status,omitempty"`
	Body    string           `json:"body,omitempty"`
	Headers []ResponseHeader `json:"headers,omitempty"`
}

// ResponseHeader is a header of the block response.
type ResponseHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// TrafficPolicyStatus has Gateway API's policy conditions per target.
type TrafficPolicyStatus struct {
	Ancestors []AncestorStatus `json:"ancestors,omitempty"`
}

// AncestorStatus is the policy's conditions for one target.
type AncestorStatus struct {
	AncestorRef TargetRef          `json:"ancestorRef"`
	Conditions  []metav1.Condition `json:"conditions,omitempty"`
}

// DeepCopyObject implements runtime.Object. The type is small and read
// rarely, so a JSON round trip stands in for generated code.
func (p *TrafficPolicy) DeepCopyObject() runtime.Object {
	if p == nil {
		return nil
	}
	out := &TrafficPolicy{}
	b, err := json.Marshal(p)
	if err == nil {
		err = json.Unmarshal(b, out)
	}
	if err != nil {
		panic(fmt.Sprintf("copying a TrafficPolicy: %v", err))
	}
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *TrafficPolicyList) DeepCopyObject() runtime.Object {
	if l == nil {
		return nil
	}
	out := &TrafficPolicyList{TypeMeta: l.TypeMeta, ListMeta: *l.ListMeta.DeepCopy()}
	for i := range l.Items {
		out.Items = append(out.Items, *l.Items[i].DeepCopyObject().(*TrafficPolicy))
	}
	return out
}

// Values of the spec's enumerations.
const (
	ScopeGlobal     = "Global"
	ScopePerGateway = "PerGateway"
	ByClientIP      = "ClientIP"
	ByHeader        = "Header"
	BehaviorReject  = "Reject"
	// BehaviorThrottle queues requests over the limit.
	BehaviorThrottle   = "Throttle"
	FailureModeAllow   = "Allow"
	FailureModeDeny    = "Deny"
	defaultColdFactor  = 3
	defaultBlockStatus = 429
)

// FieldError is a problem with one field of a spec.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return "spec." + e.Field + ": " + e.Reason }

func invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Validate says what in the spec Weir cannot serve, naming the field. The
// CRD's schema refuses most of it first; `weir run` has no schema.
func (s *TrafficPolicySpec) Validate() error {
	for i, t := range s.TargetRefs {
		f := fmt.Sprintf("targetRefs[%d]", i)
		if errs := validation.IsDNS1123Subdomain(t.Name); len(errs) > 0 {
			return invalid(f+".name", "%q: %s", t.Name, strings.Join(errs, "; "))
		}
		k, ok := targetKinds[GroupKind{t.Group, t.Kind}]
		if !ok {
			return invalid(f+".kind", "%s %q is not a target; a TrafficPolicy targets an HTTPRoute (gateway.networking.k8s.io), an Ingress (networking.k8s.io), a KIngress (networking.internal.knative.dev Ingress) or a Service (core, group \"\")", t.Kind, t.Group)
		}
		if t.SectionName != nil && k != "HTTPRoute" {
			return invalid(f+".sectionName", "only an HTTPRoute's rule can be targeted")
		}
		if t.SectionName != nil {
			return invalid(f+".sectionName", "targeting one rule of an HTTPRoute is not supported yet; target the HTTPRoute")
		}
	}
	if c := s.Concurrency; c != nil {
		if c.MaxConcurrency < 1 || c.MaxConcurrency > maxConcurrency {
			return invalid("concurrency.maxConcurrency", "%d is not from 1 to %d", c.MaxConcurrency, maxConcurrency)
		}
		for i, t := range s.TargetRefs {
			if targetKinds[GroupKind{t.Group, t.Kind}] != serviceKind {
				return invalid(fmt.Sprintf("targetRefs[%d]", i), "%s %s: concurrency is counted per Service (Envoy's cluster circuit breaker); target Services", t.Kind, t.Name)
			}
		}
	}
	rl := s.RateLimit
	if rl == nil {
		if s.Concurrency == nil {
			return invalid("rateLimit", "a TrafficPolicy needs a rateLimit or a concurrency")
		}
		if s.BlockResponse != nil {
			// A concurrency bound answers Envoy's overflow, 503.
			return invalid("blockResponse", "only a rateLimit's refusals take a block response")
		}
		return nil
	}
	switch rl.Scope {
	case "", ScopeGlobal:
	case ScopePerGateway:
		return invalid("rateLimit.scope", "PerGateway is not supported yet; use Global")
	default:
		return invalid("rateLimit.scope", "%q is neither Global nor PerGateway", rl.Scope)
	}
	if rl.By != nil {
		switch rl.By.Type {
		case ByClientIP:
			if rl.By.Header != "" {
				return invalid("rateLimit.by.header", "only with type Header")
			}
		case ByHeader:
			if !httpguts.ValidHeaderFieldName(rl.By.Header) || strings.HasPrefix(rl.By.Header, ":") {
				return invalid("rateLimit.by.header", "%q is not a header name", rl.By.Header)
			}
		default:
			return invalid("rateLimit.by.type", "%q is neither ClientIP nor Header", rl.By.Type)
		}
	}
	switch rl.ControlBehavior {
	case "", BehaviorReject:
		if rl.MaxQueueingTime != nil {
			return invalid("rateLimit.maxQueueingTime", "only with controlBehavior Throttle")
		}
	case BehaviorThrottle:
		if rl.MaxQueueingTime == nil {
			return invalid("rateLimit.maxQueueingTime", "required with controlBehavior Throttle")
		}
	default:
		return invalid("rateLimit.controlBehavior", "%q is neither Reject nor Throttle", rl.ControlBehavior)
	}
	if w := rl.WarmUp; w != nil && w.Period.Duration < time.Second {
		return invalid("rateLimit.warmUp.period", "%v; at least a second", w.Period.Duration)
	}
	switch rl.FailureMode {
	case "", FailureModeAllow, FailureModeDeny:
	default:
		return invalid("rateLimit.failureMode", "%q is neither Allow nor Deny", rl.FailureMode)
	}
	// What the rate limit service can count, as limitOf gives it.
	if field, reason := limitOf(&TrafficPolicy{Spec: *s}, ir.ObjectRef{}).Check(); field != "" {
		return invalid("rateLimit."+field, "%s", reason)
	}
	if b := s.BlockResponse; b != nil {
		if b.Status != 0 && b.Status != defaultBlockStatus {
			return invalid("blockResponse.status", "a global limit answers 429; another status is not supported yet")
		}
		if len(b.Body) > maxBlockBody {
			return invalid("blockResponse.body", "%d bytes; at most %d", len(b.Body), maxBlockBody)
		}
		if len(b.Headers) > maxBlockHeaders {
			return invalid("blockResponse.headers", "%d headers; at most %d", len(b.Headers), maxBlockHeaders)
		}
		for i, h := range b.Headers {
			name := strings.ToLower(h.Name)
			switch {
			case !httpguts.ValidHeaderFieldName(h.Name) || !httpguts.ValidHeaderFieldValue(h.Value) || len(h.Value) > maxBlockBody:
				return invalid(fmt.Sprintf("blockResponse.headers[%d]", i), "%q: %q is not a valid header", h.Name, h.Value)
			case framingHeaders[name] || strings.HasPrefix(name, "x-envoy-"):
				// The gateway frames its own answer.
				return invalid(fmt.Sprintf("blockResponse.headers[%d].name", i), "%s is the gateway's to set", h.Name)
			}
		}
	}
	return nil
}

// Bounds of a block response and of concurrency, as the CRD's schema
// has them.
const (
	maxConcurrency  = 1_000_000
	maxBlockBody    = 4096
	maxBlockHeaders = 16
)

// framingHeaders frame or route a response; a policy may not set them.
var framingHeaders = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true, "te": true,
	"trailer": true, "upgrade": true, "content-length": true, "host": true,
}

// GroupKind is a target's API group and kind as a TargetRef spells it.
type GroupKind struct{ Group, Kind string }

// targetKinds maps the kinds a policy may target to the ir.ObjectRef
// kind of the routes they make.
var targetKinds = map[GroupKind]string{
	{"gateway.networking.k8s.io", "HTTPRoute"}:     "HTTPRoute",
	{"networking.k8s.io", "Ingress"}:               "Ingress",
	{"networking.internal.knative.dev", "Ingress"}: "KIngress",
	{"", "Service"}: "Service",
}
