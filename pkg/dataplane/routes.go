package dataplane

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"net/http"
	"net/textproto"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"
	"github.com/weir-dev/weir/pkg/re2size"
)

// envoyDefaultRouteTimeout is what Envoy uses when a route sets no timeout.
const envoyDefaultRouteTimeout = 15 * time.Second

// routeTable is a compiled RouteConfiguration. It is immutable.
type routeTable struct {
	name string
	// top is the content key of the configuration without its virtual
	// hosts, to tell a changed one.
	top vhostKey
	// protos and entries are its virtual host protos and their cache
	// entries, in order; index maps its domains. The next table starts
	// from all three.
	protos  []*routev3.VirtualHost
	entries []*cachedVhost
	index   *domainIndex
	suffix  []wildcardSet // index.suffix, longest suffix first
	prefix  []wildcardSet // index.prefix, longest prefix first
	// ignorePort is ignore_port_in_host_matching: the Host's port is
	// dropped before the domains are searched.
	ignorePort bool
}

// wildcardSet holds the wildcard domains of one length, so a lookup is one
// map probe per distinct length, as in Envoy.
type wildcardSet struct {
	n int
	m map[string]*vhost
}

type vhost struct {
	name string
	// domains are the virtual host's domains in lower case.
	domains   []string
	routes    []*route
	perFilter map[string]*routeFilterConf // typed_per_filter_config
}

type matchKind uint8

const (
	matchPrefix matchKind = iota
	matchPath
	matchRegex
	// matchSegmentPrefix is path_separated_prefix: value, then "/" or the
	// end of the path; the query is not looked at.
	matchSegmentPrefix
)

type route struct {
	name    string
	kind    matchKind
	value   string
	re      *regexp.Regexp
	headers []headerMatcher
	query   []queryMatcher
	// filterState are match.filter_state: strings the connection's
	// filter chain set, which must all be there and match.
	filterState []filterStateMatcher
	redirect    *redirect
	direct      *directResponse
	fwd         *forward
	// respOps are response_headers_to_add/remove, in Envoy's order.
	respOps []headerOp
	// perFilter is typed_per_filter_config, by filter name.
	perFilter map[string]*routeFilterConf
}

// filterStateMatcher is a RouteMatch.filter_state entry: the connection
// filter state object key, as a string, must match.
type filterStateMatcher struct {
	key   string
	match func(string) bool
}

type pseudoHeader uint8

const (
	notPseudo pseudoHeader = iota
	pseudoMethod
	pseudoAuthority
	pseudoPath
	pseudoScheme
)

type headerMatchKind uint8

const (
	hmPresent headerMatchKind = iota
	hmAbsent
	hmExact
	hmRegex
)

type headerMatcher struct {
	key    string // canonical MIME key, or "" for pseudo headers
	pseudo pseudoHeader
	kind   headerMatchKind
	exact  string
	re     *regexp.Regexp
	// invert is invert_match: a present header's result is inverted; an
	// absent one still fails a value match.
	invert bool
}

// queryMatcher is a QueryParameterMatcher: Envoy matches the first value
// of the parameter, percent-decoded.
type queryMatcher struct {
	name  string
	kind  headerMatchKind // hmPresent, hmExact or hmRegex
	exact string
	re    *regexp.Regexp
}

// directResponse is a route's direct_response.
type directResponse struct {
	code int
	body string
}

type redirect struct {
	scheme     string // "" keeps the request's scheme
	host       string
	port       string // ":8443" form, "" when unset
	path       string
	rewrite    *pathRewrite // prefix_rewrite or regex_rewrite
	stripQuery bool
	code       int
}

// pathRewrite is prefix_rewrite or regex_rewrite; it applies to the path
// without its query.
type pathRewrite struct {
	// prefix is the matched prefix that newPrefix replaces.
	prefix, newPrefix string
	re                *regexp.Regexp
	// substitution is RE2 rewrite syntax: \0-\9 name groups, \\ is "\".
	substitution string
}

// forward is a compiled RouteAction.
type forward struct {
	targets     []*target
	totalWeight uint64
	timeout     time.Duration // 0 = none
	timeoutHdr  []string      // x-envoy-expected-rq-timeout-ms value
	// idle is the route's idle_timeout, which replaces the connection
	// manager's stream_idle_timeout (0 turns it off); nil keeps that.
	idle        *time.Duration
	retry       *retryPolicy
	hostRewrite string
	rewrite     *pathRewrite
	upgrades    map[string]bool // route-level upgrade_configs, nil when unset
	// notFoundCode answers a cluster that is not configured
	// (cluster_not_found_response_code; 503 by default).
	notFoundCode int
	// mirrors are request_mirror_policies.
	mirrors []*mirror
	// hash is hash_policy, for RING_HASH clusters.
	hash []hashPolicy
}

// target is one (weighted) cluster of a route with the header mutations that
// apply when it is chosen, already ordered per most_specific_header_mutations_wins.
type target struct {
	cluster *cluster
	weight  uint64
	ops     []headerOp
}

type headerOpKind uint8

const (
	opRemove headerOpKind = iota
	opAppend
	opAddIfAbsent
	opOverwriteOrAdd
	opOverwriteIfExists
)

type headerOp struct {
	kind  headerOpKind
	key   string
	value []string // shared, never mutated
}

type retryPolicy struct {
	numRetries int
	perTry     time.Duration
	on5xx      bool
	onGateway  bool
	onReset    bool
	onConnect  bool
	onCodes    []int
	// requestHeaders is retriable_request_headers: unless one matches,
	// the request is not retried.
	requestHeaders []headerMatcher
	baseBackoff    time.Duration
	maxBackoff     time.Duration
	// hostAttempts is host_selection_retry_max_attempts with the
	// previous_hosts predicate: how many times a retry chooses its
	// endpoint before taking one already tried. 0: no predicate.
	hostAttempts int
}

