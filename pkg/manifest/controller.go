package manifest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/tracker"

	"github.com/weir-dev/weir/pkg/config"
	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/gateway"
	"github.com/weir-dev/weir/pkg/reconciler/kingress"
	"github.com/weir-dev/weir/pkg/reconciler/policy"
)

// trackerLease is how long a KIngress's references stay tracked without a
// reconcile. Nothing resyncs in `weir run`, so it is effectively forever.
const trackerLease = 100 * 365 * 24 * time.Hour

// Controller reconciles a Store's KIngresses through Knative's workqueue,
// as weir-controller does with informers: a changed KIngress enqueues
// itself, and a changed Service, EndpointSlice or Secret enqueues only the
// KIngresses that refer to it, found through Knative's tracker.
type Controller struct {
	store  *Store
	rec    *kingress.Reconciler
	impl   *controller.Impl
	prober kingress.StatusProber
	config *config.Config

	reconciles atomic.Uint64
	// quiet drops enqueues while ReconcileAll runs: it reconciles every
	// KIngress anyway, and nothing changes under it.
	quiet atomic.Bool
	// observe, when set (tests), sees every key enqueued.
	observe func(types.NamespacedName)

	mu       sync.Mutex
	statuses map[types.NamespacedName]IngressStatus

	gateways  *GatewaySync
	ingresses *IngressSync
	policies  *PolicySync
}

// ControllerOptions configure a Controller.
type ControllerOptions struct {
	Store  *Store
	Model  *ir.Model
	Syncer kingress.Syncer
	// Prober decides readiness; NewController's caller usually builds it
	// with Enqueue, so it is given as a constructor.
	Prober func(enqueue func(types.NamespacedName)) kingress.StatusProber
	Config *config.Config
	Logger *zap.SugaredLogger
	// IngressClasses are served besides the class "weir".
	IngressClasses []string
	// MirrorTargetHosts may be named by an Ingress's mirror-target.
	MirrorTargetHosts []string
	// AuthServiceNamespaces may hold the Service of another namespace's
	// auth-url.
	AuthServiceNamespaces []string
	// Policies, when set, attach the store's TrafficPolicies.
	Policies *PolicySync
}

// NewController returns a Controller; Run starts its workers.
func NewController(ctx context.Context, opts ControllerOptions) *Controller {
	c := &Controller{store: opts.Store, config: opts.Config, statuses: map[types.NamespacedName]IngressStatus{},
		gateways:  &GatewaySync{Model: opts.Model, Syncer: opts.Syncer},
		ingresses: &IngressSync{Model: opts.Model, Syncer: opts.Syncer, Classes: opts.IngressClasses, MirrorTargetHosts: opts.MirrorTargetHosts, AuthServiceNamespaces: opts.AuthServiceNamespaces}}
	c.policies = opts.Policies
	if c.policies != nil {
		c.policies.Skipped = func(ns, name string) bool { return c.ingresses.Last().Skips(ns, name) }
	}
	c.ingresses.Displaced = func(ref ir.ObjectRef) {
		if ref.Kind == kingress.Kind {
			c.enqueue(types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name})
		}
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop().Sugar()
	}
	c.impl = controller.NewContext(ctx, c, controller.ControllerOptions{WorkQueueName: "KIngresses", Logger: opts.Logger})
	c.prober = alwaysReady{}
	if opts.Prober != nil {
		c.prober = opts.Prober(c.enqueue)
	}
	c.rec = &kingress.Reconciler{
		Listers: opts.Store.Listers(),
		Model:   opts.Model,
		Syncer:  opts.Syncer,
		Prober:  c.prober,
		Tracker: tracker.New(c.enqueue, trackerLease),
		Enqueue: c.enqueue,
	}
	c.rec.OtherFrontEnds = func(displaced bool) {
		// A KIngress took an Ingress host's domain, or may have let go
		// of one a host waits for.
		if last := c.ingresses.Last(); displaced || last != nil && len(last.Conflicts) > 0 {
			c.ingresses.Sync(c.store)
		}
	}
	if ps, ok := opts.Syncer.(kingress.ProblemSource); ok {
		ps.OnProblemsChanged(kingress.EnqueueProblemSources(c.enqueue))
	}
	return c
}

func (c *Controller) enqueue(key types.NamespacedName) {
	if c.quiet.Load() {
		return
	}
	if c.observe != nil {
		c.observe(key)
	}
	c.impl.EnqueueKey(key)
}

