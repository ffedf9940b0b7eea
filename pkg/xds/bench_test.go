package xds

import (
	"context"
	"fmt"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

// BenchmarkApplyOneChange measures the steady state: 20,000 clusters and load
// assignments are served and one assignment changes per Apply. Every other
// resource is pointer-equal, so the cost is a map lookup per resource plus
// one EDS cache update.
func BenchmarkApplyOneChange(b *testing.B) {
	const n = 20000
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := NewServer(ctx, Options{})

	clusters := make([]types.Resource, n)
	clas := make([]types.Resource, n)
	for i := range n {
		name := fmt.Sprintf("ns-%03d/svc-%05d:80", i/100, i)
		clusters[i] = cluster(name)
		clas[i] = cla(name, fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&0xff, i&0xff), 8080)
	}
	desired := map[string][]types.Resource{cds: clusters, eds: clas}
	s.Apply(desired)

	name := clusters[0].(interface{ GetName() string }).GetName()
	variants := [2]types.Resource{cla(name, "10.200.0.1", 8080), cla(name, "10.200.0.2", 8080)}

	b.ReportAllocs()
	i := 0
	for b.Loop() {
		clas[0] = variants[i%2]
		i++
		if stats := s.Apply(desired); stats.Updated[eds] != 1 {
			b.Fatalf("Apply stats = %+v", stats)
		}
	}
}

// BenchmarkApplyOneChangeSubscribed is BenchmarkApplyOneChange with one ADS
// client subscribed the way Envoy is (every load assignment by name), timing
// each Apply until the client has received the EDS push. It shows what
// go-control-plane costs per push on top of Apply.
func BenchmarkApplyOneChangeSubscribed(b *testing.B) {
	const n = 20000
	for _, p := range []struct {
		name string
		dial func(testing.TB, *harness, subscriptions) client
	}{
		{"sotw", func(t testing.TB, h *harness, s subscriptions) client { return dialSotw(t, h, s) }},
		{"delta", func(t testing.TB, h *harness, s subscriptions) client { return dialDelta(t, h, s) }},
	} {
		b.Run(p.name, func(b *testing.B) {
			h := newHarness(b)
			clusters := make([]types.Resource, n)
			clas := make([]types.Resource, n)
			claNames := make([]string, n)
			for i := range n {
				name := fmt.Sprintf("ns-%03d/svc-%05d:80", i/100, i)
				claNames[i] = name
				clusters[i] = cluster(name)
				clas[i] = cla(name, fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&0xff, i&0xff), 8080)
			}
			desired := map[string][]types.Resource{cds: clusters, eds: clas}
			h.s.Apply(desired)
			subs := subscriptions{cds: nil, eds: claNames}
			c := p.dial(b, h, subs)
			c.next()
			c.next()

			variants := [2]types.Resource{cla(claNames[0], "10.200.0.1", 8080), cla(claNames[0], "10.200.0.2", 8080)}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				h.waitIdle(subs, 1)
				clas[0] = variants[i%2]
				i++
				h.s.Apply(desired)
				if g := c.next(); g.typeURL != eds || len(g.names) != 1 {
					b.Fatalf("got %v", g)
				}
			}
		})
	}
}
