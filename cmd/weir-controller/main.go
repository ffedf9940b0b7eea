// Command weir-controller is Weir's in-cluster control plane: it reconciles
// KIngresses into the routing model and serves the gateways' Envoy config
// over xDS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	kubeclient "knative.dev/pkg/client/injection/kube/client"
	serviceinformer "knative.dev/pkg/client/injection/kube/informers/core/v1/service"
	endpointsliceinformer "knative.dev/pkg/client/injection/kube/informers/discovery/v1/endpointslice"
	filteredfactory "knative.dev/pkg/client/injection/kube/informers/factory/filtered"
	"knative.dev/pkg/configmap"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/injection"
	"knative.dev/pkg/injection/sharedmain"
	"knative.dev/pkg/logging"
	"knative.dev/pkg/signals"
	"knative.dev/pkg/system"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weir-dev/weir/pkg/config"
	"github.com/weir-dev/weir/pkg/gateway"
	"github.com/weir-dev/weir/pkg/ir"
	gatewayapi "github.com/weir-dev/weir/pkg/reconciler/gateway"
	"github.com/weir-dev/weir/pkg/reconciler/ingress"
	"github.com/weir-dev/weir/pkg/reconciler/kingress"
	"github.com/weir-dev/weir/pkg/translate"
	"github.com/weir-dev/weir/pkg/xds"
	"github.com/weir-dev/weir/pkg/xdstls"
)

var (
	xdsAddress     = flag.String("xds-address", envOr("XDS_ADDRESS", ":18000"), "where to serve xDS (gRPC ADS, delta and state of the world)")
	metricsAddress = flag.String("metrics-address", envOr("METRICS_ADDRESS", ":9091"), "where to serve Prometheus /metrics")
	initialSync    = flag.Duration("initial-sync-timeout", 2*time.Minute, "how long to wait for the informers to sync (every existing KIngress in the model) before serving xDS")
)

// probeGatePatience is how long a KIngress waits for the gateways' ACKs
// before Knative's prober probes it anyway.
const probeGatePatience = 10 * time.Second

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

// Client and workqueue defaults for 10,000 KIngresses, unless the
// environment (or --kube-api-qps / --kube-api-burst) says otherwise.
// sharedmain would give 5 QPS and 2 workers: the first reconcile of a
// KIngress writes a finalizer and a status, so 10,000 took hours. With
// these, the API server's own write rate is the limit (make
// bench-scale-cluster; docs/benchmarks.md).
var clientDefaults = map[string]string{
	"KUBE_API_QPS":             "1000",
	"KUBE_API_BURST":           "2000",
	"K_THREADS_PER_CONTROLLER": "32",
}

func main() {
	for k, v := range clientDefaults {
		if _, ok := os.LookupEnv(k); !ok {
			_ = os.Setenv(k, v)
		}
	}
	setMemoryLimit()
	// Informers are built before sharedmain parses the flags, so the Secret
	// selector comes from the environment. SECRET_LABEL_SELECTOR="" watches
	// every Secret (for certificates that cannot be labeled).
	secretSelector = envOr("SECRET_LABEL_SELECTOR", kingress.DefaultSecretSelector)
	ctx := filteredfactory.WithSelectors(signals.NewContext(), secretSelector)
	// sharedmain parses the flags.
	sharedmain.MainWithContext(ctx, "weir-controller", newController)
}

var secretSelector string

// setMemoryLimit sets the garbage collector's soft limit to 90 % of
// MEMORY_LIMIT (the container's limit, from the downward API) unless
// GOMEMLIMIT is set: near the limit the collector works harder instead of
// the heap growing to twice what is live and the kernel killing the pod.
func setMemoryLimit() {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		return
	}
	limit, err := strconv.ParseInt(os.Getenv("MEMORY_LIMIT"), 10, 64)
	if err != nil || limit <= 0 {
		return
	}
	debug.SetMemoryLimit(limit / 10 * 9)
}

