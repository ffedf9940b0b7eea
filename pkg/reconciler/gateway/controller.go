package gateway

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gwlisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/coalesce"
	"github.com/weir-dev/weir/pkg/reconciler/kingress"
	"github.com/weir-dev/weir/pkg/translate"
	"github.com/weir-dev/weir/pkg/xds"
)

// ControllerOptions configure the in-cluster Gateway API controller.
type ControllerOptions struct {
	Kube    kubernetes.Interface
	Gateway gwclient.Interface
	// ServiceInformer and SliceInformer are shared with the KIngress
	// controller; SliceInformer has kingress.SliceIndexers.
	ServiceInformer, SliceInformer cache.SharedIndexInformer
	// Router serves each Gateway's data plane its own xDS.
	Router *xds.Router
	// GRPCRoutes and TLSRoutes watch those kinds; false where the
	// cluster has no CRD for them.
	GRPCRoutes, TLSRoutes bool
	// BackendTLSPolicies watches them; false where the cluster has no CRD.
	BackendTLSPolicies bool
	// Dynamic reads GatewayParameters, which have no typed client; nil
	// where the cluster has no GatewayParameters CRD.
	Dynamic dynamic.Interface
	// NACKGrace is how long a data plane's refusal must stand before the
	// Gateway's status shows it (5 s when 0): the xDS server retries a
	// push refused for a dependency not yet delivered, and that heals.
	NACKGrace time.Duration
	// Translate are the options of every Gateway's translation;
	// OwnListenersOnly is set for them.
	Translate translate.Options
	// Provisioner makes each Gateway's Deployment and Service; nil leaves
	// them to someone else, and status.addresses empty.
	Provisioner *Provisioner
	Logger      *zap.SugaredLogger
	// Resync re-reads everything this often, so a missed event heals.
	Resync time.Duration
}

// Controller reconciles the Gateway API in a cluster: every change
// rebuilds all Gateways (Build), serves each one's fragment to its own
// data plane, provisions that data plane and writes the statuses. One key
// in the queue coalesces bursts of changes into one rebuild.
type Controller struct {
	opts       ControllerOptions
	logger     *zap.SugaredLogger
	queue      *coalesce.Queue
	factory    gwinformers.SharedInformerFactory
	kube       informers.SharedInformerFactory
	tlsSecrets informers.SharedInformerFactory
	// planes watches the data planes' Deployments; nil without a
	// Provisioner.
	planes informers.SharedInformerFactory

	configMaps corelisters.ConfigMapLister
	classes    gwlisters.GatewayClassLister
	gws        gwlisters.GatewayLister
	routes     gwlisters.HTTPRouteLister
	// grpcRoutes and tlsRoutes are nil without their CRDs.
	grpcRoutes gwlisters.GRPCRouteLister
	tlsRoutes  gwlisters.TLSRouteLister
	// tlsPolicies is nil without the BackendTLSPolicy CRD.
	tlsPolicies gwlisters.BackendTLSPolicyLister
	// params reads GatewayParameters; dynamic is their informers.
	params  ParametersLister
	dynamic dynamicinformer.DynamicSharedInformerFactory
	grants  gwlisters.ReferenceGrantLister
	secrets corelisters.SecretLister
	nss     corelisters.NamespaceLister
	synced  []cache.InformerSynced

	mu          sync.Mutex
	translators map[string]*gatewayTranslator
	// nacks holds, per group, the last config a data plane refused, until
	// every data plane of the group has acknowledged a later push. Its own
	// lock: xDS hooks write it, and must not wait for mu, which is held
	// while pushing.
	nackMu sync.Mutex
	nacks  map[string]refusal
	// hooked are the group Servers whose ACKs and NACKs are watched.
	hooked map[*xds.Server]bool

	// leader is set on the replica that provisions data planes and writes
	// status; every replica serves xDS, since gateways connect to any.
	leader atomic.Bool
	// served is closed once every Gateway's config has been built and
	// served, after the first reconcile.
	served     chan struct{}
	servedOnce sync.Once
}

