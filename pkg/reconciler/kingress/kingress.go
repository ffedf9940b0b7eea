// Package kingress owns the Knative KIngress front end: it turns each
// networking.internal.knative.dev Ingress of Weir's class into an ir.Fragment,
// resolves its Services, EndpointSlices and Secrets, and reports status once
// every gateway pod serves the new version (Knative's probe contract).
package kingress

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netlisters "knative.dev/networking/pkg/client/listers/networking/v1alpha1"
	"knative.dev/networking/pkg/ingress"
	"knative.dev/pkg/logging"
	"knative.dev/pkg/network"
	pkgreconciler "knative.dev/pkg/reconciler"
	"knative.dev/pkg/tracker"

	"github.com/weir-dev/weir/pkg/config"
	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/translate"
)

// ClassName is the ingress class Weir reconciles.
const ClassName = "weir.ingress.networking.knative.dev"

// StatusProber reports whether every gateway pod serves an ingress's
// current spec. knative.dev/networking/pkg/status.Prober implements it.
type StatusProber interface {
	IsReady(ctx context.Context, ing *v1alpha1.Ingress) (bool, error)
	CancelIngressProbing(obj interface{})
}

// Syncer is told when the model changed.
type Syncer interface {
	Trigger()
}

// ProblemSource is offered by a Syncer that translates: what the served
// config leaves out of a source object (gateway.Syncer.ProblemsAt).
type ProblemSource interface {
	ProblemsAt(ref ir.ObjectRef, revision uint64) (problems []translate.Problem, known bool)
	OnProblemsChanged(fn func(refs []ir.ObjectRef))
}

// Reconciler reconciles KIngresses into the shared routing model.
type Reconciler struct {
	Listers Listers
	Model   *ir.Model
	Syncer  Syncer
	Prober  StatusProber
	Tracker tracker.Interface
	// Enqueue re-reconciles a KIngress, e.g. one displaced from a domain.
	Enqueue func(types.NamespacedName)
	// Ingresses and Recorder report gateway rejections as Events; both
	// may be nil where there is no API server.
	Ingresses netlisters.IngressLister
	Recorder  record.EventRecorder
	// GatewayWaiters holds KIngresses until a gateway pod is ready to be
	// probed; the controller calls its GatewaysChanged.
	GatewayWaiters GatewayWaiters
	// OtherFrontEnds, when set, hears what another front end (the Ingress
	// hosts) must rebuild for: a KIngress took a domain from one of its
	// fragments (displaced), or was removed or changed and may have let go
	// of a domain it waits for.
	OtherFrontEnds func(displaced bool)
	// configStore, synced and primed serve ServeExisting; NewController
	// sets them. primeMu orders it with Forget.
	configStore *config.Store
	synced      func() bool
	primed      chan struct{}
	primeOnce   sync.Once
	primeMu     sync.Mutex

	mu sync.Mutex
	// conflicted are KIngresses rejected for a domain conflict; they retry
	// whenever the model changes so they take over once the domain frees.
	conflicted map[ir.ObjectRef]bool
}

// ReconcileKind builds the KIngress's fragment, serves it, and sets status.
// It runs on the leader only.
func (r *Reconciler) ReconcileKind(ctx context.Context, ing *v1alpha1.Ingress) pkgreconciler.Event {
	_, event := r.reconcile(ctx, ing)
	return event
}