// newController wires the KIngress controller to the model, the syncer and
// the xDS server. Every replica runs all of it; only the leader writes status.
func newController(ctx context.Context, cmw configmap.Watcher) *controller.Impl {
	logger := logging.FromContext(ctx)
	model := ir.NewModel()
	// translate keeps the pointer of every unchanged resource.
	server := xds.NewServer(ctx, xds.Options{Logger: logger.Named("xds"), Registerer: prometheus.DefaultRegisterer, PointerIdentity: true})
	syncer := gateway.NewSyncer(model, translate.DefaultOptions(), server, logger.Named("syncer"))

	var rec *kingress.Reconciler
	impl := kingress.NewController(kingress.ControllerOptions{
		Model:  model,
		Syncer: syncer,
		OnConfig: func(c *config.Config) {
			syncer.SetOptions(translateOptions(c.Weir))
		},
		Reconciler:     &rec,
		SecretSelector: secretSelector,
		// Probing a KIngress before the gateways have its config fails and
		// backs off; wait for their ACKs first (or probeGatePatience).
		GateProber: func(prober kingress.StatusProber, enqueue func(types.NamespacedName), enqueueAfter func(types.NamespacedName, time.Duration)) kingress.StatusProber {
			gate := gateway.NewAckReadiness(syncer, gateway.AckReadinessOptions{
				Acked: server.AllAcknowledged, Then: prober, Enqueue: enqueue,
				EnqueueAfter: enqueueAfter, Patience: probeGatePatience,
			})
			syncer.OnSynced(func(uint64) { gate.Check() })
			server.OnAck(func(string) { gate.Check() })
			return gate
		},
	})(ctx, cmw)

	server.OnNACK(func(n xds.NACK) {
		refs := syncer.SourcesOfError(n.TypeURL, n.Resources, n.Error)
		logger.Warnw("A gateway rejected config", "node", n.Node, "type", n.TypeURL, "error", n.Error, "sources", refs)
		rec.ReportRejected(refs, n.Error)
	})

	// The xDS channel is mutual TLS: the CA is kept in a Secret, each
	// gateway identity has a certificate from it, and a stream may read
	// only the config of its identity.
	kube := kubeclient.Get(ctx)
	authority := xdsAuthority(ctx, logger, kube)
	recheck := make(chan struct{}, 1)
	go maintainSharedGatewaySecret(ctx, logger, kube, authority, recheck)

	// Each Gateway's data plane gets its own xDS; the shared gateways get
	// the KIngress config.
	router := xds.NewRouter(server, func(group string) *xds.Server {
		s := xds.NewServer(ctx, xds.Options{Logger: logger.Named("xds").With("gateway", group), PointerIdentity: true})
		s.OnNACK(func(n xds.NACK) {
			logger.Warnw("A Gateway's data plane rejected config", "gateway", group, "node", n.Node, "type", n.TypeURL, "error", n.Error)
		})
		return s
	})
	router.SetAuthorizer(func(ctx context.Context, node, group string) error {
		err := authority.Authorize(ctx, node, group)
		if err != nil {
			logger.Warnw("Refused an xDS stream", "node", node, zap.Error(err))
		}
		return err
	})
	gatewaysServed, resyncGateways := startGatewayAPI(ctx, logger, router, authority)
	// Every replica follows the CA and identity Secrets: a replaced CA
	// or a withdrawn certificate closes the connections that used it, and
	// the gateways get certificates from the new CA.
	go authority.Follow(ctx, kube, system.Namespace(), xdsCASecret(), gatewayNamespace(), 10*time.Second, func(caChangedNow bool) {
		// The shared gateways' Secret may be the one that changed, or
		// was deleted to withdraw its certificate.
		select {
		case recheck <- struct{}{}:
		default:
		}
		if caChangedNow {
			logger.Infow("The xDS CA changed; issuing the gateways' certificates from it", "secret", system.Namespace()+"/"+xdsCASecret())
			resyncGateways()
		}
	}, func(err error) {
		logger.Warnw("Closed an xDS connection whose certificate is no longer in force", zap.Error(err))
	}, func(err error) {
		logger.Errorw("Reading the xDS CA and certificates failed; keeping the last ones read", zap.Error(err))
	})
	ingressesServed := startIngresses(ctx, logger, model, syncer, impl, rec)

	go func() {
		// Serving xDS before every existing KIngress is in the model would
		// hand restarted gateways a partial config and drop traffic.
		serveExistingKIngresses(ctx, logger, rec, *initialSync)
		// Likewise every Gateway's: its data plane must not get an empty
		// config from a restarted controller.
		select {
		case <-gatewaysServed:
		case <-time.After(*initialSync):
			logger.Warnf("The Gateway API controller has not served every Gateway after %v; serving xDS anyway", *initialSync)
		case <-ctx.Done():
		}
		// And every Ingress's.
		select {
		case <-ingressesServed:
		case <-time.After(*initialSync):
			logger.Warnf("The Ingress controller has not served every Ingress after %v; serving xDS anyway", *initialSync)
		case <-ctx.Done():
		}
		go syncer.Run(ctx)
		if err := syncer.Sync(); err != nil {
			logger.Errorw("Initial translation failed", zap.Error(err))
		}
		if err := serveXDS(ctx, router, *xdsAddress, authority.ServerCredentials(xdsServerNames())); err != nil {
			logger.Fatalw("Serving xDS failed; is the port free?", "address", *xdsAddress, zap.Error(err))
		}
	}()
	go serveMetrics(ctx, logger, *metricsAddress)
	return impl
}

