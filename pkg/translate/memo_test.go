package translate

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weir-dev/weir/pkg/ir"
)

func translateOK(t testing.TB, tr *Translator, frags []*ir.Fragment) *Resources {
	t.Helper()
	res, err := tr.Translate(frags)
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	if err := res.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return res
}

// differentPointers reports the indexes where a and b hold different pointers.
func differentPointers[M comparable](a, b []M) []int {
	if len(a) != len(b) {
		return []int{-1}
	}
	var out []int
	for i := range a {
		if a[i] != b[i] {
			out = append(out, i)
		}
	}
	return out
}

func withTLS(f *ir.Fragment) *ir.Fragment {
	f.VirtualHosts[0].Listeners = f.VirtualHosts[0].Listeners.With(ir.ExternalHTTPS)
	f.Certificates = []*ir.Certificate{cert(f.Source.Namespace+"/"+f.Source.Name+"-tls", externalHTTPS, f.VirtualHosts[0].Domains...)}
	return f
}

func TestMemoSameInputSamePointers(t *testing.T) {
	frags := []*ir.Fragment{withTLS(service("default", "a", 60, 40)), service("default", "b", 100)}
	tr := New(DefaultOptions())
	first := translateOK(t, tr, frags)
	again := translateOK(t, tr, slices.Clone(frags))
	if again != first {
		t.Fatal("same fragments: Translate returned a different *Resources")
	}

	// A changed fragment whose content is equal keeps every proto.
	copyA := *frags[0]
	next := translateOK(t, tr, []*ir.Fragment{&copyA, frags[1]})
	for kind, d := range map[string][]int{
		"listeners": differentPointers(first.Listeners, next.Listeners),
		"routes":    differentPointers(first.Routes, next.Routes),
		"clusters":  differentPointers(first.Clusters, next.Clusters),
		"endpoints": differentPointers(first.Endpoints, next.Endpoints),
		"secrets":   differentPointers(first.Secrets, next.Secrets),
	} {
		if len(d) > 0 {
			t.Errorf("equal copy of a fragment: %s %v got new pointers", kind, d)
		}
	}
}

func TestMemoEndpointChangeOnlyReplacesItsLoadAssignment(t *testing.T) {
	a := withTLS(service("default", "a", 60, 40))
	b := service("default", "b", 100)
	tr := New(DefaultOptions())
	before := translateOK(t, tr, []*ir.Fragment{a, b})

	// The front end rebuilds the fragment with fresh structs: only one
	// revision's endpoints differ.
	a2 := withTLS(service("default", "a", 60, 40))
	a2.Backends[1].Endpoints = []ir.Endpoint{{Address: "10.9.9.9", Port: 8012}, {Address: "10.9.9.8", Port: 8012}}
	after := translateOK(t, tr, []*ir.Fragment{a2, b})

	if d := differentPointers(before.Listeners, after.Listeners); len(d) > 0 {
		t.Errorf("listeners %v changed", d)
	}
	if d := differentPointers(before.Routes, after.Routes); len(d) > 0 {
		t.Errorf("route configurations %v changed", d)
	}
	if d := differentPointers(before.Clusters, after.Clusters); len(d) > 0 {
		t.Errorf("clusters %v changed", d)
	}
	if d := differentPointers(before.Secrets, after.Secrets); len(d) > 0 {
		t.Errorf("secrets %v changed", d)
	}
	d := differentPointers(before.Endpoints, after.Endpoints)
	if len(d) != 1 || after.Endpoints[d[0]].GetClusterName() != a2.Backends[1].Name {
		t.Errorf("changed load assignments = %v, want only %s", d, a2.Backends[1].Name)
	}
}

