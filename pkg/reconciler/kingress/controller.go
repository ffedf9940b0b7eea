package kingress

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netclientset "knative.dev/networking/pkg/client/clientset/versioned"
	networkingclient "knative.dev/networking/pkg/client/injection/client"
	ingressinformer "knative.dev/networking/pkg/client/injection/informers/networking/v1alpha1/ingress"
	ingressreconciler "knative.dev/networking/pkg/client/injection/reconciler/networking/v1alpha1/ingress"
	"knative.dev/networking/pkg/status"
	kubeclient "knative.dev/pkg/client/injection/kube/client"
	secretinformer "knative.dev/pkg/client/injection/kube/informers/core/v1/secret/filtered"
	serviceinformer "knative.dev/pkg/client/injection/kube/informers/core/v1/service"
	endpointsliceinformer "knative.dev/pkg/client/injection/kube/informers/discovery/v1/endpointslice"
	"knative.dev/pkg/configmap"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/logging"
	pkgreconciler "knative.dev/pkg/reconciler"
	"knative.dev/pkg/tracker"

	"github.com/weir-dev/weir/pkg/config"
	"github.com/weir-dev/weir/pkg/ir"
)

// EnqueueProblemSources returns a ProblemSource.OnProblemsChanged callback
// that enqueues the KIngresses among refs.
func EnqueueProblemSources(enqueue func(types.NamespacedName)) func(refs []ir.ObjectRef) {
	return func(refs []ir.ObjectRef) {
		for _, ref := range refs {
			if ref.Kind == Kind {
				enqueue(types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name})
			}
		}
	}
}

// ControllerOptions are what the KIngress controller shares with the rest
// of the process.
type ControllerOptions struct {
	Model  *ir.Model
	Syncer Syncer
	// OnConfig is called with every new config-weir / config-network.
	OnConfig func(*config.Config)
	// Reconciler receives the built reconciler, e.g. to attribute NACKs.
	Reconciler **Reconciler
	// SecretSelector is the label selector of the only Secrets the
	// controller watches (DefaultSecretSelector); empty watches all. The
	// context must carry it (knative.dev/pkg's filtered.WithSelectors).
	SecretSelector string
	// GateProber, if set, wraps Knative's prober, e.g. to hold probes
	// back until the gateways have the config (gateway.AckReadiness).
	GateProber func(prober StatusProber, enqueue func(types.NamespacedName), enqueueAfter func(types.NamespacedName, time.Duration)) StatusProber
}

// DefaultSecretSelector selects the Secrets Knative's certificate
// providers create for KIngress TLS. Peers watch every Secret of the
// cluster by default; Weir only holds these.
const DefaultSecretSelector = networking.CertificateUIDLabelKey

