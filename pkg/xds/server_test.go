package xds

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
)

func TestInitialState(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t)
			st := baseState()
			stats := h.s.Apply(st)
			wantUpdated := map[string]int{cds: 2, eds: 2, sds: 1, rds: 1, lds: 1}
			if !maps.Equal(stats.Updated, wantUpdated) || len(stats.Removed) != 0 {
				t.Fatalf("Apply stats = %+v, want Updated %v and nothing removed", stats, wantUpdated)
			}

			subs := envoyLike()
			c := p.dial(t, h, subs)
			init := initial(t, c, subs)
			for url, rs := range st {
				g := init[url]
				if want := names(rs...); !slices.Equal(g.names, want) {
					t.Errorf("initial %s = %v, want %v", short[url], g.names, want)
				}
				if g.version != h.s.Version(url) {
					t.Errorf("initial %s version = %q, want %q", short[url], g.version, h.s.Version(url))
				}
			}

			h.waitIdle(subs, 1)
			if got := h.metric("weir_xds_connected_clients", ""); got != 1 {
				t.Errorf("connected clients = %v, want 1", got)
			}
			for url, rs := range st {
				if got := h.metric("weir_xds_resources", url); got != float64(len(rs)) {
					t.Errorf("weir_xds_resources{%s} = %v, want %d", short[url], got, len(rs))
				}
				if got := h.metric("weir_xds_pushes_total", url); got != 1 {
					t.Errorf("weir_xds_pushes_total{%s} = %v, want 1", short[url], got)
				}
			}

			c.close()
			deadline := time.Now().Add(timeout)
			for h.metric("weir_xds_connected_clients", "") != 0 {
				if time.Now().After(deadline) {
					t.Fatal("connected clients did not drop to 0 after the client left")
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
}

// TestConnectBeforeApply covers a client that connects to an empty server:
// it is answered at once (Envoy waits for that to finish initializing) and
// the first Apply reaches it in dependency order.
func TestConnectBeforeApply(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t)
			subs := wildcard()
			c := p.dial(t, h, subs)
			for url, g := range initial(t, c, subs) {
				if len(g.names) != 0 {
					t.Errorf("initial %s from an empty server = %v", short[url], g.names)
				}
			}
			h.waitIdle(subs, 1)

			st := baseState()
			h.s.Apply(st)
			for _, url := range []string{cds, eds, sds, rds, lds} {
				g := c.next()
				if g.typeURL != url || !slices.Equal(g.names, names(st[url]...)) {
					t.Fatalf("got %v, want %s %v", g, short[url], names(st[url]...))
				}
			}
		})
	}
}

func TestSingleEndpointChangeOnlyPushesEDS(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t)
			st := baseState()
			h.s.Apply(st)
			subs := envoyLike()
			c := p.dial(t, h, subs)
			initial(t, c, subs)
			h.waitIdle(subs, 1)
			versions, pushes := h.versions(), h.pushes()

			changed := st.with(eds, cla("default/a:80", "10.0.0.9", 8080))
			stats := h.s.Apply(changed)
			if !maps.Equal(stats.Updated, map[string]int{eds: 1}) || len(stats.Removed) != 0 {
				t.Fatalf("Apply stats = %+v, want one EDS update", stats)
			}
			for _, url := range servedTypes {
				if bumped := h.s.Version(url) != versions[url]; bumped != (url == eds) {
					t.Errorf("%s version %q -> %q", short[url], versions[url], h.s.Version(url))
				}
			}

			if g := c.next(); g.typeURL != eds || !slices.Equal(g.names, []string{"default/a:80"}) {
				t.Fatalf("got %v, want EDS [default/a:80]", g)
			}
			// Barrier: the stream is ordered, so a stray CDS/LDS/RDS push caused
			// by the EDS change would arrive before this SDS push.
			h.s.Apply(changed.with(sds, secret("default/s1", "cert-2")))
			if g := c.next(); g.typeURL != sds {
				t.Fatalf("got %v, want the SDS barrier push", g)
			}
			after := h.pushes()
			for _, url := range []string{cds, lds, rds} {
				if after[url] != pushes[url] {
					t.Errorf("%s pushes %v -> %v", short[url], pushes[url], after[url])
				}
			}
			if after[eds] != pushes[eds]+1 {
				t.Errorf("EDS pushes %v -> %v, want one more", pushes[eds], after[eds])
			}
		})
	}
}

