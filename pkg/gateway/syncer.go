// Package gateway owns the control loop from the routing model to the served
// xDS: front ends change the ir.Model and call Trigger; the Syncer coalesces
// those changes, translates the model and applies the result to the xDS
// server, which pushes only what changed.
package gateway

import (
	"context"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.uber.org/zap"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/translate"
	"github.com/weir-dev/weir/pkg/xds"
)

// Syncer keeps the xDS server in step with the model.
type Syncer struct {
	model   *ir.Model
	server  *xds.Server
	logger  *zap.SugaredLogger
	trigger chan struct{}

	mu         sync.Mutex // serializes translate+apply
	translator *translate.Translator
	current    atomic.Pointer[translate.Resources]
	syncs      atomic.Uint64
	// revision is the model revision of the last applied translation.
	revision atomic.Uint64
	onSynced func(revision uint64)
	// problems are the last applied translation's, by source.
	problems   atomic.Pointer[servedProblems]
	onProblems []func(refs []ir.ObjectRef)
	// decorate, when set, adds what is attached to the model's routes
	// from elsewhere (policies) before translation.
	decorate func([]*ir.Fragment) []*ir.Fragment
}

// SetDecorator sets fn to change the fragments before each translation:
// it must return an unchanged fragment as the same pointer, so the
// translator rebuilds only what changed. Set it before the first Sync.
func (s *Syncer) SetDecorator(fn func([]*ir.Fragment) []*ir.Fragment) {
	s.mu.Lock()
	s.decorate = fn
	s.mu.Unlock()
}

// servedProblems are the problems of the translation applied at revision.
type servedProblems struct {
	revision uint64
	bySource map[ir.ObjectRef][]translate.Problem
}

// NewSyncer returns a syncer; call Run to start its loop.
func NewSyncer(model *ir.Model, opts translate.Options, server *xds.Server, logger *zap.SugaredLogger) *Syncer {
	return &Syncer{
		model:      model,
		server:     server,
		logger:     logger,
		translator: translate.New(opts),
		trigger:    make(chan struct{}, 1),
	}
}

// Model is the model this syncer serves.
func (s *Syncer) Model() *ir.Model { return s.model }

// Trigger asks for a sync soon. It never blocks: triggers that arrive while
// a sync is pending collapse into it, so a burst of reconciles costs one
// translation.
func (s *Syncer) Trigger() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Run syncs on every trigger until ctx ends.
func (s *Syncer) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.trigger:
			if err := s.Sync(); err != nil {
				s.logger.Errorw("Translating the routing model failed; the gateways keep their previous config", zap.Error(err))
			}
		}
	}
}

// Sync translates the model and applies it now.
func (s *Syncer) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	frags, revision := s.model.Snapshot()
	if s.decorate != nil {
		frags = s.decorate(frags)
	}
	res, err := s.translator.Translate(frags)
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		s.logger.Warn(w)
	}
	stats := s.server.Apply(res.ByType())
	s.current.Store(res)
	toTell := s.storeProblems(res, revision)
	s.syncs.Add(1)
	s.revision.Store(revision)
	s.logger.Debugw("Applied gateway config", "updated", stats.Updated, "removed", stats.Removed)
	if s.onSynced != nil {
		s.onSynced(revision)
	}
	if len(toTell) > 0 {
		for _, fn := range s.onProblems {
			fn(toTell)
		}
	}
	return nil
}

// storeProblems records res's problems and returns the sources to tell:
// every source that has problems now, and those whose problems went away.
// A source whose problems are unchanged is told again, because its status
// may be of an older version: its reconcile ran before this sync covered
// its new spec, when ProblemsAt could not answer yet.
func (s *Syncer) storeProblems(res *translate.Resources, revision uint64) []ir.ObjectRef {
	next := &servedProblems{revision: revision, bySource: res.ProblemsBySource()}
	prev := s.problems.Swap(next)
	refs := make([]ir.ObjectRef, 0, len(next.bySource))
	for ref := range next.bySource {
		refs = append(refs, ref)
	}
	if prev != nil {
		for ref := range prev.bySource {
			if next.bySource[ref] == nil {
				refs = append(refs, ref)
			}
		}
	}
	return refs
}