func TestMemoRouteChangeOnlyReplacesItsVirtualHost(t *testing.T) {
	a := service("default", "a", 60, 40)
	b := service("default", "b", 100)
	tr := New(DefaultOptions())
	before := translateOK(t, tr, []*ir.Fragment{a, b})

	a2 := service("default", "a", 50, 50) // both virtual hosts of a change
	a2.VirtualHosts[1] = service("default", "a", 60, 40).VirtualHosts[1]
	after := translateOK(t, tr, []*ir.Fragment{a2, b})

	if d := differentPointers(before.Clusters, after.Clusters); len(d) > 0 {
		t.Errorf("clusters %v changed", d)
	}
	if d := differentPointers(before.Endpoints, after.Endpoints); len(d) > 0 {
		t.Errorf("load assignments %v changed", d)
	}
	if d := differentPointers(before.Routes, after.Routes); len(d) != 2 {
		t.Errorf("route configurations changed: %v, want both (the external virtual host is in both)", d)
	}
	// Only a's external virtual host is new; b's and a's local ones are kept.
	for i := range before.Routes {
		d := differentPointers(before.Routes[i].GetVirtualHosts(), after.Routes[i].GetVirtualHosts())
		if len(d) != 1 || after.Routes[i].GetVirtualHosts()[d[0]].GetName() != "default/a/external" {
			t.Errorf("%s: changed virtual hosts %v, want only default/a/external", after.Routes[i].GetName(), d)
		}
	}

	// Changing only the cluster-local virtual host leaves external-http alone.
	a3 := service("default", "a", 50, 50)
	a3.VirtualHosts[0] = a2.VirtualHosts[0]
	after3 := translateOK(t, tr, []*ir.Fragment{a3, b})
	if after3.Routes[0] != after.Routes[0] || after3.Routes[1] == after.Routes[1] {
		t.Errorf("route configuration pointers: external same=%v (want true), internal same=%v (want false)",
			after3.Routes[0] == after.Routes[0], after3.Routes[1] == after.Routes[1])
	}
}

func TestMemoDeletedFragmentIsEvicted(t *testing.T) {
	a, b := withTLS(service("default", "a", 100)), service("default", "b", 100)
	tr := New(DefaultOptions())
	before := translateOK(t, tr, []*ir.Fragment{a, b})
	after := translateOK(t, tr, []*ir.Fragment{b})
	if len(tr.entries) != 1 {
		t.Errorf("%d cache entries, want 1", len(tr.entries))
	}
	if got := names(after.Clusters); !slices.Equal(got, []string{b.Backends[0].Name}) {
		t.Errorf("clusters = %v", got)
	}
	if listener(after, "external-https") != nil || len(after.Secrets) != 0 {
		t.Error("TLS listener or secret of the deleted fragment still served")
	}
	if after.Clusters[0] != before.Clusters[1] || after.Endpoints[0] != before.Endpoints[1] {
		t.Error("b's cluster or load assignment got a new pointer")
	}
	for key := range after.Sources {
		if slices.Contains(after.Sources[key], a.Source) {
			t.Errorf("Sources[%s] still names the deleted fragment", key)
		}
	}
}

func TestMemoSharedClusterKeepsPointerWhenOwnerChanges(t *testing.T) {
	a, b := service("default", "a", 100), service("default", "b", 100)
	shared := *a.Backends[0] // equal content, distinct struct
	b.Backends[0] = &shared
	b.VirtualHosts[0].Routes[0].Backends[0].BackendName = shared.Name
	b.VirtualHosts[1].Routes[0].Backends[0].BackendName = shared.Name
	tr := New(DefaultOptions())
	before := translateOK(t, tr, []*ir.Fragment{a, b})
	after := translateOK(t, tr, []*ir.Fragment{b}) // b now provides the cluster
	if after.Clusters[0] != before.Clusters[0] || after.Endpoints[0] != before.Endpoints[0] {
		t.Error("shared cluster got a new pointer although its content is unchanged")
	}
}

// TestIncrementalEqualsFromScratch applies random changes and checks after
// each that the memoized result equals a fresh translation of the same input.
func TestIncrementalEqualsFromScratch(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tr := New(DefaultOptions())
	var frags []*ir.Fragment
	for step := 0; step < 300; step++ {
		frags = randomChange(rng, frags)
		got := translateOK(t, tr, frags)
		want := translateOK(t, New(DefaultOptions()), frags)
		if err := diffResources(got, want); err != nil {
			t.Fatalf("step %d: incremental result differs from a fresh translation: %v", step, err)
		}
	}
}