func TestUnchangedApplyPushesNothing(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t)
			st := baseState()
			h.s.Apply(st)
			subs := envoyLike()
			c := p.dial(t, h, subs)
			initial(t, c, subs)
			h.waitIdle(subs, 1)
			versions := h.versions()

			// Same pointers.
			if stats := h.s.Apply(st.clone()); len(stats.Updated)+len(stats.Removed) != 0 {
				t.Errorf("Apply with the same pointers: %+v", stats)
			}
			// Equal protos, new pointers.
			cloned := state{}
			for url, rs := range st {
				for _, r := range rs {
					cloned[url] = append(cloned[url], proto.Clone(r))
				}
			}
			if stats := h.s.Apply(cloned); len(stats.Updated)+len(stats.Removed) != 0 {
				t.Errorf("Apply with equal clones: %+v", stats)
			}
			if got := h.versions(); !maps.Equal(got, versions) {
				t.Errorf("versions changed: %v -> %v", versions, got)
			}
			// The clones are now what is served, so the next Apply of them is
			// pointer-equal all the way.
			for url, rs := range cloned {
				for _, r := range rs {
					if h.s.types[url].served[names(r)[0]].res != r {
						t.Fatalf("%s %s: served pointer not replaced by the equal clone", short[url], names(r)[0])
					}
				}
			}

			h.s.Apply(cloned.with(sds, secret("default/s1", "cert-2")))
			if g := c.next(); g.typeURL != sds {
				t.Fatalf("got %v, want the SDS barrier push first", g)
			}
		})
	}
}

func TestMakeBeforeBreakOrdering(t *testing.T) {
	before := state{
		cds: {cluster("default/a:80"), cluster("default/b:80")},
		eds: {cla("default/a:80", "10.0.0.1", 8080), cla("default/b:80", "10.0.0.2", 8080)},
		sds: {secret("default/s1", "cert-1"), secret("default/s9", "cert-9")},
		rds: {routeConfig("external-http", "default/a:80", "default/b:80"), routeConfig("internal-http", "default/a:80")},
		lds: {listener("external-http", 8080), listener("internal-http", 8081)},
	}
	// Route external-http moves from b to the new cluster c; b, internal-http
	// and secret s9 go away; s2 is new; external-http's listener changes.
	after := state{
		cds: {before[cds][0], cluster("default/c:80")},
		eds: {before[eds][0], cla("default/c:80", "10.0.0.3", 8080)},
		sds: {before[sds][0], secret("default/s2", "cert-2")},
		rds: {routeConfig("external-http", "default/a:80", "default/c:80")},
		lds: {listener("external-http", 9090)},
	}
	additions := []got{
		{typeURL: cds, names: []string{"default/c:80"}},
		{typeURL: eds, names: []string{"default/c:80"}},
		{typeURL: sds, names: []string{"default/s2"}},
		{typeURL: rds, names: []string{"external-http"}},
		{typeURL: lds, names: []string{"external-http"}, removed: []string{"internal-http"}},
	}

	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t)
			h.s.Apply(before)
			subs := wildcard()
			c := p.dial(t, h, subs)
			initial(t, c, subs)
			h.waitIdle(subs, 1)

			stats := h.s.Apply(after)
			wantUpdated := map[string]int{cds: 1, eds: 1, sds: 1, rds: 1, lds: 1}
			wantRemoved := map[string]int{cds: 1, eds: 1, sds: 1, rds: 1, lds: 1}
			if !maps.Equal(stats.Updated, wantUpdated) || !maps.Equal(stats.Removed, wantRemoved) {
				t.Fatalf("Apply stats = %+v", stats)
			}

			if p.name == "sotw" {
				// State of the world: CDS and LDS carry their full state, and
				// removals of other types are not sent.
				want := []string{
					"CDS [default/a:80 default/b:80 default/c:80]",
					"EDS [default/c:80]",
					"SDS [default/s2]",
					"RDS [external-http]",
					"LDS [external-http]",
					"CDS [default/a:80 default/c:80]", // b removed, after everything was added
				}
				for i, w := range want {
					if g := c.next(); g.String() != w {
						t.Fatalf("push %d = %v, want %v", i, g, w)
					}
				}
				return
			}

			for i, w := range additions {
				if g := c.next(); g.String() != w.String() {
					t.Fatalf("push %d = %v, want %v", i, g, w)
				}
			}
			// The remaining removals follow every addition. Each type's removal
			// waits for the ACK of that type's addition above, so they arrive in
			// the order the client acknowledged; a cluster goes before its
			// load assignment either way.
			removals := map[string]string{}
			var order []string
			for range 4 {
				g := c.next()
				if len(g.names) != 0 || len(g.removed) != 1 {
					t.Fatalf("got %v, want a removal", g)
				}
				removals[g.typeURL] = g.removed[0]
				order = append(order, g.typeURL)
			}
			wantRemovals := map[string]string{cds: "default/b:80", eds: "default/b:80", sds: "default/s9", rds: "internal-http"}
			if !maps.Equal(removals, wantRemovals) {
				t.Errorf("removals = %v, want %v", removals, wantRemovals)
			}
			if slices.Index(order, cds) > slices.Index(order, eds) {
				t.Errorf("removal order %v: EDS before CDS", order)
			}
		})
	}
}