// compileRoutes compiles a route configuration against the cluster set.
// Like Envoy, it applies validate_clusters only when the route
// configuration itself is new or changed from prev, the table it
// replaces: a cluster removed later leaves its routes answering 503
// instead of blocking every other update.
//
// Virtual hosts come from cache when their content and the clusters they
// use are unchanged, so one changed virtual host among 20,000 costs one
// compile, and the domain index is patched rather than rebuilt.
func compileRoutes(rc *routev3.RouteConfiguration, prev *routeTable, clusters map[string]*cluster, cache *vhostCache) (*routeTable, error) {
	if err := onlyFields(rc, "", "name", "virtual_hosts", "validate_clusters", "most_specific_header_mutations_wins", "ignore_port_in_host_matching"); err != nil {
		return nil, err
	}
	top := &routev3.RouteConfiguration{Name: rc.GetName(), ValidateClusters: rc.GetValidateClusters(),
		MostSpecificHeaderMutationsWins: rc.GetMostSpecificHeaderMutationsWins(), IgnorePortInHostMatching: rc.GetIgnorePortInHostMatching()}
	if err := pgv(top, ""); err != nil {
		return nil, err
	}
	vhs := rc.GetVirtualHosts()
	// A host whose proto is the one at the same place last time (the xDS
	// client keeps the protos of unchanged hosts) is found without a map;
	// the rest go through the cache's indexes.
	inPlace := func(i int) *cachedVhost {
		if prev != nil && i < len(prev.protos) && prev.protos[i] == vhs[i] {
			return prev.entries[i]
		}
		return nil
	}
	keys := make([]vhostKey, len(vhs))
	for i, vh := range vhs {
		if e := inPlace(i); e != nil {
			keys[i] = e.key.content
			continue
		}
		k, err := cache.key(vh)
		if err != nil {
			return nil, invalid(idx("virtual_hosts", i), "%v", err)
		}
		keys[i] = k
	}
	topKey, err := contentKey(top)
	if err != nil {
		return nil, invalid("", "%v", err)
	}
	revalidate := prev == nil || prev.top != topKey || len(prev.entries) != len(keys)
	for i := 0; !revalidate && i < len(keys); i++ {
		revalidate = prev.entries[i].key.content != keys[i]
	}
	validateClusters := rc.GetValidateClusters().GetValue() && revalidate
	mostSpecific := rc.GetMostSpecificHeaderMutationsWins()
	entries := make([]*cachedVhost, len(vhs))
	for i, vh := range vhs {
		e := inPlace(i)
		if e != nil && e.key.mostSpecific == mostSpecific && e.current(clusters, validateClusters) {
			cache.reused++
		} else if e, err = cache.get(vh, keys[i], validateClusters, mostSpecific, clusters, func() (*vhost, error) {
			return compileVhost(vh, idx("virtual_hosts", i), clusters, validateClusters, mostSpecific, cache.scope)
		}); err != nil {
			return nil, err
		}
		entries[i] = e
	}

	// The domain index is the previous table's, patched: the hosts that
	// went away leave it and the new ones join, so one changed host among
	// 20,000 costs a copy of the maps and a few inserts, not 40,000.
	var index *domainIndex
	added := entries
	if prev != nil {
		index = prev.index.clone()
		// Hosts in place at both ends are unchanged; only the middle is
		// matched through a map.
		p := prev.entries
		lo, hi := 0, 0
		for lo < len(entries) && lo < len(p) && entries[lo] == p[lo] {
			lo++
		}
		for hi < len(entries)-lo && hi < len(p)-lo && entries[len(entries)-1-hi] == p[len(p)-1-hi] {
			hi++
		}
		left := make(map[*cachedVhost]int, len(p)-lo-hi)
		for _, e := range p[lo : len(p)-hi] {
			left[e]++
		}
		added = make([]*cachedVhost, len(entries))
		for i := lo; i < len(entries)-hi; i++ {
			if e := entries[i]; left[e] > 0 {
				left[e]--
			} else {
				added[i] = e
			}
		}
		for e, n := range left {
			if n > 0 {
				index.remove(e.v)
			}
		}
	} else {
		index = newDomainIndex(2 * len(entries))
	}
	for i, e := range added {
		if e == nil {
			continue
		}
		if j, other := index.add(e.v); other != nil {
			return nil, invalid(idx(sub(idx("virtual_hosts", i), "domains"), j), "domain %q is also used by virtual host %q; Envoy requires unique domains", e.v.domains[j], other.name)
		}
	}
	rt := &routeTable{name: rc.GetName(), top: topKey, protos: vhs, entries: entries, index: index,
		suffix: sortedSets(index.suffix), prefix: sortedSets(index.prefix), ignorePort: rc.GetIgnorePortInHostMatching()}
	cache.tables = append(cache.tables, rt)
	return rt, nil
}

// domainIndex maps every domain of a route table to its virtual host,
// classified as Envoy does: "*", then a leading '*' (suffix wildcard,
// even if it also ends in '*'), then a trailing '*' (prefix wildcard),
// else exact. Wildcards are held by the length of their fixed part.
type domainIndex struct {
	exact          map[string]*vhost
	suffix, prefix map[int]map[string]*vhost
	star           *vhost
}

func newDomainIndex(size int) *domainIndex {
	return &domainIndex{exact: make(map[string]*vhost, size), suffix: map[int]map[string]*vhost{}, prefix: map[int]map[string]*vhost{}}
}

// clone copies the index; the maps are copied whole, which is far
// cheaper than inserting their entries again.
func (x *domainIndex) clone() *domainIndex {
	c := &domainIndex{exact: maps.Clone(x.exact), suffix: make(map[int]map[string]*vhost, len(x.suffix)),
		prefix: make(map[int]map[string]*vhost, len(x.prefix)), star: x.star}
	for n, m := range x.suffix {
		c.suffix[n] = maps.Clone(m)
	}
	for n, m := range x.prefix {
		c.prefix[n] = maps.Clone(m)
	}
	return c
}