// randomChange adds, removes, reorders or replaces fragments drawn from a
// small universe, so that names, domains and certificates collide often.
func randomChange(rng *rand.Rand, frags []*ir.Fragment) []*ir.Fragment {
	frags = slices.Clone(frags)
	name := func() string { return fmt.Sprintf("s%d", rng.IntN(6)) }
	newFragment := func() *ir.Fragment {
		weights := make([]uint32, 1+rng.IntN(3))
		for i := range weights {
			weights[i] = uint32(rng.IntN(3) * 50)
		}
		f := service(fmt.Sprintf("ns%d", rng.IntN(2)), name(), weights...)
		if rng.IntN(3) == 0 {
			f.VirtualHosts[0].Domains = append(f.VirtualHosts[0].Domains, name()+".shared.example.com")
		}
		if rng.IntN(3) == 0 {
			f.VirtualHosts[0].Listeners = f.VirtualHosts[0].Listeners.With(ir.ExternalHTTPS)
			f.Certificates = []*ir.Certificate{cert("ns/"+name(), externalHTTPS|ir.ListenerSet(ir.InternalHTTPS), name()+".example.com", f.VirtualHosts[0].Domains[0])}
		}
		if rng.IntN(4) == 0 {
			// Share a backend with another service: same name, maybe other content.
			other := ir.BackendName("ns0", name()+"-00001", 80)
			f.Backends[0].Name = other
			f.Backends[0].Protocol = ir.Protocol(rng.IntN(2))
			f.VirtualHosts[0].Routes[0].Backends[0].BackendName = other
			f.VirtualHosts[1].Routes[0].Backends[0].BackendName = other
		}
		if rng.IntN(4) == 0 {
			f.Backends[0].Endpoints = append(f.Backends[0].Endpoints, ir.Endpoint{Address: fmt.Sprintf("10.200.0.%d", rng.IntN(3)), Port: 8012})
		}
		return f
	}
	switch op := rng.IntN(12); {
	case op >= 10 && len(frags) > 0:
		// Only endpoints or weights change, as in the common updates.
		i := rng.IntN(len(frags))
		g := *frags[i]
		g.Backends = slices.Clone(g.Backends)
		b := *g.Backends[0]
		b.Endpoints = []ir.Endpoint{{Address: fmt.Sprintf("10.201.0.%d", rng.IntN(3)), Port: 8012}}
		g.Backends[0] = &b
		if op == 11 {
			vh := *g.VirtualHosts[1]
			route := *vh.Routes[0]
			route.Backends = slices.Clone(route.Backends)
			route.Backends[0].Weight = uint32(rng.IntN(3) * 50)
			vh.Routes = []*ir.Route{&route}
			g.VirtualHosts = []*ir.VirtualHost{g.VirtualHosts[0], &vh}
		}
		frags[i] = &g
		return frags
	case op < 3 || len(frags) == 0:
		f := newFragment()
		for _, g := range frags {
			if g.Source == f.Source {
				return frags // one fragment per source; replacing is another op
			}
		}
		return slices.Insert(frags, rng.IntN(len(frags)+1), f)
	case op < 5:
		i := rng.IntN(len(frags))
		return slices.Delete(frags, i, i+1)
	case op < 6:
		rng.Shuffle(len(frags), func(i, j int) { frags[i], frags[j] = frags[j], frags[i] })
		return frags
	default:
		i := rng.IntN(len(frags))
		f := newFragment()
		f.Source = frags[i].Source
		frags[i] = f
		return frags
	}
}

func diffResources(got, want *Resources) error {
	if err := diffProtos("listeners", got.Listeners, want.Listeners); err != nil {
		return err
	}
	if err := diffProtos("routes", got.Routes, want.Routes); err != nil {
		return err
	}
	if err := diffProtos("clusters", got.Clusters, want.Clusters); err != nil {
		return err
	}
	if err := diffProtos("endpoints", got.Endpoints, want.Endpoints); err != nil {
		return err
	}
	if err := diffProtos("secrets", got.Secrets, want.Secrets); err != nil {
		return err
	}
	if !slices.Equal(got.Warnings, want.Warnings) {
		return fmt.Errorf("warnings:\n got %q\nwant %q", got.Warnings, want.Warnings)
	}
	if !maps.EqualFunc(got.Sources, want.Sources, func(a, b ir.Provenance) bool { return slices.Equal(a, b) }) {
		return fmt.Errorf("sources:\n got %v\nwant %v", got.Sources, want.Sources)
	}
	return nil
}

func diffProtos[M proto.Message](kind string, got, want []M) error {
	if len(got) != len(want) {
		return fmt.Errorf("%s: %d, want %d", kind, len(got), len(want))
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			return fmt.Errorf("%s[%d]:\n got %v\nwant %v", kind, i, got[i], want[i])
		}
	}
	return nil
}