func TestNACK(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t)
			nacks := make(chan NACK, 10)
			h.s.OnNACK(func(n NACK) { nacks <- n })
			st := baseState()
			h.s.Apply(st)
			subs := envoyLike()
			c := p.dial(t, h, subs)
			initial(t, c, subs)
			h.waitIdle(subs, 1)

			c.nackNext(eds, "malformed endpoint")
			bad := st.with(eds, cla("default/a:80", "not-an-ip", 8080))
			h.s.Apply(bad)
			if g := c.next(); g.typeURL != eds {
				t.Fatalf("got %v, want the EDS push", g)
			}
			select {
			case n := <-nacks:
				want := NACK{Node: testNode, TypeURL: eds, Error: "malformed endpoint", Resources: []string{"default/a:80"}}
				if n.Node != want.Node || n.TypeURL != want.TypeURL || n.Error != want.Error || !slices.Equal(n.Resources, want.Resources) {
					t.Errorf("NACK = %+v, want %+v", n, want)
				}
			case <-time.After(timeout):
				t.Fatal("OnNACK not called")
			}
			if got := h.metric("weir_xds_nacks_total", eds); got != 1 {
				t.Errorf("weir_xds_nacks_total{EDS} = %v, want 1", got)
			}

			// The server keeps serving the stream: the fix goes out.
			h.s.Apply(st.with(eds, cla("default/a:80", "10.0.0.7", 8080)))
			if g := c.next(); g.typeURL != eds || !slices.Equal(g.names, []string{"default/a:80"}) {
				t.Fatalf("got %v, want EDS [default/a:80]", g)
			}
			h.waitIdle(subs, 1) // the fix was ACKed
			if got := h.metric("weir_xds_nacks_total", eds); got != 1 {
				t.Errorf("weir_xds_nacks_total{EDS} = %v after a good push, want 1", got)
			}
			select {
			case n := <-nacks:
				t.Errorf("unexpected NACK %+v", n)
			default:
			}
		})
	}
}

// TestNACKFullStatePush checks the names reported for a rejected CDS push,
// which in state of the world carries every cluster.
func TestNACKFullStatePush(t *testing.T) {
	h := newHarness(t)
	nacks := make(chan NACK, 10)
	h.s.OnNACK(func(n NACK) { nacks <- n })
	st := baseState()
	h.s.Apply(st)
	subs := envoyLike()
	c := dialSotw(t, h, subs)
	initial(t, c, subs)
	h.waitIdle(subs, 1)

	c.nackNext(cds, "bad cluster")
	h.s.Apply(st.with(cds, cluster("default/z:80")))
	select {
	case n := <-nacks:
		if want := []string{"default/a:80", "default/b:80", "default/z:80"}; !slices.Equal(sorted(n.Resources), want) {
			t.Errorf("NACK resources = %v, want %v", n.Resources, want)
		}
	case <-time.After(timeout):
		t.Fatal("OnNACK not called")
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestApplySkipsInvalidResources(t *testing.T) {
	h := newHarness(t)
	st := baseState()
	st["type.googleapis.com/envoy.config.route.v3.VirtualHost"] = []types.Resource{routeConfig("x")}
	st[eds] = append(st[eds],
		nil,
		cluster("default/wrong-type:80"),      // a Cluster among load assignments
		cla("", "10.0.0.1", 80),               // no name
		cla("default/a:80", "10.9.9.9", 8080), // duplicate name: the first one wins
	)
	stats := h.s.Apply(st)
	if stats.Updated[eds] != 2 {
		t.Errorf("EDS updated = %d, want 2", stats.Updated[eds])
	}
	served := h.s.types[eds].served
	if len(served) != 2 || served["default/a:80"].res != st[eds][0] {
		t.Errorf("served EDS = %v", slices.Collect(maps.Keys(served)))
	}

	// A type missing from desired is emptied.
	delete(st, lds)
	if stats := h.s.Apply(st); stats.Removed[lds] != 1 || len(stats.Updated) != 0 {
		t.Errorf("Apply without listeners: %+v", stats)
	}
}

func TestConcurrentApply(t *testing.T) {
	h := newHarness(t)
	base := baseState()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				h.s.Apply(base.with(eds, cla(fmt.Sprintf("default/w%d:80", w), "10.0.0.1", uint32(i+1))))
			}
		}()
	}
	wg.Wait()
	h.s.Apply(base)
	if got := len(h.s.types[eds].cache.GetResources()); got != 2 {
		t.Errorf("EDS cache holds %d resources, want 2", got)
	}
}

func TestServersShareRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := NewServer(ctx, Options{Registerer: reg})
	b := NewServer(ctx, Options{Registerer: reg})
	a.Apply(baseState())
	b.Apply(baseState())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) == 0 {
		t.Fatal("no metrics registered")
	}
}
