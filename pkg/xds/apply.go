package xds

import (
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// step is one cache update within an Apply.
type step struct {
	t              int // type index
	update, remove bool
	// after is the types whose earlier pushes this step must not overtake:
	// before pushing, Apply waits for them to be sent (see waitFor).
	after typeSet
	// thisApply limits after to types this Apply pushed.
	thisApply bool
}

// applySteps is the order in which an Apply reaches the caches, and so the
// order in which a client's ADS stream sees the pushes ("make before break":
// a client must never hold a reference to something it has not been sent,
// nor lose something it still refers to).
//
// Additions and updates go referent first:
//   - CDS first: routes name clusters, and a route table with
//     validate_clusters is rejected when it names an unknown cluster.
//   - EDS after CDS, as the xDS protocol requires: a client asks for the load
//     assignment of a cluster it knows, and a new EDS cluster warms until its
//     assignment arrives, so no request sees it without endpoints.
//   - SDS before LDS: TLS filter chains name their secrets, and a chain whose
//     secret has not arrived holds the listener back in warming.
//   - RDS before LDS: a listener names its route configuration, so the route
//     (and, through the steps above, everything it names) is in place first.
//     The protocol's "RDS after LDS" advice is for servers that only send a
//     route to a client already subscribed to it; the LinearCache keeps the
//     route and answers the subscription the new listener triggers at once,
//     and wildcard clients (weir-proxy) never see a dangling route name.
//   - LDS last. Its removals share its push: nothing refers to a listener, so
//     removing one last-in-additions is the same as first-in-removals.
//
// Removals follow every addition, referrer first, so every reference to a
// removed resource was already dropped by an earlier push: routes (their
// listener is gone), secrets (no filter chain names them), clusters (no route
// names them after the RDS update), then the clusters' load assignments. A
// load assignment goes after its cluster so a live cluster is never left
// without endpoints; clients drop the EDS subscription with the cluster.
//
// A type touched by both halves is pushed twice, and the version bumps twice.
//
// Calling the caches in this order is not enough on its own: go-control-plane
// keeps one watch per type and stream and re-arms it only when the client
// acknowledges the previous push, so a push of a type still awaiting its ACK
// is deferred until then and would arrive after later steps. Hence each step
// first waits, up to StepTimeout, until every stream that subscribes to its
// type has been sent what it is owed of the types in after. That includes
// pushes of earlier Applies the client is still behind on, except for EDS,
// which only follows the CDS push of its own Apply (a client requests the
// assignment of a new cluster only once it has the cluster), so that an
// endpoint change never waits. A stream that lets a wait time out is logged
// and not waited for again until it is sent something.
var applySteps = [...]step{
	{t: typeCDS, update: true},
	{t: typeEDS, update: true, after: typesOf(typeCDS), thisApply: true},
	{t: typeSDS, update: true},
	{t: typeRDS, update: true, after: typesOf(typeCDS)},
	{t: typeLDS, update: true, remove: true, after: typesOf(typeCDS, typeSDS, typeRDS)},
	{t: typeRDS, remove: true, after: typesOf(typeLDS)},
	{t: typeSDS, remove: true, after: typesOf(typeLDS)},
	{t: typeCDS, remove: true, after: typesOf(typeRDS, typeLDS)},
	{t: typeEDS, remove: true, after: typesOf(typeCDS), thisApply: true},
}

var (
	// depTypes is the types some step waits for; Apply tracks who is owed
	// what only for these.
	depTypes typeSet
	// retryDeps is, by type, what a NACKed push of that type may have been
	// missing: the types its update step waits for.
	retryDeps [numTypes]typeSet
)

func init() {
	for _, st := range applySteps {
		depTypes |= st.after
		if st.update {
			retryDeps[st.t] = st.after
		}
	}
}

// Apply makes desired (type URL -> complete list of resources of that type)
// the served state: a served type absent from desired ends up empty. It pushes
// only what changed, in the order described at applySteps. A resource is
// unchanged when it is the pointer already served, or proto.Equal to it.
// Resources handed to Apply must not be mutated afterwards; callers should
// reuse a pointer exactly when its resource did not change, which keeps
// unchanged resources off the proto.Equal path.
//
// Apply is safe for concurrent use; calls are serialized. It may block while
// clients catch up between dependent steps, at most StepTimeout per step.
func (s *Server) Apply(desired map[string][]types.Resource) ApplyStats {
	s.mu.Lock()
	defer s.mu.Unlock()

	for url, rs := range desired {
		if _, ok := s.types[url]; !ok {
			s.log.Errorw("Ignoring resources of a type that is not served", "typeURL", url, "count", len(rs))
		}
	}

	// Diff every type before touching any cache: the steps interleave types.
	s.gen++
	for _, url := range servedTypes {
		s.types[url].diff(desired[url], s.gen, s.log)
	}

	stats := ApplyStats{Updated: map[string]int{}, Removed: map[string]int{}}
	var pushed typeSet
	for _, st := range applySteps {
		ts := s.types[servedTypes[st.t]]
		var update map[string]types.Resource
		var remove []string
		if st.update {
			update = ts.toUpdate
		}
		if st.remove {
			remove = ts.toRemove
		}
		if len(update) == 0 && len(remove) == 0 {
			continue
		}
		if st.t == typeRDS {
			if len(update) > 0 {
				update = s.wireRoutes(update)
			}
			for _, name := range remove {
				s.routeWire.forget(name)
			}
		}
		s.waitFor(st, pushed)
		// The error only reports a failure to build a response for some watch
		// (a resource that cannot be marshalled); the cache state is updated.
		if err := ts.cache.UpdateResources(update, remove); err != nil {
			s.log.Errorw("Failed to notify xDS watches", "typeURL", ts.url, zap.Error(err))
		}
		s.recordOwed(st.t, update, remove, ts.version.Add(1))
		pushed |= typesOf(st.t)
		if len(update) > 0 {
			stats.Updated[ts.url] += len(update)
		}
		if len(remove) > 0 {
			stats.Removed[ts.url] += len(remove)
		}
	}

	for _, url := range servedTypes {
		ts := s.types[url]
		ts.toUpdate, ts.toRemove = nil, nil
		s.metrics.resourceGauges[url].Set(float64(len(ts.served)))
		ts.count.Store(int64(len(ts.served)))
	}
	if len(stats.Updated) > 0 || len(stats.Removed) > 0 {
		s.log.Debugw("Applied xDS resources", "updated", stats.Updated, "removed", stats.Removed)
	}
	return stats
}

// diff records in toUpdate and toRemove how desired differs from what is
// served, and makes served match desired. It allocates nothing when nothing
// changed: removed resources are found by the generation they were last
// seen in rather than by building a set of desired names.
func (ts *typeState) diff(desired []types.Resource, gen uint64, log *zap.SugaredLogger) {
	n := len(desired)
	if n > cap(ts.prev) {
		ts.prev = append(make([]types.Resource, 0, n), ts.prev...)
		ts.prevEntry = append(make([]*servedResource, 0, n), ts.prevEntry...)
	}
	old := len(ts.prev)
	// Beyond len the arrays are zero (see the clear below), so growing
	// within capacity exposes no stale entries.
	ts.prev, ts.prevEntry = ts.prev[:n], ts.prevEntry[:n]

	seen := 0
	for i, r := range desired {
		// Fastest path: the same pointer at the same position as last time
		// is the same served resource; no name, no map lookup.
		if e := ts.prevEntry[i]; e != nil && r == ts.prev[i] && e.gen != gen {
			e.gen = gen
			seen++
			continue
		}
		e := ts.diffOne(r, gen, log)
		if e != nil {
			seen++
		}
		ts.prev[i], ts.prevEntry[i] = r, e
	}
	if n < old {
		clear(ts.prev[n:old])
		clear(ts.prevEntry[n:old])
	}

	if seen == len(ts.served) {
		return
	}
	for name, cur := range ts.served {
		if cur.gen != gen {
			ts.toRemove = append(ts.toRemove, name)
			delete(ts.served, name)
		}
	}
}

// diffOne looks r up by name and records it in toUpdate if it is new or
// changed. It returns r's served entry, or nil if r was skipped.
func (ts *typeState) diffOne(r types.Resource, gen uint64, log *zap.SugaredLogger) *servedResource {
	if r == nil {
		log.Errorw("Ignoring nil resource", "typeURL", ts.url)
		return nil
	}
	name := cache.GetResourceName(r)
	cur := ts.served[name]
	switch {
	case cur != nil && cur.gen == gen:
		log.Errorw("Ignoring resource with a duplicate name", "typeURL", ts.url, "name", name)
		return nil
	case cur != nil:
		cur.gen = gen
		if cur.res == r {
			return cur
		}
		if !ts.accepts(r, name, log) {
			return cur // keep serving the previous one
		}
		if !ts.pointerIdentity && proto.Equal(cur.res, r) {
			// Remember the new pointer so the next Apply takes the fast path.
			cur.res = r
			return cur
		}
		cur.res = r
	default:
		if !ts.accepts(r, name, log) {
			return nil
		}
		cur = &servedResource{res: r, gen: gen}
		ts.served[name] = cur
	}
	if ts.toUpdate == nil {
		ts.toUpdate = make(map[string]types.Resource)
	}
	ts.toUpdate[name] = r
	return cur
}

// accepts reports whether r may be served as name under this type.
func (ts *typeState) accepts(r types.Resource, name string, log *zap.SugaredLogger) bool {
	if name == "" {
		log.Errorw("Ignoring resource without a name", "typeURL", ts.url)
		return false
	}
	if got := string(r.ProtoReflect().Descriptor().FullName()); got != strings.TrimPrefix(ts.url, resource.APITypePrefix) {
		log.Errorw("Ignoring resource of the wrong type", "typeURL", ts.url, "name", name, "type", got)
		return false
	}
	return true
}

// wireRoutes returns update with each route configuration replaced by its
// pre-encoded copy (routeWire); one that fails to encode is passed as is.
func (s *Server) wireRoutes(update map[string]types.Resource) map[string]types.Resource {
	out := make(map[string]types.Resource, len(update))
	for name, r := range update {
		out[name] = r
		if rc, ok := r.(*routev3.RouteConfiguration); ok {
			if enc, err := s.routeWire.encode(rc); err == nil {
				out[name] = enc
			}
		}
	}
	return out
}