// reconcile is ReconcileKind; waiting reports that ing's status says only
// "not ready yet": its probe is under way, or there is no gateway pod to
// probe.
func (r *Reconciler) reconcile(ctx context.Context, ing *v1alpha1.Ingress) (waiting bool, event pkgreconciler.Event) {
	// The probe hash covers the spec only, so a generation once probed Ready
	// stays served; a restarted or new leader re-probes without flapping it
	// (and every Route and Service above it) to not-ready.
	wasReady := ing.IsReady() && ing.Status.ObservedGeneration == ing.Generation
	ing.Status.InitializeConditions()
	problems, err := r.serve(ctx, ing)
	var conflict *ir.ConflictError
	switch {
	case errors.As(err, &conflict):
		ing.Status.MarkLoadBalancerFailed("DomainConflict", conflict.Error())
		return false, nil
	case err != nil:
		ing.Status.MarkLoadBalancerFailed("InvalidSpec", err.Error())
		return false, nil
	case len(problems) > 0:
		msgs := make([]string, len(problems))
		for i, p := range problems {
			msgs[i] = p.Message
		}
		ing.Status.MarkLoadBalancerFailed(problems[0].Reason, strings.Join(msgs, "; "))
		return false, nil
	}
	ing.Status.MarkNetworkConfigured()
	// What translate left out would never answer a probe; say why now.
	if ps := r.notServed(ing); len(ps) > 0 {
		ing.Status.MarkLoadBalancerFailed(ps[0].Reason, problemMessages(ps))
		return false, nil
	}

	gatewayChanges := r.GatewayWaiters.Changes()
	ready, err := r.Prober.IsReady(quietProbes(ctx), ing)
	if noPods := (*NoGatewayPodsError)(nil); errors.As(err, &noPods) {
		r.GatewayWaiters.Wait(types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}, gatewayChanges, r.Enqueue)
		if !wasReady {
			ing.Status.MarkLoadBalancerNotReady()
			ing.Status.MarkIngressNotReady("NoGatewayPods", noPods.Error())
		}
		return !wasReady, nil
	}
	if err != nil {
		return false, fmt.Errorf("probing the gateways for %s/%s: %w", ing.Namespace, ing.Name, err)
	}
	if !ready && !wasReady {
		ing.Status.MarkLoadBalancerNotReady()
		return true, nil
	}
	cfg := config.FromContext(ctx).Weir
	ing.Status.MarkLoadBalancerReady(
		[]v1alpha1.LoadBalancerIngressStatus{{DomainInternal: serviceHost(cfg.ExternalService)}},
		[]v1alpha1.LoadBalancerIngressStatus{{DomainInternal: serviceHost(cfg.InternalService)}},
	)
	return false, nil
}

// quietProbes keeps Knative's prober to warnings and errors: it logs two
// Info lines per probed host: 40,000 lines for 10,000 KIngresses, most of
// the controller's log.
func quietProbes(ctx context.Context) context.Context {
	logger := logging.FromContext(ctx).Desugar()
	if !logger.Core().Enabled(zapcore.InfoLevel) {
		return ctx // already quiet; IncreaseLevel would complain on every call
	}
	return logging.WithLogger(ctx, logger.WithOptions(zap.IncreaseLevel(zapcore.WarnLevel)).Sugar())
}

// notServed returns what the served config leaves out of ing, once the
// served config holds its current fragment. Before that it returns
// nothing, and the sync that covers the fragment enqueues ing again if it
// has problems (ProblemSource.OnProblemsChanged).
func (r *Reconciler) notServed(ing *v1alpha1.Ingress) []translate.Problem {
	ps, ok := r.Syncer.(ProblemSource)
	if !ok {
		return nil
	}
	ref := ir.ObjectRef{Kind: Kind, Namespace: ing.Namespace, Name: ing.Name}
	rev, ok := r.Model.RevisionOf(ref)
	if !ok {
		return nil
	}
	problems, _ := ps.ProblemsAt(ref, rev)
	return problems
}

// problemMessages joins the distinct messages: a rule served on two
// listeners reports the same problem twice.
func problemMessages(ps []translate.Problem) string {
	msgs := make([]string, 0, len(ps))
	for _, p := range ps {
		if !slices.Contains(msgs, p.Message) {
			msgs = append(msgs, p.Message)
		}
	}
	return strings.Join(msgs, "; ")
}

// ObserveKind serves the KIngress without writing status, so every replica
// serves xDS while only the leader writes to the API.
func (r *Reconciler) ObserveKind(ctx context.Context, ing *v1alpha1.Ingress) pkgreconciler.Event {
	_, _ = r.serve(ctx, ing)
	return nil
}

