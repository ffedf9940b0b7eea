package translate

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weir-dev/weir/pkg/ir"
)

// The aggregate tables combine the parts of all fragments into resources.
// Each keeps its parts sorted across calls and is updated from the delta of
// a call, so that a call that changes k fragments costs O(k log k) plus a
// linear pass over pointers, not a re-sort of everything.

// mergeSorted returns prev without its dead parts, merged with added.
// prev must be sorted by compare; added is sorted in place.
func mergeSorted[P part](prev, added []P, compare func(a, b P) int) []P {
	slices.SortFunc(added, compare)
	out := make([]P, 0, len(prev)+len(added))
	i := 0
	for _, p := range prev {
		if p.state().dead {
			continue
		}
		for i < len(added) && compare(added[i], p) < 0 {
			out = append(out, added[i])
			i++
		}
		out = append(out, p)
	}
	return append(out, added[i:]...)
}

func compareVhosts(a, b *vhostPart) int {
	return cmp.Or(strings.Compare(a.name, b.name), strings.Compare(a.entry.source, b.entry.source))
}

func compareBackends(a, b *backendPart) int {
	return cmp.Or(strings.Compare(a.name, b.name), strings.Compare(a.entry.source, b.entry.source))
}

func compareCerts(a, b *certPart) int {
	return cmp.Or(strings.Compare(a.name, b.name), strings.Compare(a.entry.source, b.entry.source))
}

// roleTable builds the RouteConfiguration of one listener role.
type roleTable struct {
	role ir.ListenerRole
	// parts are the emittable virtual hosts with this role, sorted by name.
	parts []*vhostPart
	// domains and names count the parts claiming each domain and each
	// virtual host name.
	domains, names map[string]int
	// contested is the number of domains and names with more than one
	// claimant. While it is zero, which is the normal case, no part needs to
	// be left out.
	contested int
	// sourceCount counts parts per source object, for provenance.
	sourceCount map[ir.ObjectRef]int

	initialized bool
	changed     bool
	// sourcesChanged is set when the Resources.Sources entries of the route
	// configuration or its virtual hosts changed.
	sourcesChanged  bool
	included        []*vhostPart
	config          *routev3.RouteConfiguration
	usesUnavailable bool
	provenance      ir.Provenance
	warnings        []Problem
}

func newRoleTable(role ir.ListenerRole) *roleTable {
	return &roleTable{role: role, domains: map[string]int{}, names: map[string]int{}, sourceCount: map[ir.ObjectRef]int{}}
}

func (rt *roleTable) serves(p *vhostPart) bool { return p.proto != nil && p.roles.Has(rt.role) }

func (rt *roleTable) update(d *delta) {
	var added, dead []*vhostPart
	sourcesChanged := !rt.initialized
	// Additions first: a part replaced by one with the same sources then
	// never drops a source count to zero.
	for _, p := range d.addedVhosts {
		if rt.serves(p) {
			added = append(added, p)
			sourcesChanged = rt.claim(p, +1) || sourcesChanged
		}
	}
	for _, p := range d.deadVhosts {
		if rt.serves(p) {
			dead = append(dead, p)
			sourcesChanged = rt.claim(p, -1) || sourcesChanged
		}
	}
	rt.changed = !rt.initialized || len(dead) > 0 || len(added) > 0
	rt.sourcesChanged = rt.changed && sourcesChanged
	if !rt.changed || rt.replaceInPlace(added, dead) {
		return
	}
	rt.initialized = true
	rt.parts = mergeSorted(rt.parts, added, compareVhosts)
	previous := rt.included
	rt.resolveConflicts()
	rt.sourcesChanged = rt.sourcesChanged || !sameVhostSources(previous, rt.included)

	vhosts := make([]*routev3.VirtualHost, len(rt.included))
	rt.usesUnavailable = false
	for i, p := range rt.included {
		vhosts[i] = p.proto
		rt.usesUnavailable = rt.usesUnavailable || p.usesUnavailable
	}
	if rt.config == nil || !slices.Equal(rt.config.VirtualHosts, vhosts) {
		rt.config = newRouteConfiguration(rt.role.String(), vhosts)
	}
	if sourcesChanged {
		rt.provenance = sortedRefs(rt.sourceCount)
	}
}