// slot returns the map and key that domain d belongs in, or nil for "*".
func (x *domainIndex) slot(d string, create bool) (map[string]*vhost, string) {
	var byLen map[int]map[string]*vhost
	var s string
	switch {
	case d == "*":
		return nil, ""
	case strings.HasPrefix(d, "*"):
		byLen, s = x.suffix, d[1:]
	case strings.HasSuffix(d, "*"):
		byLen, s = x.prefix, d[:len(d)-1]
	default:
		return x.exact, d
	}
	m := byLen[len(s)]
	if m == nil && create {
		m = map[string]*vhost{}
		byLen[len(s)] = m
	}
	return m, s
}

// add indexes v's domains. If one is taken, it returns its position in
// v.domains and the virtual host that has it.
func (x *domainIndex) add(v *vhost) (int, *vhost) {
	for j, d := range v.domains {
		m, k := x.slot(d, true)
		var other *vhost
		if m == nil {
			other = x.star
		} else {
			other = m[k]
		}
		if other != nil {
			return j, other
		}
		if m == nil {
			x.star = v
		} else {
			m[k] = v
		}
	}
	return 0, nil
}

// remove drops v's domains.
func (x *domainIndex) remove(v *vhost) {
	for _, d := range v.domains {
		m, k := x.slot(d, false)
		switch {
		case m == nil && d == "*":
			if x.star == v {
				x.star = nil
			}
		case m != nil && m[k] == v:
			delete(m, k)
		}
	}
}

// compileVhost compiles one virtual host; its domains are the table's.
func compileVhost(vh *routev3.VirtualHost, path string, clusters map[string]*cluster, validateClusters, mostSpecific bool, scope *httpfilter.Scope) (*vhost, error) {
	if err := onlyFields(vh, path, "name", "domains", "routes", "typed_per_filter_config"); err != nil {
		return nil, err
	}
	if err := pgv(vh, path); err != nil {
		return nil, err
	}
	v := &vhost{name: vh.GetName(), domains: make([]string, len(vh.GetDomains()))}
	for i, d := range vh.GetDomains() {
		v.domains[i] = strings.ToLower(d)
	}
	pf, err := compilePerFilterConfig(vh.GetTypedPerFilterConfig(), sub(path, "typed_per_filter_config"), scope)
	if err != nil {
		return nil, err
	}
	v.perFilter = pf
	for j, r := range vh.GetRoutes() {
		cr, err := compileRoute(r, idx(sub(path, "routes"), j), clusters, validateClusters, mostSpecific, scope)
		if err != nil {
			return nil, err
		}
		v.routes = append(v.routes, cr)
	}
	return v, nil
}

// vhostKey identifies a virtual host's content.
type vhostKey [sha256.Size]byte

var deterministic = proto.MarshalOptions{Deterministic: true}

func contentKey(m proto.Message) (vhostKey, error) {
	b, err := deterministic.Marshal(m)
	if err != nil {
		return vhostKey{}, err
	}
	return sha256.Sum256(b), nil
}

// vhostCache finds the compiled virtual hosts of the last Apply. An
// entry is reused only if it was compiled with the same
// header-mutation order, and every cluster it routes to is still the very
// same compiled cluster (clusters are reused across Applies while their
// Cluster and ClusterLoadAssignment are unchanged); under
// validate_clusters, none of them may be missing.
type vhostCache struct {
	// prevTables are the last Apply's tables, tables this Apply's. Their
	// entries are indexed by proto and by content only when a host is not
	// found in place (see compileRoutes), so an Apply that changed a few
	// hosts builds no map of 20,000.
	prevTables, tables []*routeTable
	byProto            map[*routev3.VirtualHost]*cachedVhost
	byContent          map[vhostCacheKey]*cachedVhost
	// compiled and reused count this Apply's virtual hosts.
	compiled, reused int
	// scope is the proxy's, for filters' per-route configs.
	scope *httpfilter.Scope
}

// index builds byProto and byContent from the last Apply's tables.
func (c *vhostCache) index() {
	if c.byProto != nil {
		return
	}
	c.byProto = map[*routev3.VirtualHost]*cachedVhost{}
	c.byContent = map[vhostCacheKey]*cachedVhost{}
	for _, t := range c.prevTables {
		for i, e := range t.entries {
			c.byProto[t.protos[i]] = e
			c.byContent[e.key] = e
		}
	}
}

// key returns vh's content key.
func (c *vhostCache) key(vh *routev3.VirtualHost) (vhostKey, error) {
	c.index()
	if e := c.byProto[vh]; e != nil {
		return e.key.content, nil
	}
	return contentKey(vh)
}

type vhostCacheKey struct {
	content      vhostKey
	mostSpecific bool
}

type cachedVhost struct {
	key vhostCacheKey
	v   *vhost
	// clusters are the clusters its routes hold; a nil one stands for a
	// cluster that was missing.
	clusters []clusterDep
}

type clusterDep struct {
	name string
	c    *cluster
}

func newVhostCache(prev *vhostCache) *vhostCache {
	if prev == nil {
		return &vhostCache{}
	}
	return &vhostCache{prevTables: prev.tables, scope: prev.scope}
}