// Forget removes a KIngress from the model. Every replica calls it from
// the informer's delete handler: Weir keeps no finalizer on KIngresses
// (the model lives in memory, so there is nothing to clean up before the
// object goes), which saves a write and an Event per KIngress.
func (r *Reconciler) Forget(obj interface{}) {
	ing, ok := obj.(*v1alpha1.Ingress)
	if !ok {
		return
	}
	r.primeMu.Lock()
	defer r.primeMu.Unlock()
	ref := ir.ObjectRef{Kind: Kind, Namespace: ing.Namespace, Name: ing.Name}
	r.mu.Lock()
	delete(r.conflicted, ref)
	r.mu.Unlock()
	r.GatewayWaiters.Forget(types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name})
	if r.Model.Delete(ref) {
		r.Syncer.Trigger()
		r.retryConflicted(ref)
		r.otherFrontEnds(false)
	}
}

func (r *Reconciler) otherFrontEnds(displaced bool) {
	if r.OtherFrontEnds != nil {
		r.OtherFrontEnds(displaced)
	}
}

// RetryConflicted reconciles again every KIngress refused for a domain
// conflict: another front end has let domains go.
func (r *Reconciler) RetryConflicted() { r.retryConflicted(ir.ObjectRef{}) }

// serve puts the KIngress into the model. It returns the problems found
// in its references, or the error that kept it out of the model.
func (r *Reconciler) serve(ctx context.Context, ing *v1alpha1.Ingress) ([]*Problem, error) {
	for i, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			return nil, fmt.Errorf("spec.rules[%d].http is missing; every rule needs http.paths", i)
		}
	}
	sum, err := ingress.ComputeHash(ing)
	if err != nil {
		return nil, err
	}
	r.track(ing)
	policy := SecretPolicy{ExtraNamespaces: config.FromContext(ctx).Weir.TLSSecretNamespaces}
	frag, problems := Build(ing, hex.EncodeToString(sum[:]), r.Listers, policy)

	ref := frag.Source
	displaced, changed, err := r.Model.Set(frag)
	r.mu.Lock()
	if r.conflicted == nil {
		r.conflicted = map[ir.ObjectRef]bool{}
	}
	if err != nil {
		r.conflicted[ref] = true
	} else {
		delete(r.conflicted, ref)
	}
	r.mu.Unlock()
	if err != nil {
		return problems, err
	}
	if !changed {
		return problems, nil
	}
	others := false
	for _, d := range displaced {
		if d.Kind == Kind {
			r.Enqueue(types.NamespacedName{Namespace: d.Namespace, Name: d.Name})
		} else {
			others = true
		}
	}
	r.Syncer.Trigger()
	r.retryConflicted(ref)
	r.otherFrontEnds(others)
	return problems, nil
}

// ServeExisting puts every KIngress of Weir's class into the model, as
// ObserveKind would, before the workqueue runs: a controller that starts
// with 10,000 KIngresses then serves the gateways a full config in
// seconds; through the workqueue, each first reconcile also waited for
// its status write, and the last was served 50 s after start. Reconciles
// wait until it is done (WaitForExisting), so none races it with a newer
// version; a KIngress deleted meanwhile is not put back. It returns false
// until the informers have synced.
func (r *Reconciler) ServeExisting(ctx context.Context) (served int, ok bool) {
	if r.synced == nil || !r.synced() {
		return 0, false
	}
	all, err := r.Ingresses.List(labels.Everything())
	if err != nil {
		return 0, false
	}
	if r.configStore != nil {
		ctx = r.configStore.ToContext(ctx)
	}
	for _, listed := range all {
		r.primeMu.Lock()
		// The informer deletes from its store before calling Forget,
		// which waits for primeMu: if the KIngress is still here, Forget
		// comes after this serve.
		ing, err := r.Ingresses.Ingresses(listed.Namespace).Get(listed.Name)
		if err == nil && ing.UID == listed.UID && ing.Annotations[networking.IngressClassAnnotationKey] == ClassName && ing.DeletionTimestamp == nil {
			// Defaulted as the reconciler defaults it, so its first
			// reconcile finds the same fragment and changes nothing.
			ing = ing.DeepCopy()
			if !hasRuleWithoutHTTP(ing) { // which serve refuses, and SetDefaults cannot take
				ing.SetDefaults(ctx)
			}
			_, _ = r.serve(ctx, ing)
			served++
		}
		r.primeMu.Unlock()
	}
	r.EndServeExisting()
	return served, true
}

