package translate

import (
	"slices"
	"strings"
	"testing"

	redirectpolicyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/custom_response/redirect_policy/v3"

	"github.com/weir-dev/weir/pkg/ir"
)

// TestCustomErrors checks the custom_response config of ir.CustomErrors:
// a matcher per code, in order, each redirecting to the host with the
// code header first; and that a config Envoy would refuse, or that would
// send a request elsewhere than an internal virtual host, is an error.
func TestCustomErrors(t *testing.T) {
	cr, err := customErrors(&ir.CustomErrors{Codes: []int{404, 503}, Host: "Pages.NS.invalid", CodeHeader: "X-Code", Headers: []ir.Header{{Name: "X-Original-URI", Value: "%REQ(:path)%"}}})
	if err != nil {
		t.Fatal(err)
	}
	ms := cr.GetCustomResponseMatcher().GetMatcherList().GetMatchers()
	if len(ms) != 2 {
		t.Fatalf("%d matchers, want 2", len(ms))
	}
	for i, code := range []string{"404", "503"} {
		if got := ms[i].GetPredicate().GetSinglePredicate().GetValueMatch().GetExact(); got != code {
			t.Errorf("matcher %d matches %q, want %s", i, got, code)
		}
		var rp redirectpolicyv3.RedirectPolicy
		if err := ms[i].GetOnMatch().GetAction().GetTypedConfig().UnmarshalTo(&rp); err != nil {
			t.Fatal(err)
		}
		hs := rp.GetRequestHeadersToAdd()
		if rp.GetRedirectAction().GetHostRedirect() != "pages.ns.invalid" || len(hs) != 2 ||
			hs[0].GetHeader().GetKey() != "x-code" || hs[0].GetHeader().GetValue() != code ||
			hs[1].GetHeader().GetKey() != "x-original-uri" || hs[1].GetHeader().GetValue() != "%REQ(:path)%" {
			t.Errorf("policy for %s: %v", code, &rp)
		}
	}
	for name, tc := range map[string]*ir.CustomErrors{
		"no code":          {Host: "h.invalid"},
		"a code too large": {Codes: []int{600}, Host: "h.invalid"},
		"a code twice":     {Codes: []int{404, 404}, Host: "h.invalid"},
		"no host":          {Codes: []int{404}},
		"a wildcard host":  {Codes: []int{404}, Host: "*.h.invalid"},
		"a host with path": {Codes: []int{404}, Host: "h.invalid/x"},
		"a bad header":     {Codes: []int{404}, Host: "h.invalid", Headers: []ir.Header{{Name: "X Bad", Value: "v"}}},
		"a header value":   {Codes: []int{404}, Host: "h.invalid", Headers: []ir.Header{{Name: "X-Ok", Value: "a\r\nb"}}},
		"the Host header":  {Codes: []int{404}, Host: "h.invalid", CodeHeader: "Host"},
	} {
		if _, err := customErrors(tc); err == nil || !strings.Contains(err.Error(), "custom errors") {
			t.Errorf("%s: %v, want an error", name, err)
		}
	}
}

// TestInternalDomainsAreReserved: a name under ir.InternalDomainSuffix is
// left out of any virtual host but an internal one, with a problem, so no
// object can take the gateway's internal redirects; an internal virtual
// host has no other name.
func TestInternalDomainsAreReserved(t *testing.T) {
	for _, tc := range []struct {
		domains  []string
		internal bool
		want     []string
	}{
		{[]string{"a.example.com", "x.custom-http-errors" + ir.InternalDomainSuffix}, false, []string{"a.example.com"}},
		{[]string{"X.Custom-HTTP-Errors.WEIR.invalid"}, false, nil},
		{[]string{"x.custom-http-errors" + ir.InternalDomainSuffix, "a.example.com"}, true, []string{"x.custom-http-errors" + ir.InternalDomainSuffix}},
	} {
		w := &warner{}
		got := vhostDomains(tc.domains, tc.internal, w)
		if !slices.Equal(got, tc.want) || len(w.list) != len(tc.domains)-len(tc.want) {
			t.Errorf("%v (internal %v): %v with problems %v; want %v", tc.domains, tc.internal, got, w.list, tc.want)
		}
	}
}