func xdsCASecret() string { return envOr("XDS_CA_SECRET", "weir-xds-ca") }

func gatewayNamespace() string { return envOr("GATEWAY_NAMESPACE", "weir-system") }

// xdsAuthority reads, or makes, the xDS CA, and reads which gateway
// certificates are in force; without them nothing can be served, so it
// retries until the API server answers.
func xdsAuthority(ctx context.Context, logger *zap.SugaredLogger, kube kubernetes.Interface) *xdstls.Authority {
	for {
		ca, err := xdstls.EnsureCASecret(ctx, kube, system.Namespace(), xdsCASecret())
		if err == nil {
			a := xdstls.NewAuthority(ca)
			if _, _, err = a.Refresh(ctx, kube, system.Namespace(), xdsCASecret(), gatewayNamespace()); err == nil {
				return a
			}
		}
		logger.Errorw("Reading the xDS CA and gateway certificates failed; retrying", zap.Error(err))
		select {
		case <-ctx.Done():
			logger.Fatalw("Stopped before the xDS CA was read", zap.Error(ctx.Err()))
		case <-time.After(2 * time.Second):
		}
	}
}

// sharedGatewaySecret holds the certificate of Knative's shared gateways
// (the weir-gateway Deployment mounts it).
const sharedGatewaySecret = "weir-gateway-xds"

// maintainSharedGatewaySecret keeps the shared gateways' certificate made
// and renewed, looking again at once when recheck says the CA or a
// gateway Secret changed; every replica does, and concurrent writes
// settle on one.
func maintainSharedGatewaySecret(ctx context.Context, logger *zap.SugaredLogger, kube kubernetes.Interface, authority *xdstls.Authority, recheck <-chan struct{}) {
	ns := gatewayNamespace()
	for {
		wrote, err := authority.EnsureGatewaySecret(ctx, kube, ns, envOr("GATEWAY_XDS_SECRET", sharedGatewaySecret), "",
			map[string]string{"app.kubernetes.io/name": "weir", "app.kubernetes.io/component": "gateway"}, nil, time.Now())
		wait := time.Hour
		switch {
		case err != nil:
			logger.Errorw("Writing the shared gateways' xDS certificate failed; retrying", zap.Error(err))
			wait = 5 * time.Second
		case wrote:
			logger.Infow("Issued the shared gateways' xDS certificate", "secret", ns+"/"+sharedGatewaySecret)
		}
		select {
		case <-ctx.Done():
			return
		case <-recheck:
		case <-time.After(wait):
		}
	}
}

// xdsServerNames are the names gateways may dial the xDS Service by.
func xdsServerNames() []string {
	svc, ns := envOr("XDS_SERVICE_NAME", "weir-controller"), system.Namespace()
	return []string{svc, svc + "." + ns, svc + "." + ns + ".svc", svc + "." + ns + ".svc.cluster.local"}
}

func translateOptions(w *config.Weir) translate.Options {
	o := translate.DefaultOptions()
	o.StreamIdleTimeout = w.StreamIdleTimeout
	o.ListenAddress = w.ListenAddress
	o.XffNumTrustedHops = w.XffNumTrustedHops
	return o
}