// replaceInPlace handles the usual change, where each new part takes the
// place of a dead one with the same name, domains and sources, so that only
// virtual host protos change. It costs O(k log n) plus one copy of the
// virtual host list. It reports false, changing nothing, for any other
// change.
func (rt *roleTable) replaceInPlace(added, dead []*vhostPart) bool {
	slots, ok := matchReplacements(rt.parts, added, dead, compareVhosts, func(old, p *vhostPart) bool {
		return old.usesUnavailable == p.usesUnavailable && slices.Equal(old.proto.Domains, p.proto.Domains) &&
			slices.Equal(old.provenance, p.provenance)
	})
	if !ok || !rt.initialized {
		return false
	}
	vhosts := slices.Clone(rt.config.VirtualHosts)
	for k, i := range slots {
		old, p := rt.parts[i], added[k]
		rt.parts[i] = p
		// included is parts itself unless a conflict left some out; the new
		// part is left out exactly when the old one was.
		if j, found := slices.BinarySearchFunc(rt.included, p, compareVhosts); found {
			if rt.included[j] == old || rt.included[j] == p {
				rt.included[j] = p
				vhosts[j] = p.proto
			}
		}
	}
	rt.config = newRouteConfiguration(rt.role.String(), vhosts)
	return true
}

// matchReplacements pairs each added part with the dead part of the same
// sort key in parts, for which compatible must hold. It returns the index
// of each pair in parts, or false unless every added and every dead part
// pairs up.
func matchReplacements[P part](parts, added, dead []P, compare func(a, b P) int, compatible func(old, p P) bool) ([]int, bool) {
	if len(added) == 0 || len(added) != len(dead) {
		return nil, false
	}
	slots := make([]int, len(added))
	for k, p := range added {
		i, found := slices.BinarySearchFunc(parts, p, compare)
		if !found || !parts[i].state().dead || !compatible(parts[i], p) {
			return nil, false
		}
		slots[k] = i
	}
	return slots, true
}

func newRouteConfiguration(name string, vhosts []*routev3.VirtualHost) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name:                            name,
		VirtualHosts:                    vhosts,
		ValidateClusters:                wrapperspb.Bool(true),
		MostSpecificHeaderMutationsWins: true,
		// A Host header with a port reaches the same virtual host, exact or
		// wildcard; otherwise "*.example.com" misses "a.example.com:8080".
		IgnorePortInHostMatching: true,
	}
}

// claim adds (delta +1) or removes (-1) p's domains, name and sources. It
// reports whether the set of sources changed.
func (rt *roleTable) claim(p *vhostPart, delta int) (sourcesChanged bool) {
	count := func(claims map[string]int, key string) {
		before := claims[key]
		after := before + delta
		switch {
		case before <= 1 && after > 1:
			rt.contested++
		case before > 1 && after <= 1:
			rt.contested--
		}
		if after == 0 {
			delete(claims, key)
		} else {
			claims[key] = after
		}
	}
	count(rt.names, p.name)
	for _, d := range p.proto.Domains {
		count(rt.domains, d)
	}
	for _, ref := range p.provenance {
		n := rt.sourceCount[ref] + delta
		if n == 0 {
			delete(rt.sourceCount, ref)
			sourcesChanged = true
		} else {
			rt.sourceCount[ref] = n
			sourcesChanged = sourcesChanged || n == 1 && delta > 0
		}
	}
	return sourcesChanged
}

