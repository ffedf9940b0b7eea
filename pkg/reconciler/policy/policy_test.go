package policy

import (
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weir-dev/weir/pkg/ir"
)

func trafficPolicy(name string, created time.Time, spec TrafficPolicySpec) *TrafficPolicy {
	return &TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, CreationTimestamp: metav1.NewTime(created), Generation: 2}, Spec: spec}
}

func kingressTarget(name string) TargetRef {
	return TargetRef{Group: "networking.internal.knative.dev", Kind: "Ingress", Name: name}
}

func TestValidateNamesTheField(t *testing.T) {
	ms := func(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
	section := "rule-1"
	for _, tc := range []struct {
		name  string
		spec  TrafficPolicySpec
		field string
	}{
		{"unknown kind", TrafficPolicySpec{TargetRefs: []TargetRef{{Group: "apps", Kind: "Deployment", Name: "x"}}, RateLimit: &RateLimit{QPS: 1}}, "spec.targetRefs[0].kind:"},
		{"section of a Service", TrafficPolicySpec{TargetRefs: []TargetRef{{Kind: "Service", Name: "x", SectionName: &section}}, RateLimit: &RateLimit{QPS: 1}}, "spec.targetRefs[0].sectionName:"},
		{"no limit", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}}, "spec.rateLimit:"},
		{"zero qps", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{}}, "spec.rateLimit.qps:"},
		{"per gateway", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1, Scope: ScopePerGateway}}, "spec.rateLimit.scope: PerGateway is not supported yet"},
		{"fractional per client", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1.5, By: &RateLimitBy{Type: ByClientIP}}}, "spec.rateLimit.qps:"},
		{"bad header", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1, By: &RateLimitBy{Type: ByHeader, Header: "x y"}}}, "spec.rateLimit.by.header:"},
		{"pseudo header", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1, By: &RateLimitBy{Type: ByHeader, Header: ":path"}}}, "spec.rateLimit.by.header:"},
		{"throttle without a queue", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1, ControlBehavior: BehaviorThrottle}}, "spec.rateLimit.maxQueueingTime:"},
		{"queue too long", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1, ControlBehavior: BehaviorThrottle, MaxQueueingTime: ms(time.Second)}}, "spec.rateLimit.maxQueueingTime:"},
		{"queue without throttle", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1, MaxQueueingTime: ms(time.Millisecond)}}, "spec.rateLimit.maxQueueingTime:"},
		{"warm-up of a partition", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1, By: &RateLimitBy{Type: ByClientIP}, WarmUp: &WarmUp{Period: metav1.Duration{Duration: time.Second}}}}, "spec.rateLimit.warmUp:"},
		{"warm-up in fractions", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1, WarmUp: &WarmUp{Period: metav1.Duration{Duration: 1500 * time.Millisecond}}}}, "spec.rateLimit.warmUp.period:"},
		{"failure mode", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1, FailureMode: "Maybe"}}, "spec.rateLimit.failureMode:"},
		{"block status", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1}, BlockResponse: &BlockResponse{Status: 503}}, "spec.blockResponse.status:"},
		{"below one a second", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 0.5}}, "spec.rateLimit.qps:"},
		{"fractional", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 2.5}}, "spec.rateLimit.qps:"},
		{"throttled partition off the millisecond", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 300, By: &RateLimitBy{Type: ByClientIP}, ControlBehavior: BehaviorThrottle, MaxQueueingTime: ms(10 * time.Millisecond)}}, "spec.rateLimit.qps:"},
		{"warm-up too short", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1, WarmUp: &WarmUp{Period: metav1.Duration{Duration: time.Second}}}}, "spec.rateLimit.warmUp:"},
		{"target name", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a%b")}, RateLimit: &RateLimit{QPS: 1}}, "spec.targetRefs[0].name:"},
		{"block body", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1}, BlockResponse: &BlockResponse{Body: strings.Repeat("x", 4097)}}, "spec.blockResponse.body:"},
		{"framing header", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1}, BlockResponse: &BlockResponse{Headers: []ResponseHeader{{Name: "Transfer-Encoding", Value: "chunked"}}}}, "spec.blockResponse.headers[0].name:"},
		{"envoy header", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1}, BlockResponse: &BlockResponse{Headers: []ResponseHeader{{Name: "X-Envoy-Ratelimited", Value: "no"}}}}, "spec.blockResponse.headers[0].name:"},
		{"block header", TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1}, BlockResponse: &BlockResponse{Headers: []ResponseHeader{{Name: "X", Value: "a\nb"}}}}, "spec.blockResponse.headers[0]:"},
	} {
		err := tc.spec.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.field) {
			t.Errorf("%s: %v, want an error starting %q", tc.name, err, tc.field)
		}
	}
	ok := TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a"), {Kind: "Service", Name: "s"}}, RateLimit: &RateLimit{
		QPS: 25, ControlBehavior: BehaviorThrottle, MaxQueueingTime: ms(100 * time.Millisecond), WarmUp: &WarmUp{Period: metav1.Duration{Duration: 10 * time.Second}},
	}, BlockResponse: &BlockResponse{Status: 429, Body: "no"}}
	if err := ok.Validate(); err != nil {
		t.Errorf("a valid spec: %v", err)
	}
}