// get returns the compiled vh, whose content key is content, from cache or
// from compile.
func (c *vhostCache) get(vh *routev3.VirtualHost, content vhostKey, validateClusters, mostSpecific bool, clusters map[string]*cluster, compile func() (*vhost, error)) (*cachedVhost, error) {
	c.index()
	key := vhostCacheKey{content, mostSpecific}
	e := c.byProto[vh]
	if e == nil || e.key != key {
		e = c.byContent[key]
	}
	if e != nil && e.current(clusters, validateClusters) {
		c.reused++
		return e, nil
	}
	v, err := compile()
	if err != nil {
		return nil, err
	}
	e = &cachedVhost{key: key, v: v}
	seen := map[string]bool{}
	for _, r := range v.routes {
		if r.fwd == nil {
			continue
		}
		// Mirrors hold their clusters too: an endpoint change of one
		// must recompile the host like a target's.
		used := make([]*cluster, 0, len(r.fwd.targets)+len(r.fwd.mirrors))
		for _, t := range r.fwd.targets {
			used = append(used, t.cluster)
		}
		for _, m := range r.fwd.mirrors {
			used = append(used, m.cluster)
		}
		for _, uc := range used {
			if seen[uc.name] {
				continue
			}
			seen[uc.name] = true
			dep := clusterDep{name: uc.name}
			if !uc.missing {
				dep.c = uc
			}
			e.clusters = append(e.clusters, dep)
		}
	}
	// Later hosts of this Apply with the same content share it.
	c.byProto[vh], c.byContent[key] = e, e
	c.compiled++
	return e, nil
}

// current reports whether e compiles to the same virtual host now: its
// clusters are the same, and, if they must be validated, none is missing
// (a compile would then fail).
func (e *cachedVhost) current(clusters map[string]*cluster, validateClusters bool) bool {
	for _, d := range e.clusters {
		if clusters[d.name] != d.c || d.c == nil && validateClusters {
			return false
		}
	}
	return true
}

func sortedSets(m map[int]map[string]*vhost) []wildcardSet {
	out := make([]wildcardSet, 0, len(m))
	for n, set := range m {
		out = append(out, wildcardSet{n: n, m: set})
	}
	slices.SortFunc(out, func(a, b wildcardSet) int { return b.n - a.n })
	return out
}

// findVhost implements Envoy's domain search order. host must already be
// lower case. Wildcards never match the empty string.
func (rt *routeTable) findVhost(host string) *vhost {
	if rt.ignorePort {
		if i := portStart(host); i >= 0 {
			host = host[:i]
		}
	}
	if v, ok := rt.index.exact[host]; ok {
		return v
	}
	for i := range rt.suffix {
		s := &rt.suffix[i]
		if len(host) > s.n {
			if v, ok := s.m[host[len(host)-s.n:]]; ok {
				return v
			}
		}
	}
	for i := range rt.prefix {
		s := &rt.prefix[i]
		if len(host) > s.n {
			if v, ok := s.m[host[:s.n]]; ok {
				return v
			}
		}
	}
	return rt.index.star
}

// portStart returns the index of the ':' before the Host's port, or -1,
// as Envoy's HeaderUtility::getPortStart: the last ':', unless it is
// inside an IPv6 literal's brackets.
func portStart(host string) int {
	i := strings.LastIndexByte(host, ':')
	if i < 0 {
		return -1
	}
	if j := strings.LastIndexByte(host, ']'); j > i {
		return -1
	}
	return i
}

func compileRoute(r *routev3.Route, path string, clusters map[string]*cluster, validateClusters, mostSpecific bool, scope *httpfilter.Scope) (*route, error) {
	if err := onlyFields(r, path, "name", "match", "route", "redirect", "direct_response", "request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove", "typed_per_filter_config"); err != nil {
		return nil, err
	}
	cr := &route{name: r.GetName()}
	pf, err := compilePerFilterConfig(r.GetTypedPerFilterConfig(), sub(path, "typed_per_filter_config"), scope)
	if err != nil {
		return nil, err
	}
	cr.perFilter = pf
	m := r.GetMatch()
	mpath := sub(path, "match")
	if m == nil {
		return nil, invalid(mpath, "match is required")
	}
	if err := onlyFields(m, mpath, "prefix", "path", "safe_regex", "path_separated_prefix", "headers", "query_parameters", "filter_state"); err != nil {
		return nil, err
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		cr.kind, cr.value = matchPrefix, ps.Prefix
	case *routev3.RouteMatch_PathSeparatedPrefix:
		v := ps.PathSeparatedPrefix
		if !strings.HasPrefix(v, "/") || strings.HasSuffix(v, "/") || strings.ContainsAny(v, "?#") {
			return nil, invalid(sub(mpath, "path_separated_prefix"), "value %q must start with \"/\", not end with \"/\" and have no \"?\" or \"#\"", v)
		}
		cr.kind, cr.value = matchSegmentPrefix, v
	case *routev3.RouteMatch_Path:
		cr.kind, cr.value = matchPath, ps.Path
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileRegex(ps.SafeRegex, sub(mpath, "safe_regex"))
		if err != nil {
			return nil, err
		}
		cr.kind, cr.re = matchRegex, re
	default:
		return nil, invalid(mpath, "one of prefix, path or safe_regex is required")
	}
	for i, h := range m.GetHeaders() {
		hm, err := compileHeaderMatcher(h, idx(sub(mpath, "headers"), i))
		if err != nil {
			return nil, err
		}
		cr.headers = append(cr.headers, hm)
	}
	for i, q := range m.GetQueryParameters() {
		qm, err := compileQueryMatcher(q, idx(sub(mpath, "query_parameters"), i))
		if err != nil {
			return nil, err
		}
		cr.query = append(cr.query, qm)
	}
	for i, fs := range m.GetFilterState() {
		fp := idx(sub(mpath, "filter_state"), i)
		if err := onlyFields(fs, fp, "key", "string_match"); err != nil {
			return nil, err
		}
		if fs.GetStringMatch() == nil {
			return nil, invalid(fp, "string_match is required by weir-proxy (it has no address_match)")
		}
		match, err := httpfilter.CompileStringMatcher(fs.GetStringMatch(), sub(fp, "string_match"))
		if err != nil {
			return nil, err
		}
		cr.filterState = append(cr.filterState, filterStateMatcher{key: fs.GetKey(), match: match})
	}

	routeOps, err := compileHeaderOps(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove(), path)
	if err != nil {
		return nil, err
	}
	cr.respOps, err = compileHeaderOpsOf("response", r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove(), path)
	if err != nil {
		return nil, err
	}

	switch a := r.GetAction().(type) {
	case *routev3.Route_Redirect:
		if len(routeOps) > 0 {
			// Request headers never reach anyone on a redirect; accept
			// them like Envoy does, they simply have no effect.
			routeOps = nil
		}
		rd, err := compileRedirect(a.Redirect, sub(path, "redirect"), cr)
		if err != nil {
			return nil, err
		}
		cr.redirect = rd
	case *routev3.Route_DirectResponse:
		dpath := sub(path, "direct_response")
		if err := onlyFields(a.DirectResponse, dpath, "status", "body"); err != nil {
			return nil, err
		}
		code := int(a.DirectResponse.GetStatus())
		if code < 200 || code > 599 {
			return nil, invalid(sub(dpath, "status"), "status %d is not in [200, 600)", code)
		}
		dr := &directResponse{code: code}
		if b := a.DirectResponse.GetBody(); b != nil {
			if err := onlyFields(b, sub(dpath, "body"), "inline_string", "inline_bytes"); err != nil {
				return nil, err
			}
			dr.body = b.GetInlineString()
			if bs := b.GetInlineBytes(); bs != nil {
				dr.body = string(bs)
			}
		}
		cr.direct = dr
	case *routev3.Route_Route:
		fw, err := compileForward(a.Route, sub(path, "route"), clusters, validateClusters, mostSpecific, routeOps)
		if err != nil {
			return nil, err
		}
		if fw.rewrite, err = compileRewrite(a.Route.GetPrefixRewrite(), a.Route.GetRegexRewrite(), sub(path, "route"), cr); err != nil {
			return nil, err
		}
		cr.fwd = fw
	default:
		return nil, invalid(path, "one of route, redirect or direct_response is required")
	}
	return cr, nil
}