// resolveConflicts decides which parts are served. Envoy rejects a route
// configuration with two virtual hosts of the same name or a domain in two
// virtual hosts, so the first by name keeps it and the other is left out
// whole: serving part of its domains would be a surprise.
func (rt *roleTable) resolveConflicts() {
	rt.warnings = nil
	if rt.contested == 0 {
		rt.included = rt.parts
		return
	}
	owner := make(map[string]*vhostPart, len(rt.domains))
	nameOwner := make(map[string]*vhostPart, len(rt.names))
	rt.included = make([]*vhostPart, 0, len(rt.parts))
	for _, p := range rt.parts {
		if other := nameOwner[p.name]; other != nil {
			rt.warnings = append(rt.warnings, p.problem(ReasonDomainConflict, "%s: virtual host %q left out: a virtual host of the same name comes from %s",
				rt.role, p.name, other.entry.source))
			continue
		}
		if i := slices.IndexFunc(p.proto.Domains, func(d string) bool { return owner[d] != nil }); i >= 0 {
			d := p.proto.Domains[i]
			other := owner[d]
			rt.warnings = append(rt.warnings, p.problem(ReasonDomainConflict, "%s: virtual host %q left out: domain %q is already served by virtual host %q of %s",
				rt.role, p.name, d, other.name, other.entry.source))
			continue
		}
		nameOwner[p.name] = p
		for _, d := range p.proto.Domains {
			owner[d] = p
		}
		rt.included = append(rt.included, p)
	}
}

// clusterTable builds the clusters and load assignments. Backends with the
// same name in several fragments become one cluster.
type clusterTable struct {
	parts          []*backendPart
	initialized    bool
	changed        bool
	sourcesChanged bool
	unavailable    bool

	clusters  []*clusterv3.Cluster
	endpoints []*endpointv3.ClusterLoadAssignment
	// clusterSources and endpointSources are parallel to clusters and
	// endpoints.
	clusterSources, endpointSources []keyedSource
	warnings                        []Problem
}

// keyedSource is one entry of Resources.Sources.
type keyedSource struct {
	key        string
	provenance ir.Provenance
}

func sameSources(a, b []keyedSource) bool {
	return slices.EqualFunc(a, b, func(x, y keyedSource) bool {
		return x.key == y.key && slices.Equal(x.provenance, y.provenance)
	})
}

func sameVhostSources(a, b []*vhostPart) bool {
	return slices.EqualFunc(a, b, func(x, y *vhostPart) bool {
		return x == y || x.sourceKey == y.sourceKey && slices.Equal(x.provenance, y.provenance)
	})
}

func (ct *clusterTable) update(d *delta, s *shared, unavailable bool) {
	ct.changed = !ct.initialized || len(d.addedBackends) > 0 || len(d.deadBackends) > 0 ||
		d.orderChanged || unavailable != ct.unavailable
	ct.sourcesChanged = false
	if !ct.changed || ct.replaceInPlace(d, unavailable) {
		return
	}
	ct.initialized, ct.unavailable = true, unavailable
	ct.parts = mergeSorted(ct.parts, d.addedBackends, compareBackends)

	var clusters []*clusterv3.Cluster
	var endpoints []*endpointv3.ClusterLoadAssignment
	clusterSources := make([]keyedSource, 0, len(ct.clusterSources)+len(d.addedBackends))
	endpointSources := make([]keyedSource, 0, len(ct.endpointSources)+len(d.addedBackends))
	ct.warnings = nil
	addUnavailable := func() {
		clusters = append(clusters, s.unavailable)
		endpoints = append(endpoints, s.unavailableAssign)
		clusterSources = append(clusterSources, keyedSource{key: unavailableClusterKey})
		endpointSources = append(endpointSources, keyedSource{key: unavailableEndpointKey})
		unavailable = false
	}
	for start := 0; start < len(ct.parts); {
		end := start + 1
		for end < len(ct.parts) && ct.parts[end].name == ct.parts[start].name {
			end++
		}
		group := ct.parts[start:end]
		start = end

		if unavailable && group[0].name > UnavailableCluster {
			addUnavailable()
		}
		winner := group[0]
		prov := winner.provenance
		if len(group) > 1 {
			winner = slices.MinFunc(group, func(a, b *backendPart) int { return cmp.Compare(a.entry.pos, b.entry.pos) })
			for _, p := range group {
				if p != winner {
					prov = unionProvenance(prov, p.provenance)
				}
				if p.def != winner.def {
					ct.warnings = append(ct.warnings, Problem{Source: p.entry.ref, Reason: ReasonNotServed,
						Message: fmt.Sprintf("backend %q is defined differently by %s; the definition of %s is used", p.name, winner.entry.source, winner.entry.source)})
				}
			}
		}
		clusters = append(clusters, winner.cluster)
		clusterSources = append(clusterSources, keyedSource{winner.clusterKey, prov})
		if winner.cla != nil {
			endpoints = append(endpoints, winner.cla)
			endpointSources = append(endpointSources, keyedSource{winner.endpointKey, prov})
		}
	}
	if unavailable {
		addUnavailable()
	}
	ct.clusters = keepEqual(ct.clusters, clusters, (*clusterv3.Cluster).GetName)
	ct.endpoints = keepEqual(ct.endpoints, endpoints, (*endpointv3.ClusterLoadAssignment).GetClusterName)
	ct.sourcesChanged = !sameSources(ct.clusterSources, clusterSources) || !sameSources(ct.endpointSources, endpointSources)
	ct.clusterSources, ct.endpointSources = clusterSources, endpointSources
}

