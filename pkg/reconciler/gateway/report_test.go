package gateway_test

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/weir-dev/weir/pkg/translate"
)

// TestTranslateProblemsReachTheRoute: what translate leaves out of a route
// (here a header value Envoy refuses) makes that route's parent
// Accepted=False with the reason, and is not the Gateway's problem.
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
	if c := routeCondition(t, res, "default", "bad", "Accepted"); c != "False/UnsupportedValue" {
		t.Errorf("bad: Accepted = %s, want False/UnsupportedValue", c)
	}
	msg := res.HTTPRoutes[types.NamespacedName{Namespace: "default", Name: "bad"}].Parents[0].Conditions[0].Message
	if !strings.Contains(msg, "default/bad/rule/0/match/0") {
		t.Errorf("the message does not name the rule: %q", msg)
	}
	if c := routeCondition(t, res, "default", "good", "Accepted"); c != "True/Accepted" {
		t.Errorf("good: Accepted = %s", c)
	}
}
