package ir

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func frag(name string, created time.Time, domains ...string) *Fragment {
	return &Fragment{
		Source:       ObjectRef{Kind: "KIngress", Namespace: "ns", Name: name},
		Created:      created,
		VirtualHosts: []*VirtualHost{{Name: name, Domains: domains, Listeners: ListenerSet(ExternalHTTP)}},
	}
}

func TestModelOlderFragmentKeepsDomain(t *testing.T) {
	m := NewModel()
	t0 := time.Unix(1000, 0)
	a := frag("a", t0, "a.example.com", "shared.example.com")
	b := frag("b", t0.Add(time.Second), "shared.example.com")

	if _, _, err := m.Set(a); err != nil {
		t.Fatalf("Set(a) = %v", err)
	}
	_, _, err := m.Set(b)
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Domain != "shared.example.com" || ce.Owner != a.Source {
		t.Fatalf("Set(b) error = %v, want conflict on shared.example.com owned by a", err)
	}
	if _, ok := m.Get(b.Source); ok {
		t.Error("b is served despite the conflict")
	}
	if owner, _ := m.Owner("shared.example.com"); owner != a.Source {
		t.Errorf("owner = %v, want a", owner)
	}
}

func TestModelRejectedUpdateKeepsPreviousVersion(t *testing.T) {
	m := NewModel()
	t0 := time.Unix(1000, 0)
	a := frag("a", t0, "a.example.com")
	b1 := frag("b", t0.Add(time.Second), "b.example.com")
	b2 := frag("b", t0.Add(time.Second), "b.example.com", "a.example.com")
	mustSet(t, m, a)
	mustSet(t, m, b1)
	if _, _, err := m.Set(b2); err == nil {
		t.Fatal("Set(b2) succeeded, want conflict")
	}
	if got, _ := m.Get(b1.Source); got != b1 {
		t.Errorf("served b = %p, want previous version %p", got, b1)
	}
}

func TestModelOlderArrivalDisplacesYounger(t *testing.T) {
	m := NewModel()
	t0 := time.Unix(1000, 0)
	young := frag("young", t0.Add(time.Minute), "x.example.com", "y.example.com")
	old := frag("old", t0, "x.example.com")
	mustSet(t, m, young)
	displaced, _, err := m.Set(old)
	if err != nil {
		t.Fatalf("Set(old) = %v", err)
	}
	if len(displaced) != 1 || displaced[0] != young.Source {
		t.Fatalf("displaced = %v, want [young]", displaced)
	}
	// The displaced fragment loses all its domains, not only the contested one.
	if _, ok := m.Owner("y.example.com"); ok {
		t.Error("y.example.com still owned after young was displaced")
	}
	if len(m.Fragments()) != 1 {
		t.Errorf("fragments = %d, want 1", len(m.Fragments()))
	}
}

func TestModelDeleteFreesDomains(t *testing.T) {
	m := NewModel()
	t0 := time.Unix(1000, 0)
	a := frag("a", t0, "x.example.com")
	b := frag("b", t0.Add(time.Second), "x.example.com")
	mustSet(t, m, a)
	if !m.Delete(a.Source) {
		t.Fatal("Delete(a) = false")
	}
	mustSet(t, m, b)
	if m.Delete(a.Source) {
		t.Error("second Delete(a) = true")
	}
}

func TestModelFragmentsSortedAndCached(t *testing.T) {
	m := NewModel()
	t0 := time.Unix(1000, 0)
	for _, n := range []string{"c", "a", "b"} {
		mustSet(t, m, frag(n, t0, n+".example.com"))
	}
	fs := m.Fragments()
	var names []string
	for _, f := range fs {
		names = append(names, f.Source.Name)
	}
	if got := names[0] + names[1] + names[2]; got != "abc" {
		t.Errorf("order = %v, want a b c", names)
	}
	mustSet(t, m, frag("d", t0, "d.example.com"))
	if len(m.Fragments()) != 4 {
		t.Errorf("stale cache after Set: %d fragments", len(m.Fragments()))
	}
}

func TestCertificateStringHidesKey(t *testing.T) {
	c := &Certificate{Name: "ns/tls", Hosts: []string{"a"}, PrivateKey: []byte("SECRET-KEY")}
	for _, s := range []string{c.String(), c.GoString()} {
		if strings.Contains(s, "SECRET-KEY") {
			t.Errorf("key material in %q", s)
		}
	}
}

func mustSet(t *testing.T, m *Model, f *Fragment) {
	t.Helper()
	if _, _, err := m.Set(f); err != nil {
		t.Fatalf("Set(%s) = %v", f.Source, err)
	}
}

func TestRefLessMatchesString(t *testing.T) {
	refs := []ObjectRef{
		{Kind: "KIngress", Namespace: "a", Name: "b"},
		{Kind: "KIngress", Namespace: "a-x", Name: "b"},
		{Kind: "KIngress", Namespace: "a", Name: "b-"},
		{Kind: "KIngress", Namespace: "a/", Name: ""},
		{Kind: "KIngress", Namespace: "", Name: "z"},
		{Kind: "HTTPRoute", Namespace: "a", Name: "b"},
		{Kind: "KIngress", Namespace: "a", Name: "b"},
	}
	for _, a := range refs {
		for _, b := range refs {
			if got, want := refLess(a, b), a.String() < b.String(); got != want {
				t.Errorf("refLess(%s, %s) = %v, want %v", a, b, got, want)
			}
		}
	}
}