// replaceInPlace handles the usual change, endpoints or protocol of a
// backend, where each new part takes the place of a dead one with the same
// name, source and provenance. It reports false, changing nothing, for any
// other change.
func (ct *clusterTable) replaceInPlace(d *delta, unavailable bool) bool {
	if !ct.initialized || d.orderChanged || unavailable != ct.unavailable {
		return false
	}
	slots, ok := matchReplacements(ct.parts, d.addedBackends, d.deadBackends, compareBackends, func(old, p *backendPart) bool {
		return old.def == p.def && slices.Equal(old.provenance, p.provenance)
	})
	if !ok {
		return false
	}
	clusters, endpoints := ct.clusters, ct.endpoints
	for k, i := range slots {
		old, p := ct.parts[i], d.addedBackends[k]
		ct.parts[i] = p
		if ct.groupWinner(i) != p {
			continue
		}
		clusters = replaceByName(ct.clusters, clusters, p.cluster, (*clusterv3.Cluster).GetName)
		if p.cla != old.cla {
			endpoints = replaceByName(ct.endpoints, endpoints, p.cla, (*endpointv3.ClusterLoadAssignment).GetClusterName)
		}
	}
	ct.clusters, ct.endpoints = clusters, endpoints
	return true
}

// groupWinner returns the part that provides the cluster named like
// ct.parts[i]: the one of the fragment first in the input.
func (ct *clusterTable) groupWinner(i int) *backendPart {
	name := ct.parts[i].name
	start, end := i, i+1
	for start > 0 && ct.parts[start-1].name == name {
		start--
	}
	for end < len(ct.parts) && ct.parts[end].name == name {
		end++
	}
	return slices.MinFunc(ct.parts[start:end], func(a, b *backendPart) int { return cmp.Compare(a.entry.pos, b.entry.pos) })
}

// replaceByName returns list with the element named like m replaced by m,
// copying list first unless it already differs from published, which the
// previous Resources still holds. An equal element is kept, so its pointer
// stays stable.
func replaceByName[M proto.Message](published, list []M, m M, name func(M) string) []M {
	n := name(m)
	j, found := slices.BinarySearchFunc(list, n, func(e M, n string) int { return strings.Compare(name(e), n) })
	if !found || any(list[j]) == any(m) || proto.Equal(list[j], m) {
		return list
	}
	if sameSlice(list, published) {
		list = slices.Clone(list)
	}
	list[j] = m
	return list
}

var (
	unavailableClusterKey  = SourceKey(resourcev3.ClusterType, UnavailableCluster)
	unavailableEndpointKey = SourceKey(resourcev3.EndpointType, UnavailableCluster)
)

func (ct *clusterTable) addSources(out map[string]ir.Provenance) {
	for _, s := range ct.clusterSources {
		out[s.key] = s.provenance
	}
	for _, s := range ct.endpointSources {
		out[s.key] = s.provenance
	}
}

