package xds

import (
	"fmt"
	"maps"
	"testing"
	"time"

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

// TestAcknowledged checks the signal `weir run` marks KIngresses Ready on:
// a node is up to date only once it has acknowledged every push of every
// Apply so far, and a NACK keeps it behind.
func TestAcknowledged(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t)
			acks := make(chan string, 100)
			h.s.OnAck(func(node string) { acks <- node })
			waitAck := func() {
				t.Helper()
				select {
				case <-acks:
				case <-time.After(timeout):
					t.Fatal("no ACK arrived")
				}
			}
			st := baseState()
			h.s.Apply(st)
			if h.s.Acknowledged(testNode) {
				t.Fatal("Acknowledged before the node connected")
			}
			if !h.s.AllAcknowledged() {
				t.Fatal("with no streams there is nothing to wait for, but AllAcknowledged is false")
			}

			c := p.dialAs(t, h, wildcard(), testNode, rds)
			initial(t, c, wildcard())
			for range 4 { // every type but the withheld RDS
				waitAck()
			}
			if h.s.Acknowledged(testNode) {
				t.Fatal("Acknowledged while the first RDS push is unacknowledged")
			}
			c.releaseACKs(rds)
			waitAck()
			if !h.s.Acknowledged(testNode) {
				t.Fatal("not Acknowledged after every push was acknowledged")
			}
			if h.s.Acknowledged("another-node") {
				t.Error("Acknowledged for a node that never connected")
			}
			if !h.s.AllAcknowledged() {
				t.Error("not AllAcknowledged with the only stream up to date")
			}

			c.holdACKs(cds)
			st = st.with(cds, cluster("default/x:80"))
			h.s.Apply(st)
			if h.s.Acknowledged(testNode) || h.s.AllAcknowledged() {
				t.Fatal("Acknowledged right after an Apply the node has not acknowledged")
			}
			if g := c.next(); g.typeURL != cds {
				t.Fatalf("got %v, want the CDS push", g)
			}
			c.releaseACKs(cds)
			waitAck()
			if !h.s.Acknowledged(testNode) {
				t.Fatal("not Acknowledged after the CDS push was acknowledged")
			}

			c.nackNext(eds, "bad endpoint")
			h.s.Apply(st.with(eds, cla("default/a:80", "10.0.0.9", 8080)))
			if g := c.next(); g.typeURL != eds {
				t.Fatalf("got %v, want the EDS push", g)
			}
			h.s.Apply(st.with(eds, cla("default/a:80", "10.0.0.9", 8080)).with(sds, secret("default/s1", "cert-2")))
			if g := c.next(); g.typeURL != sds {
				t.Fatalf("got %v, want the SDS push", g)
			}
			waitAck() // the SDS one
			if h.s.Acknowledged(testNode) {
				t.Error("Acknowledged although the node NACKed the EDS push")
			}
		})
	}
}
