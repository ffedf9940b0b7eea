package gateway

import (
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
