package xds

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// Type indexes, in the order of servedTypes.
const (
	typeCDS = iota
	typeEDS
	typeSDS
	typeRDS
	typeLDS
	numTypes
)

func typeIndex(url string) int {
	switch url {
	case resource.ClusterType:
		return typeCDS
	case resource.EndpointType:
		return typeEDS
	case resource.SecretType:
		return typeSDS
	case resource.RouteType:
		return typeRDS
	case resource.ListenerType:
		return typeLDS
	}
	return -1
}

// typeSet is a set of type indexes.
type typeSet uint8

func typesOf(ts ...int) typeSet {
	var s typeSet
	for _, t := range ts {
		s |= 1 << t
	}
	return s
}

func (s typeSet) has(t int) bool { return s&(1<<t) != 0 }

// fullState reports whether a state-of-the-world response of type t carries
// every subscribed resource, and so is sent for a removal too.
func fullState(t int) bool { return t == typeCDS || t == typeLDS }

// streamState is what the server remembers about one stream.
type streamState struct {
	delta bool

	// last is the most recent push of each type, kept so a NACK can name the
	// rejected resources. Names are only extracted when a NACK arrives. Only
	// the stream's goroutine (which runs all of its callbacks) touches it.
	last map[string]push

	// The rest is guarded by Server.trackMu: Apply reads it to decide whom
	// to wait for.
	node   string
	closed bool
	// lagging is set when an Apply gave up waiting for this stream, and
	// cleared by the next response it is sent. While it is set no Apply waits
	// for the stream, so a hung client costs one StepTimeout, not one per Apply.
	lagging bool
	// pendingReq is the delta request whose watch is about to be created,
	// see watchCache.
	pendingReq *discovery.DeltaDiscoveryRequest
	types      [numTypes]typeTrack
}

// typeTrack is one stream's view of one type.
type typeTrack struct {
	// The subscription, mirrored from the requests with go-control-plane's
	// rules: its own copy belongs to the stream goroutine.
	requested bool // the stream asked for the type at least once
	legacy    bool // still a legacy wildcard (no name ever requested)
	wildcard  bool
	names     map[string]struct{}
	namesSrc  []string // sotw: the resource_names that names was built from

	// pendingNonce is the nonce of the sotw response sent since the last
	// request go-control-plane processed; a request quoting another nonce
	// is ignored by the server, so it is by us.
	pendingNonce string
	sentNonce    string

	// Versions (the cache's counters) of the last response sent and
	// acknowledged, of the last Apply step that changed something this
	// stream subscribes to, and up to which a timed-out wait stopped caring.
	sent, acked, owed, waived uint64
	// ackWanted is the version the stream must acknowledge before it
	// serves every Apply so far (Server.Acknowledged); unlike owed it is
	// kept for every type, from the first request on.
	ackWanted uint64

	// retry holds resources the stream rejected before it had their
	// dependencies; they are re-sent once it acknowledges those.
	retry *retryWait
	// forget names resources a delta subscription must treat as unknown, so
	// a retry re-sends them although their content hash did not change.
	forget atomic.Pointer[map[string]struct{}]
}

// behind returns the types in deps of which the stream has not yet been sent
// a change it subscribes to.
func (st *streamState) behind(deps typeSet) typeSet {
	var out typeSet
	for t := range numTypes {
		if !deps.has(t) {
			continue
		}
		tt := &st.types[t]
		if tt.owed > tt.sent && tt.owed > tt.waived {
			out |= 1 << t
		}
	}
	return out
}

// subscribeSotw mirrors stream.Subscription.SetResourceSubscription. set is
// names as a set, built by the caller outside the lock, or nil if names are
// those of the previous request.
func (tt *typeTrack) subscribeSotw(names []string, set map[string]struct{}) {
	if !tt.requested {
		tt.requested, tt.legacy, tt.wildcard = true, true, len(names) == 0
	}
	if tt.legacy {
		if len(names) == 0 {
			return
		}
		tt.legacy = false
	}
	// Keep the latest slice, which go-control-plane holds anyway.
	tt.namesSrc = names
	if set != nil { // else the names did not change
		tt.wildcard = slices.Contains(names, "*")
		tt.names = set
	}
}

