package ingress

import (
	"cmp"
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	netlisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/coalesce"
	"github.com/weir-dev/weir/pkg/reconciler/kingress"
)

// ControllerOptions configure the in-cluster Ingress controller.
type ControllerOptions struct {
	Kube kubernetes.Interface
	// ServiceInformer and SliceInformer are shared with the KIngress
	// controller; SliceInformer has kingress.SliceIndexers.
	ServiceInformer, SliceInformer cache.SharedIndexInformer
	// Model and Syncer are the shared gateways' (the KIngress ones):
	// Ingress hosts are served on their external listeners.
	Model  *ir.Model
	Syncer kingress.Syncer
	// Problems, when the Syncer translates, says what the served config
	// left out of each Ingress; it becomes Warning Events too.
	Problems kingress.ProblemSource
	// Displaced hears of KIngresses a host took a domain from; Freed, that
	// a host let its domain go, so KIngresses refused for it may retry.
	Displaced func(ir.ObjectRef)
	Freed     func()
	// ExtraClasses, DefaultCertificate and MirrorTargetHosts are Build's
	// Options.
	ExtraClasses       []string
	DefaultCertificate *types.NamespacedName
	MirrorTargetHosts  []string
	// AuthServiceNamespaces is Build's.
	AuthServiceNamespaces []string
	// StatusService is the gateway Service whose address every served
	// Ingress reports in status.loadBalancer.
	StatusService types.NamespacedName
	Recorder      record.EventRecorder
	Logger        *zap.SugaredLogger
	// Resync re-reads everything this often, so a missed event heals.
	Resync time.Duration
}

// Controller reconciles networking.k8s.io Ingresses in a cluster: any
// change rebuilds them all into host fragments of the shared model, and
// the leader writes status.loadBalancer and a Warning Event for what is
// not served as written. One key in the queue coalesces bursts.
type Controller struct {
	opts    ControllerOptions
	logger  *zap.SugaredLogger
	queue   *coalesce.Queue
	kube    informers.SharedInformerFactory
	secrets informers.SharedInformerFactory
	synced  []cache.InformerSynced

	ingresses netlisters.IngressLister
	classes   netlisters.IngressClassLister
	services  corelisters.ServiceLister
	tls       corelisters.SecretLister
	// auth watches the Secrets auth-secret names.
	auth *authSecrets

	builder *Builder
	leader  atomic.Bool
	// served is closed after the first build is in the model.
	served     chan struct{}
	servedOnce sync.Once

	mu sync.Mutex
	// warned is, per Ingress, the warnings it has as Events, so each is
	// sent once, when it appears.
	warned map[types.NamespacedName]map[string]bool
	// conflicted is set while some host is left out for an older source,
	// so that a freed domain rebuilds.
	conflicted bool
}

// NewController returns a controller; Run starts it.
func NewController(opts ControllerOptions) *Controller {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop().Sugar()
	}
	c := &Controller{
		opts:   opts,
		logger: opts.Logger,
		queue:  coalesce.New(),
		kube:   informers.NewSharedInformerFactory(opts.Kube, opts.Resync),
		// Only TLS Secrets, the only kind an Ingress may use.
		secrets: informers.NewSharedInformerFactoryWithOptions(opts.Kube, opts.Resync, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = "type=" + string(corev1.SecretTypeTLS)
		})),
		builder: NewBuilder(),
		warned:  map[types.NamespacedName]map[string]bool{},
		served:  make(chan struct{}),
	}
	handler := c.queue.Handler()
	ings, classes := c.kube.Networking().V1().Ingresses(), c.kube.Networking().V1().IngressClasses()
	secrets := c.secrets.Core().V1().Secrets()
	for _, inf := range []cache.SharedIndexInformer{ings.Informer(), classes.Informer(), secrets.Informer(), opts.ServiceInformer, opts.SliceInformer} {
		_, _ = inf.AddEventHandler(handler)
		c.synced = append(c.synced, inf.HasSynced)
	}
	c.ingresses, c.classes, c.tls = ings.Lister(), classes.Lister(), secrets.Lister()
	if opts.Problems != nil {
		opts.Problems.OnProblemsChanged(func(refs []ir.ObjectRef) {
			if slices.ContainsFunc(refs, func(r ir.ObjectRef) bool { return r.Kind == Kind }) {
				c.queue.Trigger()
			}
		})
	}
	c.services = corelisters.NewServiceLister(opts.ServiceInformer.GetIndexer())
	c.auth = newAuthSecrets(opts.Kube, opts.Resync, c.queue.Trigger)
	return c
}

// Served is closed once every Ingress is in the model: before that, a
// gateway that connects would get a config without them.
func (c *Controller) Served() <-chan struct{} { return c.served }

// SetLeader makes this replica the one that writes status and Events.
func (c *Controller) SetLeader(leader bool) {
	if c.leader.Swap(leader) != leader && leader {
		c.queue.Trigger()
	}
}

// KIngressesChanged rebuilds when a KIngress took a host's domain (so the
// Ingresses of that host say so), or when some host waits for a domain
// that a KIngress may have let go.
func (c *Controller) KIngressesChanged(displaced bool) {
	c.mu.Lock()
	waiting := c.conflicted
	c.mu.Unlock()
	if displaced || waiting {
		c.queue.Trigger()
	}
}

// Run starts the informers and reconciles until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	c.kube.Start(ctx.Done())
	c.secrets.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		c.queue.ShutDown()
		return
	}
	c.logger.Info("Ingress informers synced")
	defer c.auth.Stop()
	c.queue.Run(ctx, c.Reconcile, func(err error) { c.logger.Warnw("Reconciling Ingresses failed; retrying", zap.Error(err)) })
}

