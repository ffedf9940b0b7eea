package dataplane

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestIncrementalCompile: an Apply recompiles only the virtual hosts whose
// content changed or whose clusters changed, and only the clusters whose
// Cluster or ClusterLoadAssignment changed; everything else is reused, and
// traffic follows every change.
func TestIncrementalCompile(t *testing.T) {
	const hosts = 2000
	a, b := startBackend(t, "a"), startBackend(t, "b")
	p := newTestProxy(t, Options{})

	// world builds the resources as an xDS client hands them over: fresh
	// route configuration protos every time (they arrive as one message),
	// and the previous pointers for clusters and assignments that did not
	// change. backendOf picks each host's backend.
	world := func(backendOf func(i int) *backend, prev *Resources, changedCluster int) *Resources {
		res := &Resources{Listeners: []*listenerv3.Listener{plainListener("http")}}
		var vhosts []*routev3.VirtualHost
		for i := range hosts {
			name := fmt.Sprintf("c%d", i)
			vhosts = append(vhosts, virtualHost(name, []string{fmt.Sprintf("h%d.example.com", i)}, routeTo(prefixMatch("/"), name)))
			if prev != nil && i != changedCluster {
				res.Clusters = append(res.Clusters, prev.Clusters[i])
				res.Endpoints = append(res.Endpoints, prev.Endpoints[i])
				continue
			}
			res.Clusters = append(res.Clusters, edsCluster(name, false))
			res.Endpoints = append(res.Endpoints, cla(name, backendOf(i).addr))
		}
		rc := routeConfig("http", vhosts...)
		rc.ValidateClusters = wrapperspb.Bool(true)
		res.Routes = []*routev3.RouteConfiguration{proto.Clone(rc).(*routev3.RouteConfiguration)}
		return res
	}
	allA := func(int) *backend { return a }
	res := world(allA, nil, -1)
	mustApply(t, p, res)
	if st := p.LastCompile(); st.VirtualHosts != hosts || st.Clusters != hosts {
		t.Fatalf("first Apply compiled %+v, want every virtual host and cluster", st)
	}
	get := func(host string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, proxyURL(t, p, "http")+"/", nil)
		req.Host = host
		reply, resp := getEcho(t, http.DefaultClient, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", host, resp.StatusCode)
		}
		return reply.Backend
	}

	// The same content again, in new route protos: nothing is compiled.
	res = world(allA, res, -1)
	mustApply(t, p, res)
	if st := p.LastCompile(); st.VirtualHosts != 0 || st.VirtualHostsReused != hosts || st.Clusters != 0 || st.ClustersReused != hosts {
		t.Errorf("unchanged config compiled %+v, want all reused", st)
	}

	// One virtual host changes: it alone is compiled, and it is served.
	res = world(allA, res, -1)
	vh := res.Routes[0].VirtualHosts[1234]
	vh.Routes[0].RequestHeadersToAdd = setHeaders(map[string]string{"X-Changed": "yes"})
	mustApply(t, p, res)
	if st := p.LastCompile(); st.VirtualHosts != 1 || st.VirtualHostsReused != hosts-1 || st.Clusters != 0 {
		t.Errorf("one changed virtual host compiled %+v, want 1 virtual host and no cluster", st)
	}
	req, _ := http.NewRequest(http.MethodGet, proxyURL(t, p, "http")+"/", nil)
	req.Host = "h1234.example.com"
	if reply, _ := getEcho(t, http.DefaultClient, req); http.Header(reply.Headers).Get("X-Changed") != "yes" {
		t.Error("the changed virtual host is not served")
	}

	// One cluster's endpoints move to b: that cluster and the one virtual
	// host routing to it are compiled, and its traffic moves.
	res = world(func(i int) *backend {
		if i == 42 {
			return b
		}
		return a
	}, res, 42)
	res.Routes[0].VirtualHosts[1234] = vh
	mustApply(t, p, res)
	if st := p.LastCompile(); st.Clusters != 1 || st.ClustersReused != hosts-1 || st.VirtualHosts != 1 {
		t.Errorf("one changed assignment compiled %+v, want 1 cluster and its 1 virtual host", st)
	}
	if got := get("h42.example.com"); got != "b" {
		t.Errorf("h42 answered from %q after its endpoints moved to b", got)
	}
	if got := get("h41.example.com"); got != "a" {
		t.Errorf("h41 answered from %q, want a", got)
	}

	// A changed route configuration is validated whole, as in Envoy: a
	// cached virtual host whose cluster is gone fails validate_clusters.
	next := world(allA, res, -1)
	next.Clusters = append(next.Clusters[:7:7], next.Clusters[8:]...)
	next.Routes[0].VirtualHosts[0].Routes[0].RequestHeadersToAdd = setHeaders(map[string]string{"X-Other": "1"})
	if err := p.Apply(next); err == nil {
		t.Error("a changed route configuration naming a removed cluster was accepted")
	}
	if got := get("h42.example.com"); got != "b" {
		t.Errorf("after a rejected Apply h42 answered from %q, want the last good config's b", got)
	}
}