func TestModelSortedCacheFollowsSetAndDelete(t *testing.T) {
	m := NewModel()
	ref := func(n string) ObjectRef { return ObjectRef{Kind: "KIngress", Namespace: "default", Name: n} }
	set := func(n string) {
		t.Helper()
		if _, _, err := m.Set(&Fragment{Source: ref(n), VirtualHosts: []*VirtualHost{{Name: n, Domains: []string{n + ".example.com"}}}}); err != nil {
			t.Fatal(err)
		}
	}
	names := func() string {
		var out []string
		for _, f := range m.Fragments() {
			out = append(out, f.Source.Name)
		}
		return strings.Join(out, ",")
	}
	set("c")
	set("a")
	first := m.Fragments()
	set("b")
	set("a") // replaced in place
	m.Delete(ref("c"))
	set("d")
	if got := names(); got != "a,b,d" {
		t.Errorf("Fragments() = %s, want a,b,d", got)
	}
	if len(first) != 2 || first[0].Source.Name != "a" || first[1].Source.Name != "c" {
		t.Errorf("an earlier Fragments() result changed under its caller: %v", first)
	}
}

func TestModelRevisionsAndEqualFragments(t *testing.T) {
	m := NewModel()
	t0 := time.Unix(100, 0)
	a := frag("a", t0, "a.example.com")
	mustSet(t, m, a)
	revA, ok := m.RevisionOf(a.Source)
	if !ok || revA == 0 {
		t.Fatalf("RevisionOf(a) = %d, %v; want a revision", revA, ok)
	}
	// An equal fragment built again keeps the served pointer and revision.
	if _, changed, err := m.Set(frag("a", t0, "a.example.com")); err != nil || changed {
		t.Fatalf("Set(equal a) changed = %v, err = %v; want unchanged", changed, err)
	}
	frags, rev := m.Snapshot()
	if frags[0] != a || rev != revA {
		t.Errorf("after an equal Set: fragment replaced = %v, revision %d; want the old pointer at %d", frags[0] != a, rev, revA)
	}
	// A different fragment moves the revision; deleting another moves it too.
	mustSet(t, m, frag("a", t0, "a.example.com", "a2.example.com"))
	if r, _ := m.RevisionOf(a.Source); r <= revA {
		t.Errorf("RevisionOf(a) = %d after a change, want > %d", r, revA)
	}
	mustSet(t, m, frag("b", t0, "b.example.com"))
	_, before := m.Snapshot()
	m.Delete(ObjectRef{Kind: "KIngress", Namespace: "ns", Name: "b"})
	if _, after := m.Snapshot(); after <= before {
		t.Errorf("revision %d after Delete, want > %d", after, before)
	}
	if _, ok := m.RevisionOf(ObjectRef{Kind: "KIngress", Namespace: "ns", Name: "b"}); ok {
		t.Error("RevisionOf a deleted source still answers")
	}
}

// TestDomainsConflictWithoutCase: Envoy compares hosts without ASCII case,
// so the older object keeps a domain written in another case too; the
// Kelvin sign is not folded into "k".
func TestDomainsConflictWithoutCase(t *testing.T) {
	m := NewModel()
	older := &Fragment{Source: ObjectRef{Kind: "KIngress", Namespace: "a", Name: "old"}, Created: time.Unix(1, 0),
		VirtualHosts: []*VirtualHost{{Name: "old", Domains: []string{"kube.example.com"}}}}
	newer := &Fragment{Source: ObjectRef{Kind: "KIngress", Namespace: "b", Name: "new"}, Created: time.Unix(2, 0),
		VirtualHosts: []*VirtualHost{{Name: "new", Domains: []string{"KUBE.Example.com"}}}}
	kelvin := &Fragment{Source: ObjectRef{Kind: "KIngress", Namespace: "c", Name: "kelvin"}, Created: time.Unix(3, 0),
		VirtualHosts: []*VirtualHost{{Name: "kelvin", Domains: []string{"\u212Aube.example.com"}}}}
	if _, _, err := m.Set(older); err != nil {
		t.Fatal(err)
	}
	var conflict *ConflictError
	if _, _, err := m.Set(newer); !errors.As(err, &conflict) || conflict.Owner != older.Source {
		t.Errorf("Set(newer) = %v, want a conflict with %v", err, older.Source)
	}
	if _, _, err := m.Set(kelvin); err != nil {
		t.Errorf("Set(kelvin) = %v: the Kelvin sign is not a k", err)
	}
	if owner, _ := m.Owner("Kube.Example.COM"); owner != older.Source {
		t.Errorf("Owner = %v, want %v", owner, older.Source)
	}
}