// compileRewrite compiles prefix_rewrite or regex_rewrite; Envoy allows a
// prefix rewrite only on prefix matches.
func compileRewrite(prefix string, regex *matcherv3.RegexMatchAndSubstitute, path string, cr *route) (*pathRewrite, error) {
	switch {
	case prefix != "" && regex != nil:
		return nil, invalid(path, "only one of prefix_rewrite and regex_rewrite may be set")
	case prefix != "":
		if cr.kind != matchPrefix && cr.kind != matchSegmentPrefix {
			return nil, invalid(sub(path, "prefix_rewrite"), "prefix_rewrite needs a prefix or path_separated_prefix match")
		}
		return &pathRewrite{prefix: cr.value, newPrefix: prefix}, nil
	case regex != nil:
		rp := sub(path, "regex_rewrite")
		if err := onlyFields(regex, rp, "pattern", "substitution"); err != nil {
			return nil, err
		}
		if err := onlyFields(regex.GetPattern(), sub(rp, "pattern"), "regex", "google_re2"); err != nil {
			return nil, err
		}
		// A rewrite pattern finds matches anywhere; it is not anchored.
		re, err := regexp.Compile(regex.GetPattern().GetRegex())
		if err != nil {
			return nil, invalid(sub(rp, "pattern.regex"), "invalid RE2 regex: %v", err)
		}
		if size, err := re2size.Bound(regex.GetPattern().GetRegex()); err != nil || size > re2size.MaxProgramSize {
			return nil, invalid(sub(rp, "pattern.regex"), "RE2 program size of up to %d > max program size of %d", size, re2size.MaxProgramSize)
		}
		if err := checkRE2Rewrite(regex.GetSubstitution(), re.NumSubexp()); err != nil {
			return nil, invalid(sub(rp, "substitution"), "%v", err)
		}
		return &pathRewrite{re: re, substitution: regex.GetSubstitution()}, nil
	}
	return nil, nil
}

// checkRE2Rewrite applies RE2::CheckRewriteString: "\\" and "\N" for an
// existing group are the only escapes.
func checkRE2Rewrite(s string, groups int) error {
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		i++
		switch {
		case i == len(s):
			return fmt.Errorf("rewrite %q ends with a backslash", s)
		case s[i] == '\\':
		case s[i] >= '0' && s[i] <= '9':
			if int(s[i]-'0') > groups {
				return fmt.Errorf("rewrite %q refers to group %c, but the pattern has %d", s, s[i], groups)
			}
		default:
			return fmt.Errorf("invalid rewrite escape \\%c in %q", s[i], s)
		}
	}
	return nil
}

// apply rewrites path, which has no query.
func (pr *pathRewrite) apply(path string) string {
	if pr.re == nil {
		if strings.HasPrefix(path, pr.prefix) {
			return pr.newPrefix + path[len(pr.prefix):]
		}
		return path
	}
	// RE2::GlobalReplace: every non-overlapping match, left to right.
	var b strings.Builder
	last := 0
	for _, m := range pr.re.FindAllStringSubmatchIndex(path, -1) {
		b.WriteString(path[last:m[0]])
		sub := pr.substitution
		for i := 0; i < len(sub); i++ {
			if sub[i] != '\\' || i+1 == len(sub) {
				b.WriteByte(sub[i])
				continue
			}
			i++
			if c := sub[i]; c >= '0' && c <= '9' {
				if g := int(c - '0'); m[2*g] >= 0 {
					b.WriteString(path[m[2*g]:m[2*g+1]])
				}
				continue
			}
			b.WriteByte(sub[i])
		}
		last = m[1]
	}
	b.WriteString(path[last:])
	return b.String()
}

