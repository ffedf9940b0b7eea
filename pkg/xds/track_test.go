package xds

import (
	"fmt"
	"maps"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
)

// TestSubscriptionMirror checks typeTrack's copy of the subscription rules
// against go-control-plane's own, so an upgrade that changes them is noticed.
func TestSubscriptionMirror(t *testing.T) {
	sotw := [][][]string{
		{nil},
		{nil, nil},
		{{"a"}},
		{nil, {"a", "b"}},
		{{"a"}, nil},
		{{"a"}, {"a"}, {"b"}},
		{{"*"}},
		{{"*", "a"}, {"a"}},
		{nil, {"*"}, nil},
	}
	for _, reqs := range sotw {
		t.Run(fmt.Sprint("sotw", reqs), func(t *testing.T) {
			var want stream.Subscription
			var tt typeTrack
			for i, names := range reqs {
				if i == 0 {
					want = stream.NewSotwSubscription(names, true)
				} else {
					want.SetResourceSubscription(names)
				}
				tt.subscribeSotw(names, nameSet(names, tt.namesSrc))
			}
			compareSub(t, &tt, want)
		})
	}

	type req struct{ sub, unsub []string }
	delta := [][]req{
		{{}},
		{{sub: []string{"a"}}},
		{{}, {sub: []string{"a"}}},
		{{unsub: []string{"x"}}},
		{{sub: []string{"*", "a"}}, {unsub: []string{"*"}}},
		{{sub: []string{"a", "b"}}, {unsub: []string{"a"}}},
		{{}, {sub: []string{"*"}}, {unsub: []string{"a"}}},
		{{}, {sub: []string{"a"}}, {unsub: []string{"*"}}},
	}
	for _, reqs := range delta {
		t.Run(fmt.Sprint("delta", reqs), func(t *testing.T) {
			var want stream.Subscription
			var tt typeTrack
			for i, r := range reqs {
				if i == 0 {
					want = stream.NewDeltaSubscription(r.sub, r.unsub, nil, true)
				} else {
					want.UpdateResourceSubscriptions(r.sub, r.unsub)
				}
				tt.subscribeDelta(r.sub, r.unsub)
			}
			compareSub(t, &tt, want)
		})
	}
}

func compareSub(t *testing.T, tt *typeTrack, want stream.Subscription) {
	t.Helper()
	got := tt.names
	if got == nil {
		got = map[string]struct{}{}
	}
	if tt.wildcard != want.IsWildcard() || !maps.Equal(got, want.SubscribedResources()) {
		t.Errorf("mirror: wildcard %v names %v; go-control-plane: wildcard %v names %v",
			tt.wildcard, got, want.IsWildcard(), want.SubscribedResources())
	}
}