// TestDomainIndexPatchedMatchesRebuilt: after random additions, removals,
// domain moves and renames, the patched domain index of each table is
// exactly the one a full rebuild makes, and a duplicate domain is refused
// on both paths.
func TestDomainIndexPatchedMatchesRebuilt(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	domains := func(i int) []string {
		switch i % 5 {
		case 0:
			return []string{fmt.Sprintf("*.w%d.example.com", i)}
		case 1:
			return []string{fmt.Sprintf("p%d.*", i)}
		default:
			return []string{fmt.Sprintf("h%d.example.com", i), fmt.Sprintf("h%d.example.com:*", i)}
		}
	}
	live := map[int]int{} // host id -> version
	for i := range 200 {
		live[i] = 0
	}
	build := func() *routev3.RouteConfiguration {
		var vhs []*routev3.VirtualHost
		for i := range 400 {
			if ver, ok := live[i]; ok {
				vhs = append(vhs, virtualHost(fmt.Sprintf("v%d-%d", i, ver), domains(i), routeTo(prefixMatch("/"), "c")))
			}
		}
		if _, ok := live[-1]; ok {
			vhs = append(vhs, virtualHost("star", []string{"*"}, routeTo(prefixMatch("/"), "c")))
		}
		return routeConfig("r", vhs...)
	}
	clusters := map[string]*cluster{"c": {name: "c"}}
	cache := newVhostCache(nil)
	var prev *routeTable
	for step := range 300 {
		switch op := rng.IntN(4); {
		case op == 0:
			live[rng.IntN(400)] = 0
		case op == 1:
			for id := range live {
				delete(live, id)
				break
			}
		case op == 2:
			for id := range live {
				live[id]++
				break
			}
		default:
			if _, ok := live[-1]; ok {
				delete(live, -1)
			} else {
				live[-1] = 0
			}
		}
		rc := build()
		cache = newVhostCache(cache)
		patched, err := compileRoutes(rc, prev, clusters, cache)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		full, err := compileRoutes(rc, nil, clusters, newVhostCache(nil))
		if err != nil {
			t.Fatal(err)
		}
		for _, vh := range rc.VirtualHosts {
			for _, d := range vh.Domains {
				host := strings.ReplaceAll(strings.TrimSuffix(d, ":*"), "*", "x")
				a, b := patched.findVhost(host), full.findVhost(host)
				if a == nil || b == nil || a.name != b.name {
					t.Fatalf("step %d: %s finds %v patched, %v rebuilt", step, host, a, b)
				}
			}
		}
		wild := func(rt *routeTable) (n int) {
			for _, set := range append(slices.Clone(rt.suffix), rt.prefix...) {
				n += len(set.m)
			}
			return n
		}
		if wild(patched) != wild(full) {
			t.Fatalf("step %d: %d wildcard domains patched, %d rebuilt", step, wild(patched), wild(full))
		}
		if len(patched.index.exact) != len(full.index.exact) || (patched.index.star == nil) != (full.index.star == nil) {
			t.Fatalf("step %d: %d exact domains patched, %d rebuilt; star %v/%v", step, len(patched.index.exact), len(full.index.exact), patched.index.star != nil, full.index.star != nil)
		}
		if got := patched.findVhost("gone.example.org"); (got == nil) != (full.index.star == nil) {
			t.Fatalf("step %d: an unknown host finds %v", step, got)
		}
		prev = patched
	}

	// A duplicate domain is refused when patched in, as when rebuilt.
	rc := build()
	rc.VirtualHosts = append(rc.VirtualHosts, virtualHost("dup", rc.VirtualHosts[0].Domains, routeTo(prefixMatch("/"), "c")))
	if _, err := compileRoutes(rc, prev, clusters, newVhostCache(cache)); err == nil || !strings.Contains(err.Error(), "also used by virtual host") {
		t.Errorf("patched duplicate domain: err = %v", err)
	}
	if _, err := compileRoutes(rc, nil, clusters, newVhostCache(nil)); err == nil {
		t.Error("rebuilt duplicate domain accepted")
	}
}