// Served is closed once the first reconcile has served every Gateway's
// config: before that, a data plane that connects would get nothing.
func (c *Controller) Served() <-chan struct{} { return c.served }

// SetLeader makes this replica the one that provisions and writes status
// (true), or only serves xDS (false).
func (c *Controller) SetLeader(leader bool) {
	if c.leader.Swap(leader) != leader && leader {
		c.queue.Trigger()
	}
}

// Resync reconciles every Gateway again, as after the xDS CA changed.
func (c *Controller) Resync() { c.queue.Trigger() }

// NewController returns a controller; Run starts it.
func NewController(opts ControllerOptions) *Controller {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop().Sugar()
	}
	c := &Controller{
		opts:    opts,
		logger:  opts.Logger,
		queue:   coalesce.New(),
		factory: gwinformers.NewSharedInformerFactory(opts.Gateway, opts.Resync),
		kube:    informers.NewSharedInformerFactory(opts.Kube, opts.Resync),
		// Only TLS Secrets, the only kind a listener may use: the
		// controller does not hold the cluster's other credentials.
		tlsSecrets: informers.NewSharedInformerFactoryWithOptions(opts.Kube, opts.Resync, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = "type=" + string(corev1.SecretTypeTLS)
		})),
		translators: map[string]*gatewayTranslator{},
		nacks:       map[string]refusal{},
		hooked:      map[*xds.Server]bool{},
		served:      make(chan struct{}),
	}
	v1 := c.factory.Gateway().V1()
	handler := c.queue.Handler()
	watched := []cache.SharedIndexInformer{
		v1.GatewayClasses().Informer(), v1.Gateways().Informer(), v1.HTTPRoutes().Informer(), v1.ReferenceGrants().Informer(),
		c.tlsSecrets.Core().V1().Secrets().Informer(), c.kube.Core().V1().Namespaces().Informer(),
		// Endpoints move backends; Services move addresses and backends.
		opts.ServiceInformer, opts.SliceInformer,
	}
	if opts.GRPCRoutes {
		watched = append(watched, v1.GRPCRoutes().Informer())
		c.grpcRoutes = v1.GRPCRoutes().Lister()
	}
	if opts.TLSRoutes {
		watched = append(watched, v1.TLSRoutes().Informer())
		c.tlsRoutes = v1.TLSRoutes().Lister()
	}
	if opts.BackendTLSPolicies {
		watched = append(watched, v1.BackendTLSPolicies().Informer())
		c.tlsPolicies = v1.BackendTLSPolicies().Lister()
	}
	c.params = missingParameters{}
	if opts.Dynamic != nil {
		c.dynamic = dynamicinformer.NewDynamicSharedInformerFactory(opts.Dynamic, opts.Resync)
		inf := c.dynamic.ForResource(ParametersResource).Informer()
		watched = append(watched, inf)
		c.params = IndexerParameters{Indexer: inf.GetIndexer()}
	}
	for _, inf := range watched {
		_, _ = inf.AddEventHandler(handler)
		c.synced = append(c.synced, inf.HasSynced)
	}
	// ConfigMaps hold client CA bundles: only their ca.crt is kept, and
	// only a change to one that has it rebuilds.
	cms := c.kube.Core().V1().ConfigMaps().Informer()
	_ = cms.SetTransform(caBundleOnly)
	_, _ = cms.AddEventHandler(cache.FilteringResourceEventHandler{FilterFunc: hasCABundle, Handler: handler})
	c.synced = append(c.synced, cms.HasSynced)
	c.configMaps = c.kube.Core().V1().ConfigMaps().Lister()
	c.classes, c.gws, c.routes, c.grants = v1.GatewayClasses().Lister(), v1.Gateways().Lister(), v1.HTTPRoutes().Lister(), v1.ReferenceGrants().Lister()
	c.secrets, c.nss = c.tlsSecrets.Core().V1().Secrets().Lister(), c.kube.Core().V1().Namespaces().Lister()
	if p := opts.Provisioner; p != nil {
		// Data plane rollouts move the Gateways' Programmed condition.
		c.planes = informers.NewSharedInformerFactoryWithOptions(opts.Kube, opts.Resync, informers.WithNamespace(p.Namespace))
		inf := c.planes.Apps().V1().Deployments().Informer()
		_, _ = inf.AddEventHandler(handler)
		c.synced = append(c.synced, inf.HasSynced)
	}
	return c
}

