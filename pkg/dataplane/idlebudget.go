package dataplane

import (
	"container/list"
	"sync"
	"syscall"
)

// idleBudget caps the idle upstream HTTP/1.1 connections of the whole
// proxy. Every cluster has its own pool, as in Envoy, and at 10,000
// clusters (a Knative gateway where every revision's cluster points at
// the same activators) one idle connection each is 10,000 file
// descriptors: the process ran out and every new connection failed. Over
// the budget, the connection idle the longest anywhere is closed.
//
// Lock order: a transport's mu, then the budget's.
type idleBudget struct {
	mu  sync.Mutex
	max int
	lru list.List // of *h1Conn, the longest idle first
}

// defaultIdleBudget is a quarter of the file descriptor limit: the rest
// is for downstream connections, listeners and connections in use.
func defaultIdleBudget() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur == 0 {
		return 1024
	}
	return int(max(min(lim.Cur/4, 1<<20), 64))
}

func newIdleBudget(max int) *idleBudget {
	b := &idleBudget{max: max}
	b.lru.Init()
	return b
}

// add records c as idle and returns the connections to close to stay
// within the budget; the caller evicts them after releasing its lock.
func (b *idleBudget) add(c *h1Conn) []*h1Conn {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.idleElem != nil {
		b.lru.MoveToBack(c.idleElem)
	} else {
		c.idleElem = b.lru.PushBack(c)
	}
	var evict []*h1Conn
	for b.lru.Len() > b.max {
		v := b.lru.Remove(b.lru.Front()).(*h1Conn)
		v.idleElem = nil
		evict = append(evict, v)
	}
	return evict
}

// remove forgets c, which is no longer idle.
func (b *idleBudget) remove(c *h1Conn) {
	b.mu.Lock()
	if c.idleElem != nil {
		b.lru.Remove(c.idleElem)
		c.idleElem = nil
	}
	b.mu.Unlock()
}

// idle is how many idle connections the budget holds.
func (b *idleBudget) idle() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lru.Len()
}