// Changed enqueues what changes affect, and rebuilds the Gateways when
// a change can affect them.
func (c *Controller) Changed(changes []Change) {
	gateways, ingresses, policies := false, false, false
	for _, ch := range changes {
		observed := c.policies != nil && c.policies.Observe(ch) // always: it keeps the index
		policies = policies || isPolicyInput(ch) || observed
		gateways = gateways || isGatewayInput(ch.Key.Kind)
		ingresses = ingresses || isIngressInput(ch.Key.Kind)
		if ch.Key.Kind == kingress.Kind {
			c.enqueue(types.NamespacedName{Namespace: ch.Key.Namespace, Name: ch.Key.Name})
			if ch.New == nil {
				c.rec.Tracker.OnDeletedObserver(ch.Old)
			}
			continue
		}
		obj := ch.New
		if obj == nil {
			obj = ch.Old
		}
		c.rec.Tracker.OnChanged(obj)
	}
	if gateways {
		c.gateways.Sync(c.store)
	}
	if ingresses {
		c.ingresses.Sync(c.store)
	}
	if policies && c.policies != nil {
		c.policies.Sync(c.store)
	}
}

// Policies returns the TrafficPolicies' statuses of the latest sync, or
// nil.
func (c *Controller) Policies() *policy.Result {
	if c.policies == nil {
		return nil
	}
	return c.policies.Last()
}

// Ingresses returns the networking.k8s.io Ingress report of the latest
// build.
func (c *Controller) Ingresses() *IngressReport { return c.ingresses.Last() }

// Gateways returns the Gateway API statuses of the latest build.
func (c *Controller) Gateways() *gateway.Result { return c.gateways.Last() }

// ReconcileAll reconciles every KIngress now, oldest first, so domain
// conflicts resolve as in a cluster; `weir run` calls it once before it
// serves anything and before Run, then lets the workers follow changes.
// Changes before it need not be passed to Changed, and nothing may change
// the store while it runs.
func (c *Controller) ReconcileAll(ctx context.Context) []error {
	// Knative's tracker enqueues each KIngress as it first tracks its
	// references, which would reconcile all 10,000 again right after.
	c.quiet.Store(true)
	defer c.quiet.Store(false)
	var errs []error
	c.gateways.Sync(c.store)
	c.ingresses.Sync(c.store)
	if c.policies != nil {
		c.policies.Sync(c.store)
	}
	for _, d := range c.store.Ingresses() {
		m := d.Object.(*v1alpha1.Ingress)
		if err := c.Reconcile(ctx, m.Namespace+"/"+m.Name); err != nil {
			errs = append(errs, err)
		}
	}
	// A KIngress older than an Ingress host takes its domain back; the
	// report must say so.
	c.ingresses.Sync(c.store)
	return errs
}

// Run processes the workqueue with threads workers until ctx ends.
func (c *Controller) Run(ctx context.Context, threads int) error {
	return c.impl.RunContext(ctx, threads)
}

// Reconcile implements knative.dev/pkg/reconciler.Reconciler.
func (c *Controller) Reconcile(ctx context.Context, key string) error {
	c.reconciles.Add(1)
	if c.config != nil {
		ctx = config.ToContext(ctx, c.config)
	}
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return controller.NewPermanentError(err)
	}
	nn := types.NamespacedName{Namespace: ns, Name: name}
	d, ok := c.store.Ingress(ns, name)
	if !ok {
		gone := &v1alpha1.Ingress{}
		gone.Namespace, gone.Name = ns, name
		c.rec.Forget(gone)
		c.prober.CancelIngressProbing(gone)
		c.mu.Lock()
		delete(c.statuses, nn)
		c.mu.Unlock()
		return nil
	}
	ing := d.Object.(*v1alpha1.Ingress).DeepCopy()
	err = c.rec.ReconcileKind(ctx, ing)
	d.Object = ing
	c.mu.Lock()
	c.statuses[nn] = IngressStatus{Document: d, Ingress: ing}
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%s (KIngress %s): %w", d, key, err)
	}
	return nil
}

// Reconciles counts Reconcile calls, for tests and metrics.
func (c *Controller) Reconciles() uint64 { return c.reconciles.Load() }

// Statuses returns the last reconciled status of every KIngress, by
// namespace and name.
func (c *Controller) Statuses() []IngressStatus {
	c.mu.Lock()
	out := make([]IngressStatus, 0, len(c.statuses))
	for _, s := range c.statuses {
		out = append(out, s)
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Ingress, out[j].Ingress
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	return out
}