// subscribeDelta mirrors stream.Subscription.UpdateResourceSubscriptions.
func (tt *typeTrack) subscribeDelta(sub, unsub []string) {
	if !tt.requested {
		tt.requested, tt.legacy, tt.wildcard = true, true, len(sub) == 0
		tt.names = make(map[string]struct{}, len(sub))
	}
	if tt.legacy {
		if len(sub) == 0 {
			return
		}
		tt.legacy = false
	}
	for _, n := range sub {
		if n == "*" {
			tt.wildcard = true
		} else {
			tt.names[n] = struct{}{}
		}
	}
	for _, n := range unsub {
		if n == "*" {
			tt.wildcard = false
		} else {
			delete(tt.names, n)
		}
	}
}

// affected reports whether an update/removal reaches a stream subscribed as
// tt, i.e. whether the LinearCache will send it something.
func (tt *typeTrack) affected(t int, delta bool, update map[string]types.Resource, remove []string) bool {
	// State-of-the-world can only announce a removal by a full-state response.
	removals := len(remove) > 0 && (delta || fullState(t))
	if tt.wildcard {
		return len(update) > 0 || removals
	}
	if len(tt.names) < len(update) {
		for n := range tt.names {
			if _, ok := update[n]; ok {
				return true
			}
		}
	} else {
		for n := range update {
			if _, ok := tt.names[n]; ok {
				return true
			}
		}
	}
	if removals {
		for _, n := range remove {
			if _, ok := tt.names[n]; ok {
				return true
			}
		}
	}
	return false
}

// recordOwed notes, after an Apply step pushed version v of type t, which
// streams are now owed that version.
func (s *Server) recordOwed(t int, update map[string]types.Resource, remove []string, v uint64) {
	s.trackMu.Lock()
	defer s.trackMu.Unlock()
	for _, st := range s.streams {
		tt := &st.types[t]
		if tt.requested && tt.affected(t, st.delta, update, remove) {
			tt.ackWanted = v
			if depTypes.has(t) { // else nothing waits for this type
				tt.owed = v
			}
		}
	}
}

// Acknowledged reports whether node has an open stream, and every open
// stream of node has acknowledged everything pushed to it by the Applies
// that returned before the call: the node serves that config (or NACKed
// part of it, and then this stays false until a later push is accepted).
func (s *Server) Acknowledged(node string) bool {
	s.trackMu.Lock()
	defer s.trackMu.Unlock()
	found := false
	for _, st := range s.streams {
		if st.node != node || st.closed {
			continue
		}
		found = true
		for t := range numTypes {
			if tt := &st.types[t]; tt.requested && tt.acked < tt.ackWanted {
				return false
			}
		}
	}
	return found
}

// AllAcknowledged reports whether every open stream has acknowledged
// everything pushed to it so far. A stream an Apply gave up waiting for
// (a hung client) does not count, and no streams at all is true: this
// only tells a caller when there is no point in probing yet.
func (s *Server) AllAcknowledged() bool {
	s.trackMu.Lock()
	defer s.trackMu.Unlock()
	for _, st := range s.streams {
		if st.closed || st.lagging {
			continue
		}
		for t := range numTypes {
			if tt := &st.types[t]; tt.requested && tt.acked < tt.ackWanted {
				return false
			}
		}
	}
	return true
}

// OnAck adds fn to the functions called after a client acknowledges a
// push. fn runs on the client's stream goroutine, so it must not block.
func (s *Server) OnAck(fn func(node string)) {
	s.hooksMu.Lock()
	defer s.hooksMu.Unlock()
	s.ackHooks = append(s.ackHooks[:len(s.ackHooks):len(s.ackHooks)], fn)
}

