// Package headermutation is weir-proxy's envoy.filters.http.header_mutation
// for the mutation Weir emits: removing request headers before the filters
// after it see the request (so that a client cannot supply a header an
// authorization service is trusted to set). A route's
// HeaderMutationPerRoute applies first, then the listener's mutations
// unless most_specific_header_mutations_wins, as in Envoy. Any other
// mutation is refused.
package headermutation

import (
	"fmt"
	"net/http"
	"strings"

	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"
)

func init() { httpfilter.Register(factory{}) }

type factory struct{}

func (factory) ConfigType() proto.Message      { return &headermutationv3.HeaderMutation{} }
func (factory) RouteConfigType() proto.Message { return &headermutationv3.HeaderMutationPerRoute{} }

// removals are the request headers a config removes, canonical.
type removals []string

type config struct {
	remove       removals
	mostSpecific bool
}

func (factory) NewConfig(m proto.Message, _ *httpfilter.Scope) (httpfilter.Config, error) {
	hm := m.(*headermutationv3.HeaderMutation)
	if bad := httpfilter.UnsupportedField(hm, "mutations", "most_specific_header_mutations_wins"); bad != "" {
		return nil, fmt.Errorf("%s: not supported by weir-proxy", bad)
	}
	r, err := compile(hm.GetMutations(), "mutations")
	if err != nil {
		return nil, err
	}
	return &config{remove: r, mostSpecific: hm.GetMostSpecificHeaderMutationsWins()}, nil
}

func (factory) NewRouteConfig(m proto.Message, _ *httpfilter.Scope) (any, error) {
	pr := m.(*headermutationv3.HeaderMutationPerRoute)
	if bad := httpfilter.UnsupportedField(pr, "mutations"); bad != "" {
		return nil, fmt.Errorf("%s: not supported by weir-proxy", bad)
	}
	return compile(pr.GetMutations(), "mutations")
}

func compile(ms *headermutationv3.Mutations, path string) (removals, error) {
	if bad := httpfilter.UnsupportedField(ms, "request_mutations"); bad != "" {
		return nil, fmt.Errorf("%s.%s: not supported by weir-proxy", path, bad)
	}
	var out removals
	for i, m := range ms.GetRequestMutations() {
		rm, ok := m.GetAction().(*mutationv3.HeaderMutation_Remove)
		if !ok {
			return nil, fmt.Errorf("%s.request_mutations[%d]: only remove is supported by weir-proxy", path, i)
		}
		if rm.Remove == "" || strings.HasPrefix(rm.Remove, ":") || strings.EqualFold(rm.Remove, "host") {
			return nil, fmt.Errorf("%s.request_mutations[%d].remove: %q cannot be removed", path, i, rm.Remove)
		}
		out = append(out, http.CanonicalHeaderKey(rm.Remove))
	}
	return out, nil
}

func (c *config) NewFilter(cb httpfilter.Callbacks) any { return &filter{c: c, cb: cb} }

type filter struct {
	httpfilter.PassThroughDecoder
	c  *config
	cb httpfilter.Callbacks
}

func (f *filter) DecodeHeaders(h *httpfilter.RequestHeaders, _ bool) httpfilter.Status {
	route, hasRoute := f.cb.PerRouteConfig().(removals)
	for _, name := range route {
		delete(h.Header, name)
	}
	if !hasRoute || !f.c.mostSpecific {
		for _, name := range f.c.remove {
			delete(h.Header, name)
		}
	}
	return httpfilter.Continue
}