func compileQueryMatcher(q *routev3.QueryParameterMatcher, path string) (queryMatcher, error) {
	qm := queryMatcher{name: q.GetName()}
	if err := onlyFields(q, path, "name", "string_match", "present_match"); err != nil {
		return qm, err
	}
	if qm.name == "" {
		return qm, invalid(sub(path, "name"), "name is required")
	}
	switch s := q.GetQueryParameterMatchSpecifier().(type) {
	case *routev3.QueryParameterMatcher_PresentMatch:
		if !s.PresentMatch {
			return qm, invalid(sub(path, "present_match"), "present_match false is not supported by weir-proxy")
		}
		qm.kind = hmPresent
	case *routev3.QueryParameterMatcher_StringMatch:
		var hm headerMatcher
		if err := compileStringMatcher(s.StringMatch, sub(path, "string_match"), &hm); err != nil {
			return qm, err
		}
		qm.kind, qm.exact, qm.re = hm.kind, hm.exact, hm.re
	default:
		return qm, invalid(path, "one of string_match or present_match is required")
	}
	return qm, nil
}

func compileRegex(m *matcherv3.RegexMatcher, path string) (*regexp.Regexp, error) {
	if err := onlyFields(m, path, "regex", "google_re2"); err != nil {
		return nil, err
	}
	if g := m.GetGoogleRe2(); g != nil {
		if err := onlyFields(g, sub(path, "google_re2")); err != nil {
			return nil, err
		}
	}
	// Envoy regex matchers match the whole value; Go's regexp is RE2 too.
	re, err := regexp.Compile("^(?:" + m.GetRegex() + ")$")
	if err != nil {
		return nil, invalid(sub(path, "regex"), "invalid RE2 regex: %v", err)
	}
	// Envoy refuses a program over re2.max_program_size.error_level, which
	// the release bootstrap sets; weir-proxy holds to Weir's bound of it.
	if size, err := re2size.Bound(m.GetRegex()); err != nil || size > re2size.MaxProgramSize {
		return nil, invalid(sub(path, "regex"), "regex '%s' RE2 program size of up to %d > max program size of %d set for the error level threshold", m.GetRegex(), size, re2size.MaxProgramSize)
	}
	return re, nil
}

func compileStringMatcher(sm *matcherv3.StringMatcher, path string, hm *headerMatcher) error {
	if err := onlyFields(sm, path, "exact", "safe_regex"); err != nil {
		return err
	}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		hm.kind, hm.exact = hmExact, p.Exact
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex, sub(path, "safe_regex"))
		if err != nil {
			return err
		}
		hm.kind, hm.re = hmRegex, re
	default:
		return invalid(path, "one of exact or safe_regex is required")
	}
	return nil
}

func compileHeaderMatcher(h *routev3.HeaderMatcher, path string) (headerMatcher, error) {
	var hm headerMatcher
	if err := onlyFields(h, path, "name", "string_match", "present_match", "invert_match"); err != nil {
		return hm, err
	}
	hm.invert = h.GetInvertMatch()
	name := strings.ToLower(h.GetName())
	switch name {
	case ":method":
		hm.pseudo = pseudoMethod
	case ":authority", "host":
		hm.pseudo = pseudoAuthority
	case ":path":
		hm.pseudo = pseudoPath
	case ":scheme":
		hm.pseudo = pseudoScheme
	default:
		if strings.HasPrefix(name, ":") {
			return hm, invalid(sub(path, "name"), "pseudo header %q is not supported", name)
		}
		hm.key = textproto.CanonicalMIMEHeaderKey(name)
	}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil:
		// Envoy treats a matcher without a specifier as a presence check.
		hm.kind = hmPresent
	case *routev3.HeaderMatcher_PresentMatch:
		if s.PresentMatch {
			hm.kind = hmPresent
		} else {
			hm.kind = hmAbsent
		}
	case *routev3.HeaderMatcher_StringMatch:
		if err := compileStringMatcher(s.StringMatch, sub(path, "string_match"), &hm); err != nil {
			return hm, err
		}
	default:
		return hm, unsupported(sub(path, "header_match_specifier"))
	}
	return hm, nil
}

// compileHeaderOps compiles request_headers_to_add/remove of one level into
// the order Envoy evaluates them: removals first, then additions.
func compileHeaderOps(adds []*corev3.HeaderValueOption, removes []string, path string) ([]headerOp, error) {
	return compileHeaderOpsOf("request", adds, removes, path)
}

