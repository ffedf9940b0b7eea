package translate

import (
	"fmt"
	"testing"

	"github.com/weir-dev/weir/pkg/ir"
)

// benchFragment is a Knative Service with two revisions split 50/50: an
// external host, a cluster-local host and a tag host, 3 virtual hosts.
func benchFragment(i int, weight uint32, endpointSeed int) *ir.Fragment {
	ns, name := fmt.Sprintf("ns%d", i%100), fmt.Sprintf("svc%d", i)
	f := &ir.Fragment{Source: ir.ObjectRef{Kind: "KIngress", Namespace: ns, Name: name}}
	var split []ir.WeightedBackend
	for r := 1; r <= 2; r++ {
		rev := fmt.Sprintf("%s-%05d", name, r)
		f.Backends = append(f.Backends, &ir.Backend{
			Name:    ir.BackendName(ns, rev, 80),
			Service: ir.ServiceRef{Namespace: ns, Name: rev, Port: 80},
			Endpoints: []ir.Endpoint{
				{Address: fmt.Sprintf("10.%d.%d.%d", r, (i/250)%250, i%250), Port: 8012},
				{Address: fmt.Sprintf("10.%d.%d.%d", r+100, (i/250)%250, (i+endpointSeed)%250), Port: 8012},
			},
		})
		w := weight
		if r == 2 {
			w = 100 - weight
		}
		split = append(split, ir.WeightedBackend{
			BackendName: f.Backends[r-1].Name,
			Weight:      w,
			RequestHeaders: ir.HeaderMutation{Set: []ir.Header{
				{Name: "Knative-Serving-Namespace", Value: ns}, {Name: "Knative-Serving-Revision", Value: rev},
			}},
		})
	}
	prefix := func(backends []ir.WeightedBackend) []*ir.Route {
		return []*ir.Route{{Match: ir.Match{Path: ir.PathMatch{Kind: ir.PathPrefix, Value: "/"}}, Backends: backends}}
	}
	external := ir.ListenerSet(ir.ExternalHTTP).With(ir.InternalHTTP)
	f.VirtualHosts = []*ir.VirtualHost{
		{Name: ns + "/" + name + "/0", Domains: []string{name + "." + ns + ".example.com"}, Listeners: external, Routes: prefix(split)},
		{Name: ns + "/" + name + "/1", Domains: []string{name + "." + ns + ".svc.cluster.local"}, Listeners: ir.ListenerSet(ir.InternalHTTP), Routes: prefix(split)},
		{Name: ns + "/" + name + "/2", Domains: []string{"latest-" + name + "." + ns + ".example.com"}, Listeners: external, Routes: prefix(split[1:])},
	}
	return f
}

const benchFragments = 10_000

func benchInput() []*ir.Fragment {
	frags := make([]*ir.Fragment, benchFragments)
	for i := range frags {
		frags[i] = benchFragment(i, 50, 0)
	}
	return frags
}

// BenchmarkTranslate10k measures 10,000 fragments (30,000 virtual hosts,
// 20,000 clusters): a cold translation, and re-translations after one
// fragment changed its split, its endpoints, or nothing.
func BenchmarkTranslate10k(b *testing.B) {
	frags := benchInput()

	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := New(DefaultOptions()).Translate(frags); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchFragments), "ns/fragment")
	})

	// warm re-translates after replacing one fragment per iteration with
	// the next of two prepared versions, so every iteration is a change.
	warm := func(b *testing.B, variant func(i int) *ir.Fragment) {
		const rotating = 64
		versions := make([][2]*ir.Fragment, rotating)
		for k := range versions {
			i := k * (benchFragments / rotating)
			versions[k] = [2]*ir.Fragment{frags[i], variant(i)}
		}
		input := append([]*ir.Fragment(nil), frags...)
		tr := New(DefaultOptions())
		if _, err := tr.Translate(input); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			k := n % rotating
			i := k * (benchFragments / rotating)
			input[i] = versions[k][(n/rotating+1)%2]
			n++
			if _, err := tr.Translate(input); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("one-split-changed", func(b *testing.B) {
		warm(b, func(i int) *ir.Fragment { return benchFragment(i, 90, 0) })
	})
	b.Run("one-endpoints-changed", func(b *testing.B) {
		warm(b, func(i int) *ir.Fragment { return benchFragment(i, 50, 7) })
	})
	b.Run("unchanged", func(b *testing.B) {
		warm(b, func(i int) *ir.Fragment { return frags[i] })
	})
}