// Reconcile rebuilds every Ingress, serves the hosts and, on the leader,
// writes what changed.
func (c *Controller) Reconcile(ctx context.Context) error {
	ings, err := c.ingresses.List(labels.Everything())
	if err != nil {
		return err
	}
	ics, err := c.classes.List(labels.Everything())
	if err != nil {
		return err
	}
	classes := ClassesOf(ics, c.opts.ExtraClasses)
	// The last good versions too: a refused Ingress keeps serving one.
	c.auth.Watch(ctx, authSecretsOf(append(c.builder.LastGood(), ings...), classes))
	res := c.builder.Build(ings, classes, Listers{
		Services:       c.services,
		EndpointSlices: kingress.IndexedSlices(c.opts.SliceInformer.GetIndexer()),
		Secrets:        c.tls,
		AuthSecrets:    c.auth.Lister(),
	}, Options{ExtraClasses: c.opts.ExtraClasses, DefaultCertificate: c.opts.DefaultCertificate, MirrorTargetHosts: c.opts.MirrorTargetHosts, AuthServiceNamespaces: c.opts.AuthServiceNamespaces})
	served := Serve(c.opts.Model, res)
	c.mu.Lock()
	c.conflicted = len(served.Conflicts) > 0
	c.mu.Unlock()
	for _, d := range served.Displaced {
		if c.opts.Displaced != nil {
			c.opts.Displaced(d)
		}
	}
	if served.Freed && c.opts.Freed != nil {
		c.opts.Freed()
	}
	if served.Changed && c.opts.Syncer != nil {
		c.opts.Syncer.Trigger()
	}
	c.servedOnce.Do(func() { close(c.served) })
	if !c.leader.Load() {
		return nil
	}
	lb := c.loadBalancer()
	var errs []error
	for _, ing := range ings {
		key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
		r := res.Ingresses[key]
		if r == nil {
			continue
		}
		c.warn(ing, key, r)
		if !classes.Owns(ing) {
			// Its own controller (ingress-nginx) writes its status.
			continue
		}
		want := netv1.IngressLoadBalancerStatus{}
		if served.Serves(r) {
			want.Ingress = lb
		}
		if reflect.DeepEqual(ing.Status.LoadBalancer, want) {
			continue
		}
		cp := ing.DeepCopy()
		cp.Status.LoadBalancer = want
		if _, err := c.opts.Kube.NetworkingV1().Ingresses(ing.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil && !apierrs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("writing the status of Ingress %s: %w", key, err))
		}
	}
	c.mu.Lock()
	for key := range c.warned {
		if res.Ingresses[key] == nil {
			delete(c.warned, key)
		}
	}
	c.mu.Unlock()
	if len(errs) > 0 {
		return fmt.Errorf("%d errors, first: %w", len(errs), errs[0])
	}
	return nil
}

// loadBalancer is the status Service's address, as ingress-nginx's
// --publish-service gives it: its load balancer's, else its external IPs,
// else its cluster IP.
func (c *Controller) loadBalancer() []netv1.IngressLoadBalancerIngress {
	svc, err := c.services.Services(c.opts.StatusService.Namespace).Get(c.opts.StatusService.Name)
	if err != nil {
		return nil
	}
	var out []netv1.IngressLoadBalancerIngress
	for _, lb := range svc.Status.LoadBalancer.Ingress {
		out = append(out, netv1.IngressLoadBalancerIngress{IP: lb.IP, Hostname: lb.Hostname})
	}
	if len(out) > 0 {
		return out
	}
	for _, ip := range svc.Spec.ExternalIPs {
		out = append(out, netv1.IngressLoadBalancerIngress{IP: ip})
	}
	if len(out) == 0 && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		out = append(out, netv1.IngressLoadBalancerIngress{IP: svc.Spec.ClusterIP})
	}
	return out
}

// warn sends one Warning Event per thing not served as written, when the
// set of them changed since the last time.
func (c *Controller) warn(ing *netv1.Ingress, key types.NamespacedName, r *IngressResult) {
	var lines []string
	if r.Refused {
		state := "nothing of it is served"
		if r.LastGood {
			state = "its last good version keeps serving"
		}
		for _, f := range r.Findings {
			if f.Support == Refused {
				lines = append(lines, fmt.Sprintf("Refused\t%s=%q is refused (%s): %s", f.Key, f.Value, f.Message, state))
			}
		}
	}
	for _, f := range r.Findings {
		if f.Support == Ignored {
			lines = append(lines, fmt.Sprintf("AnnotationIgnored\t%s is ignored: %s", f.Key, f.Message))
		}
	}
	for _, p := range r.Problems {
		lines = append(lines, p.Reason+"\t"+p.String())
	}
	if ps := c.opts.Problems; ps != nil {
		// What translate left out of the served config; a route on both
		// plain and TLS listeners is reported once per listener.
		tps, _ := ps.ProblemsAt(ir.ObjectRef{Kind: Kind, Namespace: key.Namespace, Name: key.Name}, 0)
		for _, p := range tps {
			lines = append(lines, cmp.Or(p.Reason, "NotServed")+"\t"+p.Message)
		}
	}
	slices.Sort(lines)
	lines = slices.Compact(lines)
	c.mu.Lock()
	prev := c.warned[key]
	next := make(map[string]bool, len(lines))
	var fresh []string
	for _, l := range lines {
		next[l] = true
		if !prev[l] {
			fresh = append(fresh, l)
		}
	}
	c.warned[key] = next
	c.mu.Unlock()
	if c.opts.Recorder == nil {
		return
	}
	// Each warning once, when it appears: not again on every rebuild.
	for _, l := range fresh {
		reason, msg, _ := strings.Cut(l, "\t")
		c.opts.Recorder.Event(ing, corev1.EventTypeWarning, reason, msg)
	}
}