// model is two fragments: KIngress ns/a (routes to Services s1, and s2 at
// weight 0) and KIngress ns/b (routes to s2).
func model() []*ir.Fragment {
	frag := func(name string, backends ...ir.WeightedBackend) *ir.Fragment {
		ref := ir.ObjectRef{Kind: "KIngress", Namespace: "ns", Name: name}
		f := &ir.Fragment{Source: ref, VirtualHosts: []*ir.VirtualHost{{
			Name: name, Domains: []string{name + ".example.com"}, Provenance: ir.Provenance{ref},
			Routes: []*ir.Route{{Name: name, Backends: backends, Provenance: ir.Provenance{ref}}},
		}}}
		for _, b := range backends {
			svc := strings.TrimSuffix(strings.TrimPrefix(b.BackendName, "ns/"), ":80")
			f.Backends = append(f.Backends, &ir.Backend{Name: b.BackendName, Service: ir.ServiceRef{Namespace: "ns", Name: svc, Port: 80}})
		}
		return f
	}
	return []*ir.Fragment{
		frag("a", ir.WeightedBackend{BackendName: "ns/s1:80", Weight: 100}, ir.WeightedBackend{BackendName: "ns/s2:80", Weight: 0}),
		frag("b", ir.WeightedBackend{BackendName: "ns/s2:80", Weight: 100}),
	}
}

func limitOn(f *ir.Fragment) *ir.GlobalRateLimit {
	for _, fl := range f.VirtualHosts[0].Routes[0].Filters {
		if g, ok := fl.(*ir.GlobalRateLimit); ok {
			return g
		}
	}
	return nil
}