// waitFor blocks until every stream that subscribes to step's type has been
// sent what it is owed of the types step must follow, or StepTimeout passes.
// pushed is the types already pushed by this Apply.
func (s *Server) waitFor(step step, pushed typeSet) {
	deps := step.after
	if step.thisApply {
		deps &= pushed
	}
	if deps == 0 || s.stepTimeout < 0 {
		return
	}

	s.trackMu.Lock()
	var lag []*streamState
	for _, st := range s.streams {
		if st.lagging || !st.types[step.t].requested {
			continue
		}
		if !step.update && !st.delta && !fullState(step.t) {
			continue // the step cannot send this stream anything
		}
		if st.behind(deps) != 0 {
			lag = append(lag, st)
		}
	}
	if len(lag) == 0 {
		s.trackMu.Unlock()
		return
	}

	timer := time.NewTimer(s.stepTimeout)
	defer timer.Stop()
	for {
		lag = slices.DeleteFunc(lag, func(st *streamState) bool { return st.closed || st.behind(deps) == 0 })
		if len(lag) == 0 {
			s.trackMu.Unlock()
			return
		}
		if s.waitCh == nil {
			s.waitCh = make(chan struct{})
		}
		ch := s.waitCh
		s.trackMu.Unlock()

		select {
		case <-ch:
		case <-s.ctx.Done():
			return
		case <-timer.C:
			s.trackMu.Lock()
			s.giveUp(step, deps, lag)
			s.trackMu.Unlock()
			return
		}
		s.trackMu.Lock()
	}
}

// giveUp logs the streams still lagging after a wait timed out and stops
// waiting for them. Called with trackMu held.
func (s *Server) giveUp(step step, deps typeSet, lag []*streamState) {
	const maxLogged = 10
	logged := 0
	for _, st := range lag {
		behind := st.behind(deps)
		if st.closed || behind == 0 {
			continue
		}
		st.lagging = true
		var urls []string
		for t := range numTypes {
			if behind.has(t) {
				st.types[t].waived = st.types[t].owed
				urls = append(urls, servedTypes[t])
			}
		}
		if logged++; logged <= maxLogged {
			s.log.Warnw("xDS client was not sent a push in time; pushing what depends on it anyway",
				"node", st.node, "typeURLs", urls, "nextTypeURL", servedTypes[step.t], "timeout", s.stepTimeout)
		}
	}
	if logged > maxLogged {
		s.log.Warnw("More xDS clients were not sent a push in time", "count", logged-maxLogged)
	}
}

// signal wakes a waiting Apply. Called with trackMu held.
func (s *Server) signal() {
	if s.waitCh != nil {
		close(s.waitCh)
		s.waitCh = nil
	}
}

// parseVersion returns the cache counter in a version this server produced.
func (s *Server) parseVersion(v string) (uint64, bool) {
	rest, ok := strings.CutPrefix(v, s.versionPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(rest, 10, 64)
	return n, err == nil
}

// noNames is the shared, never modified, empty state-of-the-world name set.
var noNames = map[string]struct{}{}

// nameSet returns names as a set, or nil if they equal prev (a nil prev
// matches nothing).
func nameSet(names, prev []string) map[string]struct{} {
	if prev != nil && slices.Equal(names, prev) {
		return nil
	}
	if len(names) == 0 {
		return noNames // legacy wildcard streams send no names on every ACK
	}
	set := make(map[string]struct{}, len(names))
	for _, n := range names {
		if n != "*" {
			set[n] = struct{}{}
		}
	}
	return set
}

// forgetting returns rr with the names in forget marked unknown (an empty
// version), copying rr only if one of them is there.
func forgetting(rr map[string]string, forget map[string]struct{}) map[string]string {
	out, cloned := rr, false
	for n := range forget {
		if v, ok := rr[n]; ok && v != "" {
			if !cloned {
				out, cloned = maps.Clone(rr), true
			}
			out[n] = ""
		}
	}
	return out
}
