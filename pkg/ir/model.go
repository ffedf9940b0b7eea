package ir

import (
	"fmt"
	"reflect"
	"sort"
	"sync"
)

// ConflictError says a fragment claims a domain that an older fragment owns.
type ConflictError struct {
	Domain string
	Owner  ObjectRef
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("domain %q is already served by %s; remove it from one of them", e.Domain, e.Owner)
}

// Model holds the current fragment of every source object and resolves who
// owns each domain. It is safe for concurrent use.
type Model struct {
	mu        sync.RWMutex
	fragments map[ObjectRef]*Fragment
	owner     map[string]ObjectRef
	sorted    []*Fragment // cache of Fragments(); nil when stale
	// revision counts changes; setAt is the revision at which each
	// source's current fragment was set, so a caller can tell whether a
	// translation of revision R includes it.
	revision uint64
	setAt    map[ObjectRef]uint64
}

// NewModel returns an empty model.
func NewModel() *Model {
	return &Model{fragments: map[ObjectRef]*Fragment{}, owner: map[string]ObjectRef{}, setAt: map[ObjectRef]uint64{}}
}

// older reports whether a should win a domain over b.
func older(a, b *Fragment) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	return a.Source.String() < b.Source.String()
}

// Set adds or replaces the fragment of f.Source.
//
// If an older fragment owns one of f's domains, f is rejected with a
// *ConflictError and the previous fragment of the same source, if any, keeps
// serving. If f is older than the current owners of its domains, it takes
// them over: the displaced fragments are removed and returned so the caller
// can re-reconcile them (they will then see the conflict).
//
// A fragment equal to the one already served changes nothing: the served
// pointer and its revision stay, and changed is false, so re-reconciling
// an unchanged object costs no translation.
func (m *Model) Set(f *Fragment) (displaced []ObjectRef, changed bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.fragments[f.Source]; ok && (cur == f || reflect.DeepEqual(cur, f)) {
		return nil, false, nil
	}
	domains := f.Domains()
	losers := map[ObjectRef]bool{}
	for _, d := range domains {
		ref, ok := m.owner[d]
		if !ok || ref == f.Source {
			continue
		}
		cur := m.fragments[ref]
		if older(cur, f) {
			return nil, false, &ConflictError{Domain: d, Owner: ref}
		}
		losers[ref] = true
	}
	for ref := range losers {
		m.removeLocked(ref)
		displaced = append(displaced, ref)
	}
	sort.Slice(displaced, func(i, j int) bool { return displaced[i].String() < displaced[j].String() })
	m.removeLocked(f.Source)
	m.fragments[f.Source] = f
	for _, d := range domains {
		m.owner[d] = f.Source
	}
	m.revision++
	m.setAt[f.Source] = m.revision
	if m.sorted != nil {
		// A new slice: callers may still hold the previous one.
		i := m.search(f.Source)
		s := make([]*Fragment, len(m.sorted)+1)
		copy(s, m.sorted[:i])
		s[i] = f
		copy(s[i+1:], m.sorted[i:])
		m.sorted = s
	}
	return displaced, true, nil
}

// Delete removes the fragment of ref. It returns whether one was present.
func (m *Model) Delete(ref ObjectRef) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.fragments[ref]
	m.removeLocked(ref)
	if ok {
		m.revision++
	}
	return ok
}

func (m *Model) removeLocked(ref ObjectRef) {
	f, ok := m.fragments[ref]
	if !ok {
		return
	}
	for _, d := range f.Domains() {
		if m.owner[d] == ref {
			delete(m.owner, d)
		}
	}
	delete(m.fragments, ref)
	delete(m.setAt, ref)
	if m.sorted != nil {
		i := m.search(ref)
		s := make([]*Fragment, 0, len(m.sorted)-1)
		m.sorted = append(append(s, m.sorted[:i]...), m.sorted[i+1:]...)
	}
}

// search returns the index of ref in the sorted cache, or where it goes.
func (m *Model) search(ref ObjectRef) int {
	return sort.Search(len(m.sorted), func(i int) bool { return !refLess(m.sorted[i].Source, ref) })
}

// refLess orders refs as their String() forms do, without building the
// strings: sorting 10,000 fragments by String() cost more than
// translating one change.
func refLess(a, b ObjectRef) bool {
	ap := [5]string{a.Kind, "/", a.Namespace, "/", a.Name}
	bp := [5]string{b.Kind, "/", b.Namespace, "/", b.Name}
	var i, ai, j, bi int
	for {
		for i < len(ap) && ai == len(ap[i]) {
			i, ai = i+1, 0
		}
		for j < len(bp) && bi == len(bp[j]) {
			j, bi = j+1, 0
		}
		if i == len(ap) || j == len(bp) {
			return i == len(ap) && j < len(bp)
		}
		if ap[i][ai] != bp[j][bi] {
			return ap[i][ai] < bp[j][bi]
		}
		ai, bi = ai+1, bi+1
	}
}

// Get returns the fragment currently served for ref.
func (m *Model) Get(ref ObjectRef) (*Fragment, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	f, ok := m.fragments[ref]
	return f, ok
}

// Owner returns the source that owns domain, compared without ASCII case.
func (m *Model) Owner(domain string) (ObjectRef, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	ref, ok := m.owner[LowerASCII(domain)]
	return ref, ok
}

// RevisionOf returns the revision at which ref's current fragment was set.
func (m *Model) RevisionOf(ref ObjectRef) (uint64, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	r, ok := m.setAt[ref]
	return r, ok
}

// Fragments returns the served fragments sorted by source. Callers must not
// modify the slice or the fragments: fragments are immutable once Set.
func (m *Model) Fragments() []*Fragment {
	frags, _ := m.Snapshot()
	return frags
}

// Snapshot returns Fragments() and the revision they are at, read together:
// a translation of them serves every fragment set at or before it.
func (m *Model) Snapshot() ([]*Fragment, uint64) {
	m.mu.RLock()
	if s := m.sorted; s != nil {
		r := m.revision
		m.mu.RUnlock()
		return s, r
	}
	m.mu.RUnlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sorted == nil {
		s := make([]*Fragment, 0, len(m.fragments))
		for _, f := range m.fragments {
			s = append(s, f)
		}
		sort.Slice(s, func(i, j int) bool { return refLess(s[i].Source, s[j].Source) })
		m.sorted = s
	}
	return m.sorted, m.revision
}