func TestAttachToTargets(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := NewAttacher()
	frags := model()
	if out := a.Decorate(frags); out[0] != frags[0] || out[1] != frags[1] {
		t.Fatal("without policies, fragments must pass through unchanged")
	}

	older := trafficPolicy("older", t0, TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 10, By: &RateLimitBy{Type: ByHeader, Header: "X-User"}}})
	newer := trafficPolicy("newer", t0.Add(time.Hour), TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a"), {Kind: "Service", Name: "s2"}, {Kind: "Service", Name: "gone"}}, RateLimit: &RateLimit{QPS: 3, FailureMode: FailureModeDeny}})
	exists := func(ref ir.ObjectRef) bool { return ref.Name != "gone" }
	res := a.Set([]*TrafficPolicy{newer, older}, exists, nil)

	// Statuses: older wins ns/a; newer is Conflicted there, Accepted on
	// s2, TargetNotFound on gone.
	want := map[string]string{"ns/older": "Accepted", "ns/newer": "Conflicted,Accepted,TargetNotFound"}
	for key, st := range res.Statuses {
		var reasons []string
		for _, an := range st.Ancestors {
			reasons = append(reasons, an.Conditions[0].Reason)
			if an.Conditions[0].ObservedGeneration != 2 {
				t.Errorf("%s: observedGeneration %d", key, an.Conditions[0].ObservedGeneration)
			}
		}
		if got := strings.Join(reasons, ","); got != want[key.String()] {
			t.Errorf("%s: reasons %s, want %s", key, got, want[key.String()])
		}
	}
	if len(res.Limits) != 2 {
		t.Fatalf("limits %v, want older's on a and newer's on s2", res.Limits)
	}

	out := a.Decorate(frags)
	la, lb := limitOn(out[0]), limitOn(out[1])
	if la == nil || la.Name != "ns/older#KIngress/a" || la.PartitionBy != ir.PartitionHeader || la.Header != "x-user" || la.QPS != 10 {
		t.Errorf("a's route: %+v, want older's limit per x-user (its own object's policy wins over s2's, which takes none of its traffic)", la)
	}
	if lb == nil || lb.Name != "ns/newer#Service/s2" || !lb.FailClosed || lb.FilterKind() != ir.FilterGlobalRateLimitFailClosed {
		t.Errorf("b's route: %+v, want newer's fail-closed limit through Service s2", lb)
	}
	if limitOn(frags[0]) != nil || limitOn(frags[1]) != nil {
		t.Error("Decorate changed the model's own fragments")
	}
	if lb.Block.Headers[0] != (ir.Header{Name: "Retry-After", Value: "1"}) {
		t.Errorf("block headers %v, want Retry-After by default", lb.Block.Headers)
	}

	// Unchanged fragments and policies: the same pointers, so translate
	// rebuilds nothing.
	again := a.Decorate(frags)
	if again[0] != out[0] || again[1] != out[1] {
		t.Error("a second Decorate of the same fragments made new copies")
	}
	// The same policies set again keep the copies too.
	a.Set([]*TrafficPolicy{older, newer}, exists, nil)
	if again := a.Decorate(frags); again[0] != out[0] {
		t.Error("setting the same policies again made new copies")
	}
	// A changed limit recopies only the fragments whose routes it
	// reaches.
	newer.Spec.RateLimit.QPS = 4
	a.Set([]*TrafficPolicy{older, newer}, exists, nil)
	if again := a.Decorate(frags); again[0] != out[0] || again[1] == out[1] || limitOn(again[1]).QPS != 4 {
		t.Error("changing s2's limit must recopy b's fragment alone")
	}
	// A changed limit makes new ones.
	older.Spec.RateLimit.QPS = 11
	a.Set([]*TrafficPolicy{older, newer}, exists, nil)
	if again := a.Decorate(frags); again[0] == out[0] || limitOn(again[0]).QPS != 11 {
		t.Error("a changed limit did not reach the route")
	}
	// No policies: the model's own fragments.
	a.Set(nil, nil, nil)
	if again := a.Decorate(frags); again[0] != frags[0] || again[1] != frags[1] {
		t.Error("without policies, the model's fragments must pass through")
	}
}

func TestInvalidNames(t *testing.T) {
	p := trafficPolicy("Bad_Name", time.Now(), TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: 1}})
	res := NewAttacher().Set([]*TrafficPolicy{p}, nil, nil)
	if lines := res.Lines(); len(lines) != 1 || !strings.Contains(lines[0], "(Invalid): metadata.name:") || len(res.Limits) != 0 {
		t.Errorf("lines %q, limits %v; want the name refused", lines, res.Limits)
	}
}

func TestLines(t *testing.T) {
	a := NewAttacher()
	bad := trafficPolicy("bad", time.Now(), TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, RateLimit: &RateLimit{QPS: -1}})
	res := a.Set([]*TrafficPolicy{bad}, nil, nil)
	lines := res.Lines()
	if len(lines) != 1 || lines[0] != "TrafficPolicy ns/bad on Ingress a: Accepted=False (Invalid): spec.rateLimit.qps: -1 is not a whole number from 1 to 1000000" {
		t.Errorf("lines %q", lines)
	}
	if len(res.Limits) != 0 {
		t.Errorf("an invalid policy has limits %v", res.Limits)
	}
}