// keepEqual returns next, except that an element equal to the one of the
// same name in prev is replaced by prev's pointer, and that prev itself is
// returned when every element is then the same. Both are sorted by name.
// This keeps pointers stable when a shared resource moves from one fragment
// to another without changing.
func keepEqual[M proto.Message](prev, next []M, name func(M) string) []M {
	same := len(prev) == len(next)
	j := 0
	for i, m := range next {
		n := name(m)
		for j < len(prev) && name(prev[j]) < n {
			j++
		}
		if j < len(prev) && name(prev[j]) == n && any(prev[j]) != any(m) && proto.Equal(prev[j], m) {
			next[i] = prev[j]
		}
		same = same && i < len(prev) && any(prev[i]) == any(next[i])
	}
	if same && prev != nil {
		return prev
	}
	return next
}

// certTable builds the secrets and the TLS listeners. A certificate name is
// one secret and, per TLS role, one filter chain for the union of its hosts.
type certTable struct {
	parts       []*certPart
	initialized bool
	changed     bool

	secrets       []*tlsv3.Secret
	secretSources []keyedSource // parallel to secrets
	// chains memoizes filter chains by role and certificate name.
	chains          [len(tlsRoles)]map[string]chainMemo
	listeners       [len(tlsRoles)]*listenerv3.Listener
	listenerSources map[string]ir.Provenance
	warnings        []Problem
}

type chainMemo struct {
	serverNames []string
	validation  *ir.ClientValidation
	chain       *listenerv3.FilterChain
}

// certGroup is one certificate name, merged across fragments.
type certGroup struct {
	name       string
	secret     *tlsv3.Secret
	secretKey  string
	validation *ir.ClientValidation
	provenance ir.Provenance
	hosts      [len(tlsRoles)][]string
	// members are the parts merged into the group, to report problems on.
	members []*certPart
}

func (ct *certTable) update(d *delta, s *shared) error {
	ct.changed = !ct.initialized || len(d.addedCerts) > 0 || len(d.deadCerts) > 0 || d.orderChanged
	if !ct.changed {
		return nil
	}
	ct.initialized = true
	ct.parts = mergeSorted(ct.parts, d.addedCerts, compareCerts)
	ct.warnings = nil

	var groups []certGroup
	for start := 0; start < len(ct.parts); {
		end := start + 1
		for end < len(ct.parts) && ct.parts[end].name == ct.parts[start].name {
			end++
		}
		group := ct.parts[start:end]
		start = end

		winner := slices.MinFunc(group, func(a, b *certPart) int { return cmp.Compare(a.entry.pos, b.entry.pos) })
		g := certGroup{name: winner.name, secret: winner.secret, secretKey: winner.secretKey, validation: winner.validation, provenance: winner.provenance, members: group}
		for _, p := range group {
			if p != winner {
				g.provenance = unionProvenance(g.provenance, p.provenance)
				if string(p.chain) != string(winner.chain) || string(p.key) != string(winner.key) {
					ct.warnings = append(ct.warnings, p.problem(ReasonNotServed, "certificate %q has different key material in %s; the one of %s is used",
						p.name, winner.entry.source, winner.entry.source))
				}
				if !sameValidation(p.validation, winner.validation) {
					// Its hosts are left out rather than checked against
					// another CA: their routes, which require this
					// chain's mark, then refuse every request.
					ct.warnings = append(ct.warnings, p.problem(ReasonNotServed, "certificate %q checks clients differently in %s than in %s; its hosts are left out",
						p.name, p.entry.source, winner.entry.source))
					continue
				}
			}
			for i, role := range tlsRoles {
				if p.roles.Has(role) {
					g.hosts[i] = append(g.hosts[i], p.hosts...)
				}
			}
		}
		if len(group) > 1 {
			for i := range g.hosts {
				g.hosts[i] = normalizeHosts(g.hosts[i])
			}
		}
		groups = append(groups, g)
	}

	secrets := make([]*tlsv3.Secret, len(groups))
	ct.secretSources = make([]keyedSource, len(groups))
	for i, g := range groups {
		secrets[i], ct.secretSources[i] = g.secret, keyedSource{g.secretKey, g.provenance}
	}
	ct.secrets = keepEqual(ct.secrets, secrets, (*tlsv3.Secret).GetName)

	ct.listenerSources = map[string]ir.Provenance{}
	for i, role := range tlsRoles {
		if err := ct.buildListener(i, role, groups, s); err != nil {
			return err
		}
	}
	return nil
}