// EndServeExisting lets reconciles run without ServeExisting, e.g. when
// the informers never synced.
func (r *Reconciler) EndServeExisting() {
	r.primeOnce.Do(func() {
		if r.primed != nil {
			close(r.primed)
		}
	})
}

// WaitForExisting blocks until ServeExisting is done, if the controller
// runs it.
func (r *Reconciler) WaitForExisting(ctx context.Context) error {
	if r.primed == nil {
		return nil
	}
	// Done already: never an error, even for an ended context (select
	// would pick either case at random).
	select {
	case <-r.primed:
		return nil
	default:
	}
	select {
	case <-r.primed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ReportRejected records a Warning Event on each KIngress among refs: a
// gateway refused config built from it.
func (r *Reconciler) ReportRejected(refs []ir.ObjectRef, detail string) {
	if r.Recorder == nil || r.Ingresses == nil {
		return
	}
	for _, ref := range refs {
		if ref.Kind != Kind {
			continue
		}
		ing, err := r.Ingresses.Ingresses(ref.Namespace).Get(ref.Name)
		if err != nil {
			continue
		}
		r.Recorder.Eventf(ing, corev1.EventTypeWarning, "GatewayRejectedConfig",
			"A gateway rejected the Envoy config built from this KIngress, and keeps serving its previous config: %s", detail)
	}
}

// retryConflicted re-enqueues the KIngresses waiting on a domain.
func (r *Reconciler) retryConflicted(except ir.ObjectRef) {
	r.mu.Lock()
	var keys []types.NamespacedName
	for ref := range r.conflicted {
		if ref != except {
			keys = append(keys, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name})
		}
	}
	r.mu.Unlock()
	for _, k := range keys {
		r.Enqueue(k)
	}
}

// track re-reconciles the KIngress when anything it refers to changes.
func (r *Reconciler) track(ing *v1alpha1.Ingress) {
	if r.Tracker == nil {
		return
	}
	seen := map[string]bool{}
	add := func(ref tracker.Reference) {
		key := ref.Kind + "/" + ref.Namespace + "/" + ref.Name
		if ref.Selector != nil {
			key += "?" + ref.Selector.MatchLabels["kubernetes.io/service-name"]
		}
		if !seen[key] {
			seen[key] = true
			// The tracker only fails on malformed references, which these are not.
			_ = r.Tracker.TrackReference(ref, ing)
		}
	}
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		for _, p := range rule.HTTP.Paths {
			for _, s := range p.Splits {
				ns := s.ServiceNamespace
				if ns == "" {
					ns = ing.Namespace
				}
				add(tracker.Reference{APIVersion: "v1", Kind: "Service", Namespace: ns, Name: s.ServiceName})
				add(tracker.Reference{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice", Namespace: ns,
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{discoveryv1.LabelServiceName: s.ServiceName}}})
			}
		}
	}
	for _, t := range ing.Spec.TLS {
		ns := t.SecretNamespace
		if ns == "" {
			ns = ing.Namespace
		}
		add(tracker.Reference{APIVersion: "v1", Kind: "Secret", Namespace: ns, Name: t.SecretName})
	}
}

func serviceHost(s types.NamespacedName) string {
	return network.GetServiceHostname(s.Name, s.Namespace)
}