// missingParameters reads GatewayParameters where their CRD is not
// installed.
type missingParameters struct{}

func (missingParameters) Get(namespace, name string) (*Parameters, error) {
	return nil, fmt.Errorf("GatewayParameters %s/%s cannot be read: the GatewayParameters CRD (gateway.weir.dev) is not installed; apply config/ and restart weir-controller", namespace, name)
}

// Run starts the informers and reconciles until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	c.factory.Start(ctx.Done())
	c.kube.Start(ctx.Done())
	c.tlsSecrets.Start(ctx.Done())
	if c.dynamic != nil {
		c.dynamic.Start(ctx.Done())
	}
	if c.planes != nil {
		c.planes.Start(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		c.queue.ShutDown()
		return
	}
	c.logger.Info("Gateway API informers synced")
	c.queue.Run(ctx, c.Reconcile, func(err error) { c.logger.Warnw("Reconciling the Gateway API failed; retrying", zap.Error(err)) })
}

// Reconcile rebuilds every Gateway and writes what changed.
func (c *Controller) Reconcile(ctx context.Context) error {
	objs, err := c.objects()
	if err != nil {
		return err
	}
	var popts Options
	var errs []error
	if p := c.opts.Provisioner; p != nil {
		if popts, err = p.BuildOptions(ctx); err != nil {
			// Serve and report anyway; Sync says the same below.
			errs = append(errs, err)
			popts = Options{PrivilegedPortOffset: p.PrivilegedPortOffset}
		}
	}
	if !c.opts.GRPCRoutes {
		popts.Unwatched = append(popts.Unwatched, GRPCRouteKind)
	}
	if !c.opts.TLSRoutes {
		popts.Unwatched = append(popts.Unwatched, TLSRouteKind)
	}
	if !c.opts.BackendTLSPolicies {
		popts.Unwatched = append(popts.Unwatched, BackendTLSPolicyKind)
	}
	res := Build(objs, Listers{
		Services:       corelisters.NewServiceLister(c.opts.ServiceInformer.GetIndexer()),
		EndpointSlices: kingress.IndexedSlices(c.opts.SliceInformer.GetIndexer()),
		Secrets:        c.secrets,
		ConfigMaps:     c.configMaps,
		Parameters:     c.params,
	}, popts)

	c.logger.Debugw("Built the Gateway API", "classes", len(objs.GatewayClasses), "gateways", len(objs.Gateways), "routes", len(objs.HTTPRoutes), "served", len(res.Fragments))
	served := map[string]bool{}
	for _, f := range res.Fragments {
		group := f.Source.Namespace + "/" + f.Source.Name
		served[group] = true
		problems, err := c.serve(group, f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		problems = res.AttachProblems(f.Source, problems)
		if n, ok := c.refused(group, c.opts.Router.Group(group)); ok {
			// The data plane serves its last good config, not this one.
			problems = append(problems, translate.Problem{Source: f.Source, Reason: string(gwv1.GatewayReasonInvalid),
				Message: fmt.Sprintf("the data plane %s refused the config (%s): %s", n.Node, n.TypeURL, n.Error)})
		}
		st := res.Gateways[types.NamespacedName{Namespace: f.Source.Namespace, Name: f.Source.Name}]
		if len(problems) > 0 && st != nil {
			// Never claim more than is served: translate left something out.
			msg := problems[0].Message
			if len(problems) > 1 {
				msg = fmt.Sprintf("%s (and %d more)", msg, len(problems)-1)
			}
			var gen int64
			if cond := meta.FindStatusCondition(st.Conditions, string(gwv1.GatewayConditionAccepted)); cond != nil {
				gen = cond.ObservedGeneration
			}
			setCondition(&st.Conditions, gen, string(gwv1.GatewayConditionProgrammed), false, string(gwv1.GatewayReasonInvalid), msg)
		}
	}
	c.forgetGone(served)
	c.servedOnce.Do(func() { close(c.served) })

	if !c.leader.Load() {
		if len(errs) > 0 {
			return fmt.Errorf("%d errors, first: %w", len(errs), errs[0])
		}
		return nil
	}
	if p := c.opts.Provisioner; p != nil {
		planes, err := p.Sync(ctx, objs.Gateways, res)
		if err != nil {
			errs = append(errs, err)
		}
		for _, f := range res.Fragments {
			nn := types.NamespacedName{Namespace: f.Source.Namespace, Name: f.Source.Name}
			st, plane := res.Gateways[nn], planes[nn]
			if st == nil {
				continue
			}
			st.Addresses = plane.Addresses
			prog := meta.FindStatusCondition(st.Conditions, string(gwv1.GatewayConditionProgrammed))
			if prog == nil || prog.Status != metav1.ConditionTrue {
				continue
			}
			// Programmed means served: not before a pod of the data plane
			// is up with an address to reach it.
			switch {
			case plane.AddressProblem != "":
				setCondition(&st.Conditions, prog.ObservedGeneration, prog.Type, false, string(gwv1.GatewayReasonAddressNotUsable), plane.AddressProblem)
			case len(plane.Addresses) == 0:
				setCondition(&st.Conditions, prog.ObservedGeneration, prog.Type, false, string(gwv1.GatewayReasonAddressNotAssigned), "the Gateway's Service has no address yet")
			case !plane.Ready:
				setCondition(&st.Conditions, prog.ObservedGeneration, prog.Type, false, string(gwv1.GatewayReasonPending), "waiting for a pod of the Gateway's data plane to be available")
			}
		}
	}
	errs = append(errs, c.writeStatuses(ctx, objs, res)...)
	if len(errs) > 0 {
		return fmt.Errorf("%d errors, first: %w", len(errs), errs[0])
	}
	return nil
}

func (c *Controller) objects() (Objects, error) {
	var objs Objects
	var err error
	if objs.GatewayClasses, err = c.classes.List(labels.Everything()); err != nil {
		return objs, err
	}
	if objs.Gateways, err = c.gws.List(labels.Everything()); err != nil {
		return objs, err
	}
	if objs.HTTPRoutes, err = c.routes.List(labels.Everything()); err != nil {
		return objs, err
	}
	if c.grpcRoutes != nil {
		if objs.GRPCRoutes, err = c.grpcRoutes.List(labels.Everything()); err != nil {
			return objs, err
		}
	}
	if c.tlsRoutes != nil {
		if objs.TLSRoutes, err = c.tlsRoutes.List(labels.Everything()); err != nil {
			return objs, err
		}
	}
	if objs.ReferenceGrants, err = c.grants.List(labels.Everything()); err != nil {
		return objs, err
	}
	if c.tlsPolicies != nil {
		if objs.BackendTLSPolicies, err = c.tlsPolicies.List(labels.Everything()); err != nil {
			return objs, err
		}
	}
	nss, err := c.nss.List(labels.Everything())
	if err != nil {
		return objs, err
	}
	objs.NamespaceLabels = map[string]labels.Set{}
	for _, ns := range nss {
		objs.NamespaceLabels[ns.Name] = labels.Set(ns.Labels)
	}
	return objs, nil
}

// serve translates one Gateway's fragment and applies it to its group.
func (c *Controller) serve(group string, f *ir.Fragment) ([]translate.Problem, error) {
	srv := c.opts.Router.Group(group)
	c.mu.Lock()
	t := c.translators[group]
	if t == nil {
		t = newGatewayTranslator(c.opts.Translate)
		c.translators[group] = t
	}
	if !c.hooked[srv] {
		c.hooked[srv] = true
		srv.OnNACK(func(n xds.NACK) { c.noteNACK(group, &n) })
		srv.OnAck(func(string) {
			if srv.AllAcknowledged() {
				c.noteNACK(group, nil)
			}
		})
	}
	c.mu.Unlock()
	res, changed, err := t.translate(f)
	if err != nil {
		return nil, fmt.Errorf("translating Gateway %s: %w", group, err)
	}
	if changed {
		srv.Apply(res.ByType())
	}
	return res.Problems, nil
}

// refusal is a data plane's NACK and when it came.
type refusal struct {
	nack xds.NACK
	at   time.Time
}

// noteNACK records that a data plane of group refused a push (n), or that
// all of them now serve what was pushed (nil), and resyncs if that changes
// what the Gateway's status says.
func (c *Controller) noteNACK(group string, n *xds.NACK) {
	c.nackMu.Lock()
	_, had := c.nacks[group]
	if n != nil {
		c.nacks[group] = refusal{nack: *n, at: time.Now()}
	} else {
		delete(c.nacks, group)
	}
	c.nackMu.Unlock()
	switch {
	case n != nil:
		c.queue.TriggerAfter(c.nackGrace())
	case had:
		c.queue.Trigger()
	}
}

func (c *Controller) nackGrace() time.Duration {
	if c.opts.NACKGrace > 0 {
		return c.opts.NACKGrace
	}
	return 5 * time.Second
}

// refused returns the push a data plane of group refused, once the refusal
// has stood for the grace period and while the group's streams have not
// all acknowledged a later push. A refusing stream that closed no longer
// counts: without it everything may be acknowledged.
func (c *Controller) refused(group string, srv *xds.Server) (xds.NACK, bool) {
	c.nackMu.Lock()
	defer c.nackMu.Unlock()
	r, ok := c.nacks[group]
	switch {
	case !ok:
		return xds.NACK{}, false
	case srv.AllAcknowledged():
		delete(c.nacks, group)
		return xds.NACK{}, false
	case time.Since(r.at) < c.nackGrace():
		return xds.NACK{}, false
	}
	return r.nack, true
}

// gatewayTranslator translates one Gateway's fragments. Every change
// rebuilds every Gateway, so a fragment equal to the last one is not
// translated again: one changed route costs its own Gateway's translation.
type gatewayTranslator struct {
	t    *translate.Translator
	last *ir.Fragment
	res  *translate.Resources
}

func newGatewayTranslator(o translate.Options) *gatewayTranslator {
	o.OwnListenersOnly = true
	return &gatewayTranslator{t: translate.New(o)}
}

func (g *gatewayTranslator) translate(f *ir.Fragment) (*translate.Resources, bool, error) {
	if g.res != nil && reflect.DeepEqual(g.last, f) {
		return g.res, false, nil
	}
	res, err := g.t.Translate([]*ir.Fragment{f})
	if err != nil {
		return nil, false, err
	}
	g.last, g.res = f, res
	return res, true, nil
}

func (c *Controller) forgetGone(served map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for group := range c.translators {
		if !served[group] {
			delete(c.translators, group)
			c.nackMu.Lock()
			delete(c.nacks, group)
			c.nackMu.Unlock()
		}
	}
	for _, group := range c.opts.Router.Groups() {
		if !served[group] {
			// Its data plane is going away; an empty config first, so a
			// pod still connected stops serving the deleted Gateway.
			srv := c.opts.Router.Group(group)
			srv.Apply(emptyConfig())
			c.opts.Router.Remove(group)
			delete(c.hooked, srv)
		}
	}
}

func emptyConfig() map[string][]cachetypes.Resource {
	return map[string][]cachetypes.Resource{}
}

// writeStatuses updates the status of every object Build reported on whose
// status differs.
func (c *Controller) writeStatuses(ctx context.Context, objs Objects, res *Result) []error {
	var errs []error
	now := metav1.Now()
	v1 := c.opts.Gateway.GatewayV1()
	for _, gc := range objs.GatewayClasses {
		st := res.GatewayClasses[gc.Name]
		if st == nil {
			continue
		}
		next := gwv1.GatewayClassStatus{Conditions: SetConditions(gc.Status.Conditions, st.Conditions, now), SupportedFeatures: st.SupportedFeatures}
		if equalIgnoringTimes(gc.Status, next) {
			continue
		}
		cp := gc.DeepCopy()
		cp.Status = next
		if _, err := v1.GatewayClasses().UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil && !apierrs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	for _, gw := range objs.Gateways {
		st := res.Gateways[types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}]
		if st == nil {
			continue
		}
		next := *st.DeepCopy()
		next.Conditions = SetConditions(gw.Status.Conditions, st.Conditions, now)
		for i := range next.Listeners {
			var prev []metav1.Condition
			for _, l := range gw.Status.Listeners {
				if l.Name == next.Listeners[i].Name {
					prev = l.Conditions
				}
			}
			next.Listeners[i].Conditions = SetConditions(prev, next.Listeners[i].Conditions, now)
		}
		if equalIgnoringTimes(gw.Status, next) {
			continue
		}
		cp := gw.DeepCopy()
		cp.Status = next
		if _, err := v1.Gateways(gw.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil && !apierrs.IsNotFound(err) && !apierrs.IsConflict(err) {
			errs = append(errs, err)
		}
	}
	// Each route's status: ours replaced, other controllers' kept.
	write := func(err error) {
		if err != nil && !apierrs.IsNotFound(err) && !apierrs.IsConflict(err) {
			errs = append(errs, err)
		}
	}
	for _, r := range objs.HTTPRoutes {
		if next, ok := nextRouteStatus(r.Status.RouteStatus, routeStatusOf(res.HTTPRoutes, r.Namespace, r.Name), now); ok {
			cp := r.DeepCopy()
			cp.Status.RouteStatus = next
			_, err := v1.HTTPRoutes(r.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{})
			write(err)
		}
	}
	for _, r := range objs.GRPCRoutes {
		if next, ok := nextRouteStatus(r.Status.RouteStatus, routeStatusOf(res.GRPCRoutes, r.Namespace, r.Name), now); ok {
			cp := r.DeepCopy()
			cp.Status.RouteStatus = next
			_, err := v1.GRPCRoutes(r.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{})
			write(err)
		}
	}
	for _, r := range objs.TLSRoutes {
		if next, ok := nextRouteStatus(r.Status.RouteStatus, routeStatusOf(res.TLSRoutes, r.Namespace, r.Name), now); ok {
			cp := r.DeepCopy()
			cp.Status.RouteStatus = next
			_, err := v1.TLSRoutes(r.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{})
			write(err)
		}
	}
	for _, p := range objs.BackendTLSPolicies {
		if next, ok := NextPolicyStatus(p.Status, res.BackendTLSPolicies[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}], now); ok {
			cp := p.DeepCopy()
			cp.Status = next
			_, err := v1.BackendTLSPolicies(p.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{})
			write(err)
		}
	}
	return errs
}

// routeStatus is the status of any route kind.
type routeStatus interface {
	*gwv1.HTTPRouteStatus | *gwv1.GRPCRouteStatus | *gwv1.TLSRouteStatus
}

// routeStatusOf returns the RouteStatus Build computed for a route, or nil.
func routeStatusOf[S routeStatus](m map[types.NamespacedName]S, ns, name string) *gwv1.RouteStatus {
	st, ok := m[types.NamespacedName{Namespace: ns, Name: name}]
	if !ok {
		return nil
	}
	switch s := any(st).(type) {
	case *gwv1.HTTPRouteStatus:
		return &s.RouteStatus
	case *gwv1.GRPCRouteStatus:
		return &s.RouteStatus
	case *gwv1.TLSRouteStatus:
		return &s.RouteStatus
	}
	return nil
}

// nextRouteStatus is a route's status with our parents replaced by ours
// (nil: the route has none of our parents any more), and whether it must
// be written. Other controllers' parents are kept.
func nextRouteStatus(prev gwv1.RouteStatus, ours *gwv1.RouteStatus, now metav1.Time) (gwv1.RouteStatus, bool) {
	var parents []gwv1.RouteParentStatus
	for _, p := range prev.Parents {
		if p.ControllerName != ControllerName {
			parents = append(parents, p)
		}
	}
	if ours != nil {
		for _, p := range ours.Parents {
			for _, old := range prev.Parents {
				if old.ControllerName == ControllerName && reflect.DeepEqual(old.ParentRef, p.ParentRef) {
					p.Conditions = SetConditions(old.Conditions, p.Conditions, now)
				}
			}
			if p.Conditions[0].LastTransitionTime.IsZero() {
				p.Conditions = SetConditions(nil, p.Conditions, now)
			}
			parents = append(parents, p)
		}
	}
	next := gwv1.RouteStatus{Parents: parents}
	if parents == nil {
		next.Parents = []gwv1.RouteParentStatus{}
	}
	hadOurs := slices.ContainsFunc(prev.Parents, func(p gwv1.RouteParentStatus) bool { return p.ControllerName == ControllerName })
	if equalIgnoringTimes(prev, next) || (ours == nil && !hadOurs) {
		return next, false
	}
	return next, true
}

// equalIgnoringTimes compares statuses with condition times zeroed.
func equalIgnoringTimes(a, b any) bool {
	return reflect.DeepEqual(zeroTimes(a), zeroTimes(b))
}

func zeroTimes(v any) any {
	switch s := v.(type) {
	case gwv1.GatewayClassStatus:
		s.Conditions = zeroConds(s.Conditions)
		return s
	case gwv1.GatewayStatus:
		s = *s.DeepCopy()
		s.Conditions = zeroConds(s.Conditions)
		for i := range s.Listeners {
			s.Listeners[i].Conditions = zeroConds(s.Listeners[i].Conditions)
		}
		return s
	case gwv1.RouteStatus:
		s = *s.DeepCopy()
		for i := range s.Parents {
			s.Parents[i].Conditions = zeroConds(s.Parents[i].Conditions)
		}
		if len(s.Parents) == 0 {
			s.Parents = nil
		}
		return s
	}
	return v
}

func zeroConds(cs []metav1.Condition) []metav1.Condition {
	if len(cs) == 0 {
		return nil
	}
	out := slices.Clone(cs)
	for i := range out {
		out[i].LastTransitionTime = metav1.Time{}
	}
	return out
}

// caBundleOnly keeps of a ConfigMap what Build reads: its identity and
// ca.crt. The controller does not hold the cluster's other configuration.
func caBundleOnly(o any) (any, error) {
	cm, ok := o.(*corev1.ConfigMap)
	if !ok {
		return o, nil
	}
	out := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Name: cm.Name, Namespace: cm.Namespace, UID: cm.UID, ResourceVersion: cm.ResourceVersion,
	}}
	if v, ok := cm.Data[caCertKey]; ok {
		out.Data = map[string]string{caCertKey: v}
	}
	return out, nil
}

// hasCABundle reports whether a ConfigMap event can change a Gateway.
func hasCABundle(o any) bool {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	cm, ok := o.(*corev1.ConfigMap)
	if !ok {
		return true
	}
	_, has := cm.Data[caCertKey]
	return has
}
