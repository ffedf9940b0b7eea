package gateway

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.uber.org/zap"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/translate"
	"github.com/weir-dev/weir/pkg/xds"
)

func fragment(name string, port uint32) *ir.Fragment {
	ref := ir.ObjectRef{Kind: "KIngress", Namespace: "default", Name: name}
	backend := ir.BackendName("default", name, 80)
	return &ir.Fragment{
		Source: ref,
		VirtualHosts: []*ir.VirtualHost{{
			Name: name, Domains: []string{name + ".example.com"}, Listeners: ir.ListenerSet(ir.ExternalHTTP),
			Routes: []*ir.Route{{Name: name, Match: ir.Match{Path: ir.PathMatch{Kind: ir.PathPrefix, Value: "/"}},
				Backends: []ir.WeightedBackend{{BackendName: backend, Weight: 100}}, Provenance: ir.Provenance{ref}}},
			Provenance: ir.Provenance{ref},
		}},
		Backends: []*ir.Backend{{Name: backend, Service: ir.ServiceRef{Namespace: "default", Name: name, Port: 80},
			Endpoints: []ir.Endpoint{{Address: "10.0.0.1", Port: port}}, Provenance: ir.Provenance{ref}}},
	}
}

func newSyncer(t *testing.T) (*Syncer, *xds.Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	server := xds.NewServer(ctx, xds.Options{PointerIdentity: true}) // as weir-controller runs it
	return NewSyncer(ir.NewModel(), translate.DefaultOptions(), server, zap.NewNop().Sugar()), server
}

func TestSyncAppliesModelAndAttributesSources(t *testing.T) {
	s, server := newSyncer(t)
	if _, _, err := s.Model().Set(fragment("hello", 8012)); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if s.Resources() == nil || len(s.Resources().Clusters) != 1 {
		t.Fatalf("resources = %+v", s.Resources())
	}
	refs := s.SourcesOf(resource.ClusterType, []string{"default/hello:80", "unknown"})
	if len(refs) != 1 || refs[0].Name != "hello" {
		t.Errorf("SourcesOf = %v, want [hello]", refs)
	}

	// An endpoint change moves only the EDS version.
	cds, lds := server.Version(resource.ClusterType), server.Version(resource.ListenerType)
	eds := server.Version(resource.EndpointType)
	if _, _, err := s.Model().Set(fragment("hello", 9000)); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if server.Version(resource.EndpointType) == eds {
		t.Error("EDS version did not change")
	}
	if server.Version(resource.ClusterType) != cds || server.Version(resource.ListenerType) != lds {
		t.Error("an endpoint change touched CDS or LDS")
	}
}