// serveExistingKIngresses puts every existing KIngress into the model once
// the informers have synced, so a restarted controller never hands the
// gateways a partial config. It gives up after timeout.
func serveExistingKIngresses(ctx context.Context, logger *zap.SugaredLogger, rec *kingress.Reconciler, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for ctx.Err() == nil {
		t0 := time.Now()
		if n, ok := rec.ServeExisting(ctx); ok {
			logger.Infof("Served all %d KIngresses in %v; serving xDS", n, time.Since(t0).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			logger.Warnf("The informers have not synced after %v; serving xDS anyway", timeout)
			rec.EndServeExisting()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startGatewayAPI runs the Gateway API controller if the cluster has the
// Gateway API's CRDs. The channel is closed once every Gateway's config is
// served (at once without the Gateway API).
func startGatewayAPI(ctx context.Context, logger *zap.SugaredLogger, router *xds.Router, authority *xdstls.Authority) (<-chan struct{}, func()) {
	none := make(chan struct{})
	close(none)
	nothing := func() {}
	cfg := injection.GetConfig(ctx)
	kube := kubeclient.Get(ctx)
	resources, err := kube.Discovery().ServerResourcesForGroupVersion(gwv1.GroupVersion.String())
	if err != nil {
		logger.Infow("The Gateway API is not installed; serving KIngress only. Install its CRDs and restart weir-controller to serve Gateways.", zap.Error(err))
		return none, nothing
	}
	served := func(resource, kind, version string) bool {
		if slices.ContainsFunc(resources.APIResources, func(r metav1.APIResource) bool { return r.Name == resource }) {
			return true
		}
		logger.Infow(fmt.Sprintf("The %s CRD (gateway.networking.k8s.io/v1) is not installed; serving Gateways without %ss. Install the Gateway API's standard CRDs (%s or later) and restart weir-controller to serve them.", kind, kind, version))
		return false
	}
	grpcRoutes, tlsRoutes := served("grpcroutes", "GRPCRoute", "v1.1"), served("tlsroutes", "TLSRoute", "v1.5")
	tlsPolicies := served("backendtlspolicies", "BackendTLSPolicy", "v1.4")
	var dyn dynamic.Interface
	// A passing API error must not be taken for a missing CRD: that
	// would refuse every parametersRef for the process's life.
	var perr error
	for try := 0; try < 5; try++ {
		if _, perr = kube.Discovery().ServerResourcesForGroupVersion(gatewayapi.ParametersResource.GroupVersion().String()); perr == nil || apierrors.IsNotFound(perr) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if err := perr; err != nil {
		logger.Infow("The GatewayParameters CRD (gateway.weir.dev/v1alpha1) is not installed: a parametersRef to one is refused. Apply config/ and restart weir-controller.", zap.Error(err))
	} else if dyn, err = dynamic.NewForConfig(cfg); err != nil {
		logger.Errorw("dynamic client", zap.Error(err))
		return none, nothing
	}
	gw, err := gwclient.NewForConfig(cfg)
	if err != nil {
		logger.Errorw("Gateway API client", zap.Error(err))
		return none, nothing
	}
	offset, err := strconv.ParseUint(envOr("GATEWAY_PRIVILEGED_PORT_OFFSET", "10000"), 10, 16)
	if err != nil {
		logger.Fatalw("GATEWAY_PRIVILEGED_PORT_OFFSET must be a port offset", zap.Error(err))
	}
	sliceInformer := endpointsliceinformer.Get(ctx).Informer()
	c := gatewayapi.NewController(gatewayapi.ControllerOptions{
		Kube:            kube,
		Gateway:         gw,
		ServiceInformer: serviceinformer.Get(ctx).Informer(),
		SliceInformer:   sliceInformer,
		Router:          router,
		GRPCRoutes:      grpcRoutes,
		TLSRoutes:       tlsRoutes,
		Translate:       translate.DefaultOptions(),

		BackendTLSPolicies: tlsPolicies,
		Dynamic:            dyn,
		Provisioner: &gatewayapi.Provisioner{
			Kube:                 kube,
			Namespace:            envOr("GATEWAY_NAMESPACE", "weir-system"),
			Template:             envOr("GATEWAY_TEMPLATE", "weir-gateway"),
			ServiceType:          corev1.ServiceType(envOr("GATEWAY_SERVICE_TYPE", string(corev1.ServiceTypeLoadBalancer))),
			PrivilegedPortOffset: uint32(offset),
			XDS:                  authority,
			SharedXDSSecret:      envOr("GATEWAY_XDS_SECRET", sharedGatewaySecret),
		},
		Logger: logger.Named("gateway-api"),
		Resync: 10 * time.Hour,
	})
	go c.Run(ctx)
	// Every replica serves xDS; one provisions and writes status.
	electLeader(ctx, kube, "weir-controller-gateway-api", c.SetLeader)
	return c.Served(), c.Resync
}

// electLeader calls setLeader(true) on the one replica holding the lease,
// and setLeader(false) when it loses it; with HA disabled, this replica
// leads at once.
func electLeader(ctx context.Context, kube kubernetes.Interface, lease string, setLeader func(bool)) {
	if sharedmain.IsHADisabled(ctx) {
		setLeader(true)
		return
	}
	id := envOr("POD_NAME", "")
	if id == "" {
		id, _ = os.Hostname()
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: lease, Namespace: system.Namespace()},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	go func() {
		// RunOrDie returns when leadership is lost; stand again.
		for ctx.Err() == nil {
			leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
				Lock: lock, LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
				ReleaseOnCancel: true,
				Callbacks: leaderelection.LeaderCallbacks{
					OnStartedLeading: func(context.Context) { setLeader(true) },
					OnStoppedLeading: func() { setLeader(false) },
				},
			})
		}
	}()
}

// startIngresses runs the networking.k8s.io Ingress controller on the
// shared gateways' model. The channel is closed once every Ingress is in
// the model.
func startIngresses(ctx context.Context, logger *zap.SugaredLogger, model *ir.Model, syncer *gateway.Syncer, impl *controller.Impl, rec *kingress.Reconciler) <-chan struct{} {
	kube := kubeclient.Get(ctx)
	list := func(env string) []string {
		var out []string
		for _, v := range strings.Split(envOr(env, ""), ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
		return out
	}
	extra := list("INGRESS_CLASSES")
	var defaultCert *types.NamespacedName
	if v := envOr("DEFAULT_SSL_CERTIFICATE", ""); v != "" {
		ns, name, ok := strings.Cut(v, "/")
		if !ok || ns == "" || name == "" {
			logger.Fatalw("DEFAULT_SSL_CERTIFICATE must be namespace/name of a kubernetes.io/tls Secret", "value", v)
		}
		defaultCert = &types.NamespacedName{Namespace: ns, Name: name}
	}
	statusNS, statusName, _ := strings.Cut(envOr("INGRESS_STATUS_SERVICE", "weir-system/weir"), "/")
	c := ingress.NewController(ingress.ControllerOptions{
		Kube:            kube,
		ServiceInformer: serviceinformer.Get(ctx).Informer(),
		SliceInformer:   endpointsliceinformer.Get(ctx).Informer(),
		Model:           model,
		Syncer:          syncer,
		Problems:        syncer,
		Displaced: func(ref ir.ObjectRef) {
			if ref.Kind == kingress.Kind {
				impl.EnqueueKey(types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name})
			}
		},
		Freed:                 rec.RetryConflicted,
		ExtraClasses:          extra,
		DefaultCertificate:    defaultCert,
		MirrorTargetHosts:     list("MIRROR_TARGET_HOSTS"),
		AuthServiceNamespaces: list("AUTH_SERVICE_NAMESPACES"),
		StatusService:         types.NamespacedName{Namespace: statusNS, Name: statusName},
		Recorder:              eventRecorder(ctx, kube),
		Logger:                logger.Named("ingress"),
		Resync:                10 * time.Hour,
	})
	rec.OtherFrontEnds = c.KIngressesChanged
	go c.Run(ctx)
	electLeader(ctx, kube, "weir-controller-ingress", c.SetLeader)
	return c.Served()
}

// eventRecorder writes Events through the API server.
func eventRecorder(ctx context.Context, kube kubernetes.Interface) record.EventRecorder {
	b := record.NewBroadcaster()
	w := b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	go func() {
		<-ctx.Done()
		w.Stop()
	}()
	return b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "weir-controller"})
}

func serveXDS(ctx context.Context, server interface{ Register(*grpc.Server) }, addr string, creds credentials.TransportCredentials) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	g := grpc.NewServer(
		// The handshake, client certificate included, comes before any
		// xDS message is read.
		grpc.Creds(creds),
		grpc.MaxConcurrentStreams(100000),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
	)
	server.Register(g)
	go func() {
		<-ctx.Done()
		g.GracefulStop()
	}()
	if err := g.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

func serveMetrics(ctx context.Context, logger *zap.SugaredLogger, addr string) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Errorw(fmt.Sprintf("Serving metrics on %s failed", addr), zap.Error(err))
	}
}