// ProblemsAt returns what the served config leaves out of ref, as
// translate reported it. known is false until the xDS server has been
// given a translation at or after model revision revision, when the
// answer could still be about an older version of ref.
func (s *Syncer) ProblemsAt(ref ir.ObjectRef, revision uint64) (problems []translate.Problem, known bool) {
	p := s.problems.Load()
	if p == nil || p.revision < revision {
		return nil, false
	}
	return p.bySource[ref], true
}

// OnProblemsChanged adds fn, to be called after every sync with the
// sources that have problems and those whose problems went away, so their
// status follows the served config: a KIngress left out of a listener for
// another's server name is served again once that one goes, and one that
// still has a problem after a spec change says so for the new spec. fn
// runs under the Syncer's lock: it must not call back into the Syncer.
// Add it before the first Sync.
func (s *Syncer) OnProblemsChanged(fn func(refs []ir.ObjectRef)) {
	s.mu.Lock()
	s.onProblems = append(s.onProblems, fn)
	s.mu.Unlock()
}

// Revision is the model revision (ir.Model.Snapshot) that the xDS server
// was last given: every fragment set at or before it is in the served
// config, once the gateways acknowledge it.
func (s *Syncer) Revision() uint64 { return s.revision.Load() }

// OnSynced sets fn to be called after every applied sync, with its model
// revision. Set it before the first Sync.
func (s *Syncer) OnSynced(fn func(revision uint64)) {
	s.mu.Lock()
	s.onSynced = fn
	s.mu.Unlock()
}

// SetOptions replaces the translation options (from config-weir) and
// re-translates everything.
func (s *Syncer) SetOptions(opts translate.Options) {
	s.mu.Lock()
	s.translator = translate.New(opts)
	s.mu.Unlock()
	s.Trigger()
}

// Resources returns the last applied resources, or nil before the first sync.
func (s *Syncer) Resources() *translate.Resources { return s.current.Load() }

// Syncs counts completed syncs.
func (s *Syncer) Syncs() uint64 { return s.syncs.Load() }

// SourcesOf returns the source objects of the named resources of a type.
func (s *Syncer) SourcesOf(typeURL string, names []string) []ir.ObjectRef {
	res := s.current.Load()
	if res == nil {
		return nil
	}
	seen := map[ir.ObjectRef]bool{}
	var out []ir.ObjectRef
	for _, n := range names {
		for _, ref := range res.Sources[typeURL+"/"+n] {
			if !seen[ref] {
				seen[ref] = true
				out = append(out, ref)
			}
		}
	}
	return out
}

// virtualHostInError finds the virtual hosts a gateway's error names, as
// weir-proxy and Envoy both write them: route_configuration "NAME" then
// virtual_hosts[INDEX].
var virtualHostInError = regexp.MustCompile(`route_configuration "([^"]+)": virtual_hosts\[(\d+)\]`)

// SourcesOfError narrows a rejection of route configurations to the
// source objects of the virtual hosts its error names, so one bad
// KIngress among 10,000 in a shared route table is reported on that one.
// It falls back to SourcesOf when the error names no virtual host it can
// find in the last applied resources.
func (s *Syncer) SourcesOfError(typeURL string, names []string, errText string) []ir.ObjectRef {
	res := s.current.Load()
	if res == nil || typeURL != resourcev3.RouteType {
		return s.SourcesOf(typeURL, names)
	}
	seen := map[ir.ObjectRef]bool{}
	var out []ir.ObjectRef
	for _, m := range virtualHostInError.FindAllStringSubmatch(errText, -1) {
		i, err := strconv.Atoi(m[2])
		if err != nil {
			continue
		}
		for _, rc := range res.Routes {
			if rc.GetName() != m[1] || i >= len(rc.GetVirtualHosts()) {
				continue
			}
			for _, ref := range res.Sources[translate.SourceKey(resourcev3.VirtualHostType, rc.GetVirtualHosts()[i].GetName())] {
				if !seen[ref] {
					seen[ref] = true
					out = append(out, ref)
				}
			}
		}
	}
	if len(out) == 0 {
		return s.SourcesOf(typeURL, names)
	}
	return out
}