// TestAnnotatedTargets: an Ingress or KIngress that names a policy in
// its annotation is one of the policy's targets, with the same conflict
// rule; one that names a policy that does not exist says so.
func TestAnnotatedTargets(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := NewAttacher()
	byAnnotation := trafficPolicy("by-annotation", t0.Add(time.Hour), TrafficPolicySpec{RateLimit: &RateLimit{QPS: 7}})
	explicit := trafficPolicy("explicit", t0, TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("b")}, RateLimit: &RateLimit{QPS: 9}})
	annotated := map[ir.ObjectRef]string{
		{Kind: "KIngress", Namespace: "ns", Name: "a"}:    "by-annotation",
		{Kind: "KIngress", Namespace: "ns", Name: "b"}:    "by-annotation", // explicit is older and wins
		{Kind: "Ingress", Namespace: "ns", Name: "shop"}:  "missing",
		{Kind: "KIngress", Namespace: "other", Name: "a"}: "by-annotation", // another namespace's policy
	}
	res := a.Set([]*TrafficPolicy{byAnnotation, explicit}, nil, annotated)
	out := a.Decorate(model())
	if l := limitOn(out[0]); l == nil || l.QPS != 7 {
		t.Errorf("a's route: %+v, want the annotated policy's limit", l)
	}
	if l := limitOn(out[1]); l == nil || l.QPS != 9 {
		t.Errorf("b's route: %+v, want the older explicit policy's limit", l)
	}
	var reasons []string
	for _, an := range res.Statuses[types.NamespacedName{Namespace: "ns", Name: "by-annotation"}].Ancestors {
		reasons = append(reasons, an.AncestorRef.Name+"="+an.Conditions[0].Reason)
	}
	if got := strings.Join(reasons, ","); got != "a=Accepted,b=Conflicted" {
		t.Errorf("by-annotation's targets: %s, want a=Accepted,b=Conflicted", got)
	}
	want := []string{
		"Ingress ns/shop: weir.dev/traffic-policy names TrafficPolicy ns/missing, which does not exist",
		"KIngress other/a: weir.dev/traffic-policy names TrafficPolicy other/by-annotation, which does not exist",
	}
	if !slices.Equal(res.Unresolved, want) {
		t.Errorf("unresolved %q, want %q", res.Unresolved, want)
	}
}

// TestConcurrencyOnServices: a concurrency bound reaches the backends of
// its Service in every fragment, and only a Service can take one.
func TestConcurrencyOnServices(t *testing.T) {
	spec := TrafficPolicySpec{TargetRefs: []TargetRef{{Kind: "Service", Name: "s2"}}, Concurrency: &Concurrency{MaxConcurrency: 3}}
	if err := spec.Validate(); err != nil {
		t.Fatalf("a concurrency on a Service: %v", err)
	}
	bad := TrafficPolicySpec{TargetRefs: []TargetRef{kingressTarget("a")}, Concurrency: &Concurrency{MaxConcurrency: 3}}
	if err := bad.Validate(); err == nil || !strings.HasPrefix(err.Error(), "spec.targetRefs[0]:") {
		t.Errorf("a concurrency on a KIngress: %v, want refused naming targetRefs[0]", err)
	}
	if err := (&TrafficPolicySpec{TargetRefs: spec.TargetRefs, Concurrency: &Concurrency{}}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "spec.concurrency.maxConcurrency:") {
		t.Errorf("maxConcurrency 0: %v", err)
	}
	if err := (&TrafficPolicySpec{TargetRefs: spec.TargetRefs}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "spec.rateLimit:") {
		t.Errorf("neither a limit nor a bound: %v", err)
	}
	withBlock := TrafficPolicySpec{TargetRefs: spec.TargetRefs, Concurrency: spec.Concurrency, BlockResponse: &BlockResponse{Body: "busy"}}
	if err := withBlock.Validate(); err == nil || !strings.HasPrefix(err.Error(), "spec.blockResponse:") {
		t.Errorf("a block response on a bound alone: %v, want refused: the bound answers Envoy's 503", err)
	}

	a := NewAttacher()
	p := trafficPolicy("bound", time.Now(), spec)
	res := a.Set([]*TrafficPolicy{p}, nil, map[ir.ObjectRef]string{{Kind: "KIngress", Namespace: "ns", Name: "a"}: "bound"})
	if len(res.Limits) != 0 {
		t.Errorf("limits %v for a policy without a rate limit", res.Limits)
	}
	if lines := res.Lines(); len(lines) != 2 || !strings.Contains(lines[0], "on Ingress a: Accepted=False (Invalid)") || !strings.Contains(lines[1], "on Service s2: Accepted=True") {
		t.Errorf("lines %q: want the annotated KIngress refused and the Service accepted", lines)
	}
	frags := model()
	out := a.Decorate(frags)
	for i, f := range out {
		for _, b := range f.Backends {
			want := uint32(0)
			if b.Service.Name == "s2" {
				want = 3
			}
			if b.MaxRequests != want {
				t.Errorf("fragment %d, backend %s: max requests %d, want %d", i, b.Name, b.MaxRequests, want)
			}
		}
		if limitOn(f) != nil {
			t.Errorf("fragment %d got a rate limit from a policy without one", i)
		}
	}
	if frags[0].Backends[1].MaxRequests != 0 {
		t.Error("Decorate changed the model's own backend")
	}
}