// buildListener builds the TLS listener of role from the certificate groups,
// sorted by name. A server name may be in one filter chain only (Envoy
// rejects duplicates), so the first certificate by name keeps it.
func (ct *certTable) buildListener(i int, role ir.ListenerRole, groups []certGroup, s *shared) error {
	prevMemo := ct.chains[i]
	memo := map[string]chainMemo{}
	owner := map[string]string{}
	var chains []*listenerv3.FilterChain
	sources := map[ir.ObjectRef]int{}
	for _, g := range groups {
		hosts := g.hosts[i]
		if len(hosts) == 0 {
			continue
		}
		keep := hosts
		if slices.ContainsFunc(hosts, func(h string) bool { return owner[h] != "" }) {
			keep = nil
			for _, h := range hosts {
				if other := owner[h]; other != "" {
					g.report(&ct.warnings, role, h, ReasonServerNameConflict, "%s: server name %q of certificate %q left out: certificate %q already serves it",
						role, h, g.name, other)
				} else {
					keep = append(keep, h)
				}
			}
			if len(keep) == 0 {
				g.report(&ct.warnings, role, "", ReasonServerNameConflict, "%s: certificate %q left out: all its server names are served by other certificates", role, g.name)
				continue
			}
		}
		for _, h := range keep {
			owner[h] = g.name
		}
		m, ok := prevMemo[g.name]
		if !ok || !slices.Equal(m.serverNames, keep) || !sameValidation(m.validation, g.validation) {
			chain, err := tlsFilterChain(role, g.name, keep, g.validation, s)
			if err != nil {
				return err
			}
			m = chainMemo{serverNames: keep, validation: g.validation, chain: chain}
		}
		memo[g.name] = m
		chains = append(chains, m.chain)
		for _, ref := range g.provenance {
			sources[ref]++
		}
	}
	ct.chains[i] = memo
	switch prev := ct.listeners[i]; {
	case len(chains) == 0:
		ct.listeners[i] = nil
	case prev != nil && slices.Equal(prev.FilterChains, chains):
	default:
		ct.listeners[i] = tlsListener(role, chains, s)
	}
	if len(chains) > 0 {
		ct.listenerSources[role.String()] = sortedRefs(sources)
	}
	return nil
}

// report adds a problem for each member of g on role that has host, or
// for each member on role if host is empty.
func (g *certGroup) report(out *[]Problem, role ir.ListenerRole, host, reason, format string, args ...any) {
	for _, p := range g.members {
		if p.roles.Has(role) && (host == "" || slices.Contains(p.hosts, host)) {
			*out = append(*out, p.problem(reason, format, args...))
		}
	}
}

func (ct *certTable) addSources(out map[string]ir.Provenance) {
	for _, s := range ct.secretSources {
		out[s.key] = s.provenance
	}
}

// unionProvenance returns the refs of a and b, without duplicates. It
// returns a itself when b adds nothing.
func unionProvenance(a, b ir.Provenance) ir.Provenance {
	var out ir.Provenance
	for _, ref := range b {
		if !slices.Contains(a, ref) && !slices.Contains(out, ref) {
			out = append(out, ref)
		}
	}
	if len(out) == 0 {
		return a
	}
	merged := append(slices.Clone(a), out...)
	sortRefs(merged)
	return merged
}

func sortedRefs(set map[ir.ObjectRef]int) ir.Provenance {
	out := make(ir.Provenance, 0, len(set))
	for ref := range set {
		out = append(out, ref)
	}
	sortRefs(out)
	return out
}

func sortRefs(refs ir.Provenance) {
	slices.SortFunc(refs, func(a, b ir.ObjectRef) int {
		return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
}