func TestTriggersCoalesce(t *testing.T) {
	s, _ := newSyncer(t)
	for i := 0; i < 100; i++ {
		s.Trigger()
	}
	if n := len(s.trigger); n != 1 {
		t.Fatalf("100 triggers left %d pending syncs, want 1", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for s.Syncs() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling for the first sync
	}
	cancel()
	<-done
	// Run has stopped: nothing can sync any more, and nothing was left
	// queued for a second sync.
	if got, pending := s.Syncs(), len(s.trigger); got != 1 || pending != 0 {
		t.Errorf("100 triggers before Run made %d syncs and left %d pending, want 1 and 0", got, pending)
	}
}

func TestSetOptionsRetranslates(t *testing.T) {
	s, _ := newSyncer(t)
	if _, _, err := s.Model().Set(fragment("hello", 8012)); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	opts := translate.DefaultOptions()
	opts.ExternalHTTPPort = 9999
	s.SetOptions(opts)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, l := range s.Resources().Listeners {
		if l.GetName() == "external-http" && l.GetAddress().GetSocketAddress().GetPortValue() != 9999 {
			t.Errorf("external-http port = %d, want 9999", l.GetAddress().GetSocketAddress().GetPortValue())
		}
	}
}

// TestSourcesOfErrorNamesTheVirtualHost: a gateway that rejects a route
// table shared by many KIngresses is reported on the one whose virtual
// host its error names, not on all of them.
func TestSourcesOfErrorNamesTheVirtualHost(t *testing.T) {
	s, _ := newSyncer(t)
	for _, n := range []string{"a", "b", "c"} {
		if _, _, err := s.Model().Set(fragment(n, 8012)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	var rc string
	idx := -1
	for _, r := range s.Resources().Routes {
		for i, vh := range r.GetVirtualHosts() {
			if strings.HasPrefix(vh.GetName(), "b") || strings.Contains(vh.GetName(), "/b") {
				rc, idx = r.GetName(), i
			}
		}
	}
	if idx < 0 {
		t.Fatalf("no virtual host of b in %v", s.Resources().Routes)
	}
	errText := fmt.Sprintf(`route_configuration %q: virtual_hosts[%d].routes[0].route.cluster: unknown cluster "x"`, rc, idx)
	refs := s.SourcesOfError(resource.RouteType, []string{rc}, errText)
	if len(refs) != 1 || refs[0].Name != "b" {
		t.Errorf("SourcesOfError = %v, want [b]", refs)
	}
	if refs := s.SourcesOfError(resource.RouteType, []string{rc}, "something else"); len(refs) != 3 {
		t.Errorf("an error naming no virtual host gives %v, want every source of %s", refs, rc)
	}
}

// TestProblemsFollowTheServedConfig: a problem is known only once a sync
// covers the fragment's revision, and after each sync the callback names
// the sources with problems and those whose problems went away, so their
// status follows.
func TestProblemsFollowTheServedConfig(t *testing.T) {
	s, _ := newSyncer(t)
	var changed [][]ir.ObjectRef
	s.OnProblemsChanged(func(refs []ir.ObjectRef) { changed = append(changed, refs) })

	bad := fragment("bad", 8012)
	bad.VirtualHosts[0].Domains = append(bad.VirtualHosts[0].Domains, "\u212Aelvin.example.com")
	bad.VirtualHosts[0].Field = "spec.rules[0]"
	if _, _, err := s.Model().Set(fragment("good", 8012)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Model().Set(bad); err != nil {
		t.Fatal(err)
	}
	ref := bad.Source
	rev, _ := s.Model().RevisionOf(ref)
	if _, known := s.ProblemsAt(ref, rev); known {
		t.Fatal("problems known before any sync")
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	ps, known := s.ProblemsAt(ref, rev)
	if !known || len(ps) != 1 || ps[0].Reason != translate.ReasonInvalidHost || !strings.HasPrefix(ps[0].Message, "spec.rules[0]: ") {
		t.Fatalf("ProblemsAt = %+v, %v; want one InvalidHost problem at spec.rules[0]", ps, known)
	}
	if good, _ := s.ProblemsAt(fragment("good", 0).Source, rev); len(good) != 0 {
		t.Errorf("good has problems: %+v", good)
	}
	if len(changed) != 1 || len(changed[0]) != 1 || changed[0][0] != ref {
		t.Errorf("changed = %v, want [[%v]]", changed, ref)
	}

	// A source whose problem remains is told again: its status may be of a
	// spec the previous sync had not covered yet. good, without problems,
	// is never told.
	if _, _, err := s.Model().Set(fragment("good", 9000)); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if len(changed) != 2 || len(changed[1]) != 1 || changed[1][0] != ref {
		t.Errorf("changed = %v after a sync with bad's problem remaining, want [%v] again", changed, ref)
	}

	// Fixing the host clears the problem and says so.
	if _, _, err := s.Model().Set(fragment("bad", 8012)); err != nil {
		t.Fatal(err)
	}
	rev, _ = s.Model().RevisionOf(ref)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if ps, known := s.ProblemsAt(ref, rev); !known || len(ps) != 0 {
		t.Errorf("after the fix: %+v, %v", ps, known)
	}
	if len(changed) != 3 || len(changed[2]) != 1 || changed[2][0] != ref {
		t.Errorf("changed = %v, want a call for %v, whose problem went away", changed, ref)
	}
	// Once nothing has problems, nobody is told.
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if len(changed) != 3 {
		t.Errorf("changed = %v after a sync without problems", changed)
	}
}