// compileHeaderOpsOf compiles <direction>_headers_to_add/remove.
func compileHeaderOpsOf(direction string, adds []*corev3.HeaderValueOption, removes []string, path string) ([]headerOp, error) {
	var ops []headerOp
	for i, name := range removes {
		if err := modifiable(name, idx(sub(path, direction+"_headers_to_remove"), i)); err != nil {
			return nil, err
		}
		ops = append(ops, headerOp{kind: opRemove, key: textproto.CanonicalMIMEHeaderKey(name)})
	}
	for i, hv := range adds {
		p := idx(sub(path, direction+"_headers_to_add"), i)
		if err := onlyFields(hv, p, "header", "append_action", "keep_empty_value"); err != nil {
			return nil, err
		}
		h := hv.GetHeader()
		if err := onlyFields(h, sub(p, "header"), "key", "value"); err != nil {
			return nil, err
		}
		if err := modifiable(h.GetKey(), sub(p, "header.key")); err != nil {
			return nil, err
		}
		value, err := literalHeaderValue(h.GetValue(), sub(p, "header.value"))
		if err != nil {
			return nil, err
		}
		if value == "" && !hv.GetKeepEmptyValue() {
			// Envoy drops custom headers whose value is empty unless
			// keep_empty_value is set.
			continue
		}
		op := headerOp{key: textproto.CanonicalMIMEHeaderKey(h.GetKey()), value: []string{value}}
		switch hv.GetAppendAction() {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			op.kind = opAppend
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			op.kind = opAddIfAbsent
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			op.kind = opOverwriteOrAdd
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			op.kind = opOverwriteIfExists
		default:
			return nil, invalid(sub(p, "append_action"), "unknown append_action %v", hv.GetAppendAction())
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// modifiable applies Envoy's rule that pseudo headers and Host cannot be
// added or removed through header mutations.
func modifiable(name, path string) error {
	n := strings.ToLower(name)
	if n == "" || strings.HasPrefix(n, ":") || n == "host" {
		return invalid(path, "header %q may not be modified (Envoy rejects ':'-prefixed and host headers)", name)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return invalid(path, "invalid header name %q", name)
		}
	}
	return nil
}

// literalHeaderValue interprets Envoy's header value formatter syntax: "%%"
// is a literal '%', and %COMMAND% substitutions are not implemented.
func literalHeaderValue(v, path string) (string, error) {
	if !strings.Contains(v, "%") {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b.WriteByte(v[i])
			continue
		}
		if i+1 < len(v) && v[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		end := strings.IndexByte(v[i+1:], '%')
		if end < 0 {
			return "", invalid(path, "un-terminated %% variable expression in %q", v)
		}
		return "", invalid(path, "header value substitution %q is not supported by weir-proxy", v[i:i+end+2])
	}
	return b.String(), nil
}

func compileRedirect(rd *routev3.RedirectAction, path string, cr *route) (*redirect, error) {
	if err := onlyFields(rd, path, "https_redirect", "scheme_redirect", "host_redirect", "port_redirect", "path_redirect",
		"prefix_rewrite", "regex_rewrite", "response_code", "strip_query"); err != nil {
		return nil, err
	}
	out := &redirect{host: rd.GetHostRedirect(), path: rd.GetPathRedirect(), stripQuery: rd.GetStripQuery()}
	rw, err := compileRewrite(rd.GetPrefixRewrite(), rd.GetRegexRewrite(), path, cr)
	if err != nil {
		return nil, err
	}
	out.rewrite = rw
	switch s := rd.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			out.scheme = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		out.scheme = strings.ToLower(s.SchemeRedirect)
	}
	if p := rd.GetPortRedirect(); p != 0 {
		out.port = ":" + strconv.FormatUint(uint64(p), 10)
	}
	switch rd.GetResponseCode() {
	case routev3.RedirectAction_MOVED_PERMANENTLY:
		out.code = http.StatusMovedPermanently
	case routev3.RedirectAction_FOUND:
		out.code = http.StatusFound
	case routev3.RedirectAction_SEE_OTHER:
		out.code = http.StatusSeeOther
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		out.code = http.StatusTemporaryRedirect
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		out.code = http.StatusPermanentRedirect
	default:
		return nil, invalid(sub(path, "response_code"), "unknown response code %v", rd.GetResponseCode())
	}
	return out, nil
}

func compileForward(ra *routev3.RouteAction, path string, clusters map[string]*cluster, validateClusters, mostSpecific bool, routeOps []headerOp) (*forward, error) {
	if err := onlyFields(ra, path, "cluster", "weighted_clusters", "timeout", "retry_policy", "host_rewrite_literal", "upgrade_configs", "prefix_rewrite", "regex_rewrite", "cluster_not_found_response_code", "request_mirror_policies", "idle_timeout", "hash_policy"); err != nil {
		return nil, err
	}
	fw := &forward{timeout: envoyDefaultRouteTimeout, hostRewrite: ra.GetHostRewriteLiteral(), notFoundCode: http.StatusServiceUnavailable}
	switch ra.GetClusterNotFoundResponseCode() {
	case routev3.RouteAction_NOT_FOUND:
		fw.notFoundCode = http.StatusNotFound
	case routev3.RouteAction_INTERNAL_SERVER_ERROR:
		fw.notFoundCode = http.StatusInternalServerError
	}
	if d, ok := duration(ra.GetTimeout()); ok {
		fw.timeout = d
	}
	if fw.timeout > 0 {
		fw.timeoutHdr = []string{strconv.FormatInt(fw.timeout.Milliseconds(), 10)}
	}
	if ra.GetIdleTimeout() != nil {
		d, _ := duration(ra.GetIdleTimeout())
		if d < 0 {
			return nil, invalid(sub(path, "idle_timeout"), "must not be negative")
		}
		// Envoy counts whole milliseconds: less than one is none.
		d = d.Truncate(time.Millisecond)
		fw.idle = &d
	}
	lookup := func(name, p string) (*cluster, error) {
		c := clusters[name]
		if c == nil && validateClusters {
			return nil, invalid(p, "unknown cluster %q (validate_clusters is set)", name)
		}
		if c == nil {
			// Envoy answers 503 at request time for a missing cluster.
			c = missingCluster(name)
		}
		return c, nil
	}
	// Header mutations of the chosen weighted cluster and of the route are
	// applied most specific first by default (so the route level wins on
	// overwrite); most_specific_header_mutations_wins reverses that.
	order := func(clusterOps []headerOp) []headerOp {
		if mostSpecific {
			return concatOps(routeOps, clusterOps)
		}
		return concatOps(clusterOps, routeOps)
	}
	switch cs := ra.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		c, err := lookup(cs.Cluster, sub(path, "cluster"))
		if err != nil {
			return nil, err
		}
		fw.targets = []*target{{cluster: c, weight: 1, ops: order(nil)}}
		fw.totalWeight = 1
	case *routev3.RouteAction_WeightedClusters:
		wc := cs.WeightedClusters
		wpath := sub(path, "weighted_clusters")
		if err := onlyFields(wc, wpath, "clusters"); err != nil {
			return nil, err
		}
		for i, cw := range wc.GetClusters() {
			p := idx(sub(wpath, "clusters"), i)
			if err := onlyFields(cw, p, "name", "weight", "request_headers_to_add", "request_headers_to_remove"); err != nil {
				return nil, err
			}
			c, err := lookup(cw.GetName(), sub(p, "name"))
			if err != nil {
				return nil, err
			}
			ops, err := compileHeaderOps(cw.GetRequestHeadersToAdd(), cw.GetRequestHeadersToRemove(), p)
			if err != nil {
				return nil, err
			}
			w := uint64(cw.GetWeight().GetValue())
			fw.targets = append(fw.targets, &target{cluster: c, weight: w, ops: order(ops)})
			fw.totalWeight += w
		}
		if fw.totalWeight == 0 {
			return nil, invalid(wpath, "sum of weights must be greater than 0")
		}
	default:
		return nil, invalid(path, "one of cluster or weighted_clusters is required")
	}
	mirrors, err := compileMirrors(ra.GetRequestMirrorPolicies(), sub(path, "request_mirror_policies"), lookup)
	if err != nil {
		return nil, err
	}
	fw.mirrors = mirrors
	if fw.hash, err = compileHashPolicies(ra.GetHashPolicy(), sub(path, "hash_policy")); err != nil {
		return nil, err
	}
	if rp := ra.GetRetryPolicy(); rp != nil {
		p, err := compileRetry(rp, sub(path, "retry_policy"))
		if err != nil {
			return nil, err
		}
		fw.retry = p
	}
	if ucs := ra.GetUpgradeConfigs(); len(ucs) > 0 {
		fw.upgrades = map[string]bool{}
		for i, uc := range ucs {
			p := idx(sub(path, "upgrade_configs"), i)
			if err := onlyFields(uc, p, "upgrade_type", "enabled"); err != nil {
				return nil, err
			}
			enabled := true
			if uc.GetEnabled() != nil {
				enabled = uc.GetEnabled().GetValue()
			}
			fw.upgrades[strings.ToLower(uc.GetUpgradeType())] = enabled
		}
	}
	return fw, nil
}

