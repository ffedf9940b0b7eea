// Package coalesce owns the work loop of front ends that rebuild
// everything on any change (Gateway API, Ingress): one key in a
// rate-limited queue, so a burst of events is one rebuild, and a failed
// rebuild is retried with back-off.
package coalesce

import (
	"context"
	"time"

	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

const key = "all"

// Queue holds at most one pending rebuild.
type Queue struct {
	q workqueue.TypedRateLimitingInterface[string]
}

// New returns an empty queue.
func New() *Queue {
	return &Queue{q: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())}
}

// Trigger asks for a rebuild.
func (q *Queue) Trigger() { q.q.Add(key) }

// TriggerAfter asks for a rebuild after d.
func (q *Queue) TriggerAfter(d time.Duration) { q.q.AddAfter(key, d) }

// Handler triggers a rebuild on every informer event.
func (q *Queue) Handler() cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { q.Trigger() },
		UpdateFunc: func(any, any) { q.Trigger() },
		DeleteFunc: func(any) { q.Trigger() },
	}
}

// Run rebuilds once, then again for every trigger, until ctx ends; a
// rebuild that fails is reported to failed and retried with back-off.
func (q *Queue) Run(ctx context.Context, rebuild func(context.Context) error, failed func(error)) {
	defer q.q.ShutDown()
	q.Trigger()
	go func() {
		<-ctx.Done()
		q.q.ShutDown()
	}()
	for {
		k, quit := q.q.Get()
		if quit {
			return
		}
		if err := rebuild(ctx); err != nil {
			failed(err)
			q.q.AddRateLimited(k)
		} else {
			q.q.Forget(k)
		}
		q.q.Done(k)
	}
}

// ShutDown stops the queue; Run returns.
func (q *Queue) ShutDown() { q.q.ShutDown() }