// NewController returns the KIngress controller constructor for sharedmain.
func NewController(opts ControllerOptions) func(context.Context, configmap.Watcher) *controller.Impl {
	return func(ctx context.Context, cmw configmap.Watcher) *controller.Impl {
		logger := logging.FromContext(ctx)
		ingressInformer := ingressinformer.Get(ctx)
		serviceInformer := serviceinformer.Get(ctx)
		sliceInformer := endpointsliceinformer.Get(ctx)
		secretInformer := secretinformer.Get(ctx, opts.SecretSelector)

		for _, inf := range []cache.SharedIndexInformer{ingressInformer.Informer(), serviceInformer.Informer(),
			sliceInformer.Informer(), secretInformer.Informer()} {
			if err := inf.SetTransform(StripManagedFields); err != nil {
				logger.Fatalw("Setting an informer's transform failed", zap.Error(err))
			}
		}
		if err := sliceInformer.Informer().AddIndexers(SliceIndexers); err != nil {
			logger.Fatalw("Indexing EndpointSlices by Service failed", zap.Error(err))
		}
		r := &Reconciler{
			Listers: Listers{
				Services:       serviceInformer.Lister(),
				EndpointSlices: IndexedSlices(sliceInformer.Informer().GetIndexer()),
				Secrets:        secretInformer.Lister(),
				SecretSelector: opts.SecretSelector,
			},
			Model:     opts.Model,
			Syncer:    opts.Syncer,
			Ingresses: ingressInformer.Lister(),
			Recorder:  newRecorder(ctx),
		}
		if opts.Reconciler != nil {
			*opts.Reconciler = r
		}

		var (
			impl  *controller.Impl
			store *config.Store
		)
		// The store calls back on every config change, including the first
		// load at start, once impl exists.
		store = config.NewStore(logger.Named("config-store"), func(string, any) {
			if impl == nil {
				return
			}
			if opts.OnConfig != nil {
				opts.OnConfig(store.Load())
			}
			impl.GlobalResync(ingressInformer.Informer())
		})
		impl = ingressreconciler.NewImpl(ctx, r, ClassName, func(*controller.Impl) controller.Options {
			return controller.Options{ConfigStore: store}
		})
		store.WatchConfigs(cmw)
		inner, ok := impl.Reconciler.(leaderAwareReconciler)
		if !ok {
			logger.Fatalf("The generated KIngress reconciler (%T) is not leader aware", impl.Reconciler)
		}
		guarded := newGuardedReconciler(inner, r, ingressInformer.Lister(), networkingclient.Get(ctx), store, FirstStatusHold)
		impl.Reconciler = guarded
		r.configStore = store
		r.primed = make(chan struct{})
		r.synced = func() bool {
			return ingressInformer.Informer().HasSynced() && serviceInformer.Informer().HasSynced() &&
				sliceInformer.Informer().HasSynced() && secretInformer.Informer().HasSynced()
		}

		r.Enqueue = impl.EnqueueKey
		if ps, ok := opts.Syncer.(ProblemSource); ok {
			ps.OnProblemsChanged(EnqueueProblemSources(impl.EnqueueKey))
		}
		prober := status.NewProber(logger.Named("status-manager"), &ProbeTargets{EndpointSlices: r.Listers.EndpointSlices},
			func(ing *v1alpha1.Ingress) {
				impl.EnqueueKey(types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name})
			})
		r.Prober = prober
		if opts.GateProber != nil {
			r.Prober = opts.GateProber(prober, impl.EnqueueKey, impl.EnqueueKeyAfter)
		}
		prober.Start(ctx.Done())

		classFilter := pkgreconciler.AnnotationFilterFunc(networking.IngressClassAnnotationKey, ClassName, false)
		legacy := legacyFinalizerRemover(ctx, networkingclient.Get(ctx), logger)
		ingressInformer.Informer().AddEventHandler(cache.FilteringResourceEventHandler{
			FilterFunc: classFilter,
			Handler: cache.ResourceEventHandlerFuncs{
				AddFunc: func(obj interface{}) {
					impl.Enqueue(obj)
					legacy(obj)
				},
				UpdateFunc: controller.PassNew(func(obj interface{}) {
					impl.Enqueue(obj)
					legacy(obj)
				}),
				DeleteFunc: func(obj interface{}) {
					if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
						obj = d.Obj
					}
					r.Forget(obj)
					guarded.Forget(obj)
					r.Prober.CancelIngressProbing(obj)
				},
			},
		})

		impl.Tracker = tracker.New(impl.EnqueueKey, controller.GetTrackerLease(ctx))
		r.Tracker = impl.Tracker
		serviceInformer.Informer().AddEventHandler(controller.HandleAll(
			controller.EnsureTypeMeta(impl.Tracker.OnChanged, corev1.SchemeGroupVersion.WithKind("Service"))))
		sliceInformer.Informer().AddEventHandler(controller.HandleAll(
			controller.EnsureTypeMeta(impl.Tracker.OnChanged, discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice"))))
		// A gateway pod that became ready (or went) releases the
		// KIngresses that had none to probe.
		sliceInformer.Informer().AddEventHandler(cache.FilteringResourceEventHandler{
			FilterFunc: func(obj interface{}) bool {
				return isGatewaySlice(store.Load().Weir, obj)
			},
			Handler: controller.HandleAll(func(interface{}) {
				r.GatewayWaiters.GatewaysChanged(impl.EnqueueKey)
			}),
		})
		secretInformer.Informer().AddEventHandler(controller.HandleAll(
			controller.EnsureTypeMeta(impl.Tracker.OnChanged, corev1.SchemeGroupVersion.WithKind("Secret"))))
		return impl
	}
}

// newRecorder returns the context's event recorder, or one that writes
// Events through the API server as the generated reconciler's does.
func newRecorder(ctx context.Context) record.EventRecorder {
	if rec := controller.GetEventRecorder(ctx); rec != nil {
		return rec
	}
	b := record.NewBroadcaster()
	w := b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kubeclient.Get(ctx).CoreV1().Events("")})
	go func() {
		<-ctx.Done()
		w.Stop()
	}()
	return b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "weir-controller"})
}

// LegacyFinalizer is the finalizer Weir's KIngresses carried before Weir
// stopped writing one (Knative's generated reconciler names it after the
// resource). Nothing else removes it any more.
const LegacyFinalizer = "ingresses.networking.internal.knative.dev"

// legacyFinalizerRemover returns a handler that removes LegacyFinalizer
// from a KIngress being deleted, so one created by an older Weir does not
// hang in Terminating. The patch carries the resourceVersion, so it never
// drops a finalizer added since; a conflict is retried by the next event.
func legacyFinalizerRemover(ctx context.Context, client netclientset.Interface, logger *zap.SugaredLogger) func(interface{}) {
	return func(obj interface{}) {
		ing, ok := obj.(*v1alpha1.Ingress)
		if !ok {
			return
		}
		patch := legacyFinalizerPatch(ing)
		if patch == nil {
			return
		}
		go func() {
			_, err := client.NetworkingV1alpha1().Ingresses(ing.Namespace).Patch(ctx, ing.Name, types.MergePatchType, patch, metav1.PatchOptions{})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				logger.Warnw("Removing the legacy finalizer of a deleted KIngress failed; the next update retries", "kingress", ing.Namespace+"/"+ing.Name, zap.Error(err))
			}
		}()
	}
}

// legacyFinalizerPatch is the merge patch that removes LegacyFinalizer from
// a KIngress being deleted, or nil if there is nothing to remove.
func legacyFinalizerPatch(ing *v1alpha1.Ingress) []byte {
	if ing.DeletionTimestamp == nil || !slices.Contains(ing.Finalizers, LegacyFinalizer) {
		return nil
	}
	keep := slices.DeleteFunc(slices.Clone(ing.Finalizers), func(f string) bool { return f == LegacyFinalizer })
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"finalizers": keep, "resourceVersion": ing.ResourceVersion}})
	if err != nil {
		return nil // a map of strings always marshals
	}
	return patch
}

// isGatewaySlice reports whether obj is an EndpointSlice of one of the
// gateway Services that KIngresses are probed through.
func isGatewaySlice(cfg *config.Weir, obj interface{}) bool {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return false
	}
	svc := types.NamespacedName{Namespace: s.Namespace, Name: s.Labels[discoveryv1.LabelServiceName]}
	return svc == cfg.ExternalService || svc == cfg.InternalService
}

// StripManagedFields drops metadata.managedFields from objects before the
// informers cache them: Weir never reads them, and at 10,000 KIngresses
// with their Services and EndpointSlices they are 30,000 copies. An update
// without managedFields keeps the stored ones.
func StripManagedFields(obj interface{}) (interface{}, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}