func concatOps(a, b []headerOp) []headerOp {
	if len(a)+len(b) == 0 {
		return nil
	}
	out := make([]headerOp, 0, len(a)+len(b))
	return append(append(out, a...), b...)
}

func compileRetry(rp *routev3.RetryPolicy, path string) (*retryPolicy, error) {
	if err := onlyFields(rp, path, "retry_on", "num_retries", "per_try_timeout", "retriable_status_codes", "retry_back_off", "retry_host_predicate", "host_selection_retry_max_attempts", "retriable_request_headers"); err != nil {
		return nil, err
	}
	out := &retryPolicy{numRetries: 1, baseBackoff: 25 * time.Millisecond}
	for i, h := range rp.GetRetriableRequestHeaders() {
		hm, err := compileHeaderMatcher(h, idx(sub(path, "retriable_request_headers"), i))
		if err != nil {
			return nil, err
		}
		out.requestHeaders = append(out.requestHeaders, hm)
	}
	for i, hp := range rp.GetRetryHostPredicate() {
		pp := idx(sub(path, "retry_host_predicate"), i)
		var prev previoushostsv3.PreviousHostsPredicate
		if hp.GetTypedConfig() == nil || unpack(hp.GetTypedConfig(), &prev, sub(pp, "typed_config")) != nil {
			return nil, invalid(pp, "only envoy.retry_host_predicates.previous_hosts is supported by weir-proxy")
		}
		if err := onlyFields(&prev, sub(pp, "typed_config")); err != nil {
			return nil, err
		}
		// Envoy's default of 1 selection never chooses again.
		out.hostAttempts = int(max(rp.GetHostSelectionRetryMaxAttempts(), 1))
	}
	maxBackoff := time.Duration(0)
	if bo := rp.GetRetryBackOff(); bo != nil {
		bp := sub(path, "retry_back_off")
		if err := onlyFields(bo, bp, "base_interval", "max_interval"); err != nil {
			return nil, err
		}
		// Envoy: base_interval is required and over 0, max_interval
		// (10 times the base by default) not under it.
		base, ok := duration(bo.GetBaseInterval())
		if !ok || base <= 0 {
			return nil, invalid(sub(bp, "base_interval"), "must be greater than 0")
		}
		out.baseBackoff = base
		if m, ok := duration(bo.GetMaxInterval()); ok && bo.GetMaxInterval() != nil {
			if m < base {
				return nil, invalid(sub(bp, "max_interval"), "max_interval must be greater than or equal to the base_interval")
			}
			maxBackoff = m
		}
	}
	if n := rp.GetNumRetries(); n != nil {
		out.numRetries = int(n.GetValue())
	}
	out.perTry, _ = duration(rp.GetPerTryTimeout())
	for _, c := range rp.GetRetriableStatusCodes() {
		out.onCodes = append(out.onCodes, int(c))
	}
	for _, tok := range strings.Split(rp.GetRetryOn(), ",") {
		switch strings.TrimSpace(tok) {
		case "":
		case "5xx":
			out.on5xx = true
		case "gateway-error":
			out.onGateway = true
		case "reset":
			out.onReset = true
		case "connect-failure":
			out.onConnect = true
		case "retriable-status-codes":
			if len(out.onCodes) == 0 {
				return nil, invalid(sub(path, "retry_on"), "retriable-status-codes needs retriable_status_codes")
			}
		default:
			return nil, invalid(sub(path, "retry_on"), "retry condition %q is not supported by weir-proxy", strings.TrimSpace(tok))
		}
	}
	if !strings.Contains(rp.GetRetryOn(), "retriable-status-codes") {
		out.onCodes = nil
	}
	out.maxBackoff = 10 * out.baseBackoff
	if maxBackoff > 0 {
		out.maxBackoff = maxBackoff
	}
	return out, nil
}

// String renders a route for error messages and the access log.
func (r *route) String() string {
	switch r.kind {
	case matchPrefix:
		return fmt.Sprintf("prefix:%s", r.value)
	case matchPath:
		return fmt.Sprintf("path:%s", r.value)
	case matchSegmentPrefix:
		return fmt.Sprintf("path_separated_prefix:%s", r.value)
	}
	return fmt.Sprintf("regex:%s", r.re)
}
