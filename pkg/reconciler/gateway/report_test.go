package gateway_test

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/weir-dev/weir/pkg/translate"
)

// TestTranslateProblemsReachTheRoute: what translate leaves out of a route
// (here a header value Envoy refuses) is on that route's parent as
// PartiallyInvalid, and is not the Gateway's problem.
func TestTranslateProblemsReachTheRoute(t *testing.T) {
	res := build(t, grpcGateway+`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [bad.example.com]
  rules:
  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: "one\r\nx-injected: two"}]}}]
    backendRefs: [{name: svc, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: good, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [good.example.com]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
`)
	opts := translate.DefaultOptions()
	opts.OwnListenersOnly = true
	tr, err := translate.New(opts).Translate(res.Fragments)
	if err != nil {
		t.Fatal(err)
	}
	gw := res.Fragments[0].Source
	if own := res.AttachProblems(gw, tr.Problems); len(own) != 0 {
		t.Errorf("the Gateway's own problems: %v", own)
	}
	// The spec: the rest is served, so Accepted stays True, and
	// PartiallyInvalid says what was dropped.
	if c := routeCondition(t, res, "default", "bad", "Accepted"); c != "True/Accepted" {
		t.Errorf("bad: Accepted = %s, want True/Accepted", c)
	}
	if c := routeCondition(t, res, "default", "bad", "PartiallyInvalid"); c != "True/UnsupportedValue" {
		t.Errorf("bad: PartiallyInvalid = %s, want True/UnsupportedValue", c)
	}
	conds := res.HTTPRoutes[types.NamespacedName{Namespace: "default", Name: "bad"}].Parents[0].Conditions
	if msg := conds[len(conds)-1].Message; !strings.HasPrefix(msg, "Dropped Rule") || !strings.Contains(msg, "default/bad/rule/0/match/0") {
		t.Errorf("the message does not start with \"Dropped Rule\" and name the rule: %q", msg)
	}
	if c := routeCondition(t, res, "default", "good", "PartiallyInvalid"); c != "missing" {
		t.Errorf("good: PartiallyInvalid = %s; it must not be set on a valid route", c)
	}
	if c := routeCondition(t, res, "default", "good", "Accepted"); c != "True/Accepted" {
		t.Errorf("good: Accepted = %s", c)
	}
}
