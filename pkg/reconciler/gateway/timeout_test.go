package gateway

import (
	"fmt"
	"strings"
	"testing"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestRuleTimeout(t *testing.T) {
	dur := func(s string) *gwv1.Duration { d := gwv1.Duration(s); return &d }
	for _, tc := range []struct {
		request, backend *gwv1.Duration
		want             string // "" for nil
		bad              bool
	}{
		{request: dur("10s"), want: "10s"},
		{backend: dur("500ms"), want: "500ms"},
		{request: dur("10s"), backend: dur("500ms"), want: "500ms"},
		{request: dur("0s"), backend: dur("2s"), want: "2s"},
		{request: dur("3s"), backend: dur("0s"), want: "3s"},
		{request: dur("0s"), backend: dur("0s"), want: "0s"},
		{backend: dur("0s"), want: "0s"},
		{backend: dur("1x"), bad: true},
	} {
		got, msg := ruleTimeout(&gwv1.HTTPRouteTimeouts{Request: tc.request, BackendRequest: tc.backend}, "spec.rules[0]")
		if tc.bad {
			if msg == "" || !strings.Contains(msg, "spec.rules[0].timeouts.backendRequest") {
				t.Errorf("%v/%v: message %q should name the field", tc.request, tc.backend, msg)
			}
			continue
		}
		if msg != "" || got == nil || got.String() != tc.want {
			t.Errorf("request %v backendRequest %v: got %v %q, want %s", tc.request, tc.backend, got, msg, tc.want)
		}
	}
}

// TestRuleRetry: with a retry stanza the request timeout bounds all
// attempts and backendRequest each one (Envoy's timeout and
// per_try_timeout); codes, attempts and backoff carry over, connection
// failures and resets are retried too; zero attempts is no retry, with
// the timeouts as without one.
func TestRuleRetry(t *testing.T) {
	dur := func(s string) *gwv1.Duration { d := gwv1.Duration(s); return &d }
	attempts := func(n int) *int { return &n }
	for _, tc := range []struct {
		name     string
		retry    gwv1.HTTPRouteRetry
		timeouts *gwv1.HTTPRouteTimeouts
		want     string
	}{
		{"codes and timeouts", gwv1.HTTPRouteRetry{Codes: []gwv1.HTTPRouteRetryStatusCode{503, 504}, Attempts: attempts(3), Backoff: dur("100ms")},
			&gwv1.HTTPRouteTimeouts{Request: dur("10s"), BackendRequest: dur("2s")},
			"total=10s attempts=3 perTry=2s on=[connect-failure reset] codes=[503 504] backoff=100ms"},
		{"defaults", gwv1.HTTPRouteRetry{}, nil, "total=none attempts=1 perTry=0s on=[connect-failure reset] codes=[] backoff=0s"},
		{"no attempts", gwv1.HTTPRouteRetry{Attempts: attempts(0)}, &gwv1.HTTPRouteTimeouts{Request: dur("10s"), BackendRequest: dur("2s")}, "total=2s no retry"},
		{"bad code", gwv1.HTTPRouteRetry{Codes: []gwv1.HTTPRouteRetryStatusCode{200}}, nil, "spec.rules[0].retry.codes[0]: 200 is not a 4xx or 5xx status"},
		{"bad backoff", gwv1.HTTPRouteRetry{Backoff: dur("soon")}, nil, `spec.rules[0].retry.backoff "soon" is not a valid duration`},
	} {
		total, p, msg := ruleRetry(&tc.retry, tc.timeouts, "spec.rules[0]")
		got := msg
		if msg == "" {
			ts := "none"
			if total != nil {
				ts = total.String()
			}
			if p == nil {
				got = fmt.Sprintf("total=%s no retry", ts)
			} else {
				got = fmt.Sprintf("total=%s attempts=%d perTry=%s on=%v codes=%v backoff=%s", ts, p.Attempts, p.PerTryTimeout, p.On, p.StatusCodes, p.Backoff)
			}
		}
		if got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}
