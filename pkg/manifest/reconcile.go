package manifest

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"github.com/weir-dev/weir/pkg/config"
	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/reconciler/gateway"
	"github.com/weir-dev/weir/pkg/reconciler/kingress"
)

// IngressStatus is the outcome of reconciling one KIngress.
type IngressStatus struct {
	Document Document
	Ingress  *v1alpha1.Ingress // with Status filled in
}

// Summary is one line for a person: "Ready" or the failure and its reason.
func (s IngressStatus) Summary() string {
	c := s.Ingress.Status.GetCondition(v1alpha1.IngressConditionLoadBalancerReady)
	switch {
	case s.Ingress.IsReady():
		return "Ready"
	case c != nil && c.Reason != "":
		return fmt.Sprintf("%s: %s", c.Reason, c.Message)
	}
	return "NotReady"
}

// Reconciler reconciles documents into a routing model with the KIngress
// reconciler, as the controller would with informers.
type Reconciler struct {
	Model  *ir.Model
	Syncer kingress.Syncer
	// Prober decides readiness; nil means ready as soon as the model
	// holds the KIngress (there is no gateway to probe).
	Prober kingress.StatusProber
	Config *config.Config
	// Warn, if set, receives what Apply skipped without an error: a
	// KIngress of another class, a duplicate object.
	Warn func(msg string)
	// Gateways is the Gateway API result of the last Apply.
	Gateways *gateway.Result
	// IngressClasses are served besides the class "weir".
	IngressClasses []string
	// MirrorTargetHosts may be named by an Ingress's mirror-target.
	MirrorTargetHosts []string
	// InternalKey, when set, makes the tokens of internal redirects the
	// same from run to run (ingress.Options.InternalKey).
	InternalKey []byte
	// AuthServiceNamespaces may hold the Service of another namespace's
	// auth-url.
	AuthServiceNamespaces []string
	// Ingresses is the networking.k8s.io Ingress report of the last Apply.
	Ingresses *IngressReport
	// Policies, when set, attaches the TrafficPolicies of every Apply;
	// its last result has their statuses and limits.
	Policies *PolicySync
}

// Apply makes docs the complete desired state: every valid KIngress of
// Weir's class is served, and KIngresses absent from docs are dropped.
// Invalid KIngresses are reported and left out; everything else is served.
// It reconciles every KIngress once, oldest first, for one-shot commands
// such as `weir translate`; `weir run` uses a Controller instead.
func (r *Reconciler) Apply(ctx context.Context, docs []Document) ([]IngressStatus, []error) {
	if r.Config != nil {
		ctx = config.ToContext(ctx, r.Config)
	}
	store := NewStore()
	var errs []error
	var files []string
	byFile := map[string][]Document{}
	for _, d := range docs {
		if _, ok := byFile[d.File]; !ok {
			files = append(files, d.File)
		}
		d.Object = d.Object.DeepCopyObject()
		byFile[d.File] = append(byFile[d.File], d)
	}
	for _, f := range files {
		_, warnings, ferrs := store.SetFile(ctx, f, byFile[f])
		errs = append(errs, ferrs...)
		if r.Warn != nil {
			for _, w := range warnings {
				r.Warn(w)
			}
		}
	}

	rec := &kingress.Reconciler{
		Listers: store.Listers(),
		Model:   r.Model,
		Syncer:  r.Syncer,
		Prober:  r.prober(),
		// Every Apply reconciles every KIngress, oldest first, so a
		// displaced one is reconciled again in this pass anyway.
		Enqueue: func(types.NamespacedName) {},
	}

	keep := map[ir.ObjectRef]bool{}
	ingresses := store.Ingresses()
	statuses := make([]IngressStatus, 0, len(ingresses))
	for _, d := range ingresses {
		ing := d.Object.(*v1alpha1.Ingress)
		keep[ir.ObjectRef{Kind: kingress.Kind, Namespace: ing.Namespace, Name: ing.Name}] = true
		if err := rec.ReconcileKind(ctx, ing); err != nil {
			errs = append(errs, fmt.Errorf("%s (KIngress %s/%s): %w", d, ing.Namespace, ing.Name, err))
		}
		statuses = append(statuses, IngressStatus{Document: d, Ingress: ing})
	}
	for _, f := range r.Model.Fragments() {
		if f.Source.Kind == kingress.Kind && !keep[f.Source] {
			rec.Forget(&v1alpha1.Ingress{ObjectMeta: objectMeta(f.Source)})
		}
	}
	gs := &GatewaySync{Model: r.Model, Syncer: r.Syncer}
	r.Gateways = gs.Sync(store)
	is := &IngressSync{Model: r.Model, Syncer: r.Syncer, Classes: r.IngressClasses, MirrorTargetHosts: r.MirrorTargetHosts, AuthServiceNamespaces: r.AuthServiceNamespaces, InternalKey: r.InternalKey}
	r.Ingresses = is.Sync(store)
	if r.Policies != nil {
		r.Policies.Skipped = r.Ingresses.Skips
		r.Policies.Sync(store)
	}
	return statuses, errs
}

func (r *Reconciler) prober() kingress.StatusProber {
	if r.Prober != nil {
		return r.Prober
	}
	return alwaysReady{}
}

type alwaysReady struct{}

func (alwaysReady) IsReady(context.Context, *v1alpha1.Ingress) (bool, error) { return true, nil }
func (alwaysReady) CancelIngressProbing(interface{})                         {}

func objectMeta(ref ir.ObjectRef) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name}
}
