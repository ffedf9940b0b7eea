// Package standalone owns `weir run`: one process that watches Kubernetes
// YAML files, reconciles and translates them exactly as the controller
// does, serves the result over xDS on loopback, and runs the embedded
// weir-proxy as its gateway. An invalid file is reported and the last good
// version of it keeps serving.
package standalone

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/pkg/logging"

	"github.com/weir-dev/weir/pkg/config"
	"github.com/weir-dev/weir/pkg/dataplane"
	"github.com/weir-dev/weir/pkg/dataplane/admin"
	"github.com/weir-dev/weir/pkg/dataplane/xdsclient"
	"github.com/weir-dev/weir/pkg/gateway"
	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/manifest"
	"github.com/weir-dev/weir/pkg/reconciler/kingress"
	"github.com/weir-dev/weir/pkg/reconciler/policy"
	"github.com/weir-dev/weir/pkg/translate"
	"github.com/weir-dev/weir/pkg/xds"
	"github.com/weir-dev/weir/pkg/xds/ratelimit"
)

// Options configure `weir run`.
type Options struct {
	// Paths are YAML files or directories of them.
	Paths []string
	// Listener ports. 0 picks a free port (tests).
	HTTPPort, HTTPSPort, InternalHTTPPort, InternalHTTPSPort int
	// ListenAddress is the address the gateway listeners bind to.
	ListenAddress string
	// AdminAddress is host:port of the admin interface; keep it on loopback.
	AdminAddress string
	// PollInterval is how often the files are checked for changes.
	PollInterval time.Duration
	Logger       *zap.SugaredLogger
	// AccessLog receives one line per request; nil disables it.
	AccessLog io.Writer
	// UpstreamTrustedCA is the CA bundle HTTPS backends (ExternalName on
	// 443 or "https") are verified against; empty finds the system's.
	UpstreamTrustedCA string
	// IngressClasses are networking.k8s.io Ingress classes served besides
	// "weir".
	IngressClasses []string
	// MirrorTargetHosts may be named by an Ingress's mirror-target.
	MirrorTargetHosts []string
	// AuthServiceNamespaces may hold the Service of another namespace's
	// auth-url.
	AuthServiceNamespaces []string
	// XffNumTrustedHops is how many proxies in front are trusted to append
	// to X-Forwarded-For (translate.Options.XffNumTrustedHops).
	XffNumTrustedHops uint32
}

// systemCABundles are where common systems keep their CA bundle, as Go's
// crypto/x509 looks for it.
var systemCABundles = []string{
	"/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine, the Envoy image
	"/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
	"/etc/ssl/ca-bundle.pem",             // openSUSE
	"/etc/ssl/cert.pem",                  // macOS, BSDs
}

// systemCABundle returns the first bundle that exists, or the first path.
func systemCABundle() string {
	for _, p := range systemCABundles {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return systemCABundles[0]
}

// Gateway is a running `weir run`.
type Gateway struct {
	opts      Options
	log       *zap.SugaredLogger
	model     *ir.Model
	syncer    *gateway.Syncer
	server    *xds.Server
	proxy     *dataplane.Proxy
	client    *xdsclient.Client
	store     *manifest.Store
	ctrl      *manifest.Controller
	readiness *gateway.AckReadiness
	reg       *prometheus.Registry
	admin     *admin.Admin
	adminLis  net.Listener
	grpc      *grpc.Server
	conn      *grpc.ClientConn
	cancel    context.CancelFunc
	done      chan struct{}
	// wake asks the file loop to look at the files now: a file system
	// event, or a file that was not yet settled.
	wake chan struct{}

	// emptySince is when each file was first read empty, by the loop
	// goroutine: an empty file loads only after it has read empty for
	// emptySettleTime, whatever its modification time says (an in-place
	// save may leave the old time on the truncated file).
	emptySince map[string]time.Time

	mu    sync.Mutex
	files map[string]*file
}

// nodeID is the embedded proxy's xDS node.
const nodeID = "weir-run"

// reconcileWorkers is how many KIngresses reconcile at once; a reconcile
// is CPU only, so more than the cores buys nothing.
const reconcileWorkers = 2

// Start loads the files, starts the xDS server and the embedded proxy, and
// returns once the initial config is being served.
func Start(ctx context.Context, opts Options) (*Gateway, error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop().Sugar()
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 500 * time.Millisecond
	}
	if opts.AdminAddress == "" {
		opts.AdminAddress = admin.DefaultAddress
	}
	// Knative's prober logs through the context's logger, at info for
	// every probe; only its warnings and errors are worth a user's eye.
	proberLevel := max(zapcore.WarnLevel, opts.Logger.Level())
	ctx = logging.WithLogger(ctx, opts.Logger.Named("prober").WithOptions(zap.IncreaseLevel(proberLevel)))
	ctx, cancel := context.WithCancel(ctx)
	g := &Gateway{opts: opts, log: opts.Logger, cancel: cancel, done: make(chan struct{}),
		wake: make(chan struct{}, 1), files: map[string]*file{}, model: ir.NewModel(), store: manifest.NewStore()}
	if err := g.start(ctx); err != nil {
		cancel()
		g.stop()
		return nil, err
	}
	go g.loop(ctx)
	return g, nil
}

func (g *Gateway) start(ctx context.Context) error {
	g.reg = prometheus.NewRegistry()
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Ports of 0 are resolved up front so the translated listeners, the
	// prober and the banner agree on them.
	ports := []*int{&g.opts.HTTPPort, &g.opts.HTTPSPort, &g.opts.InternalHTTPPort, &g.opts.InternalHTTPSPort}
	for _, p := range ports {
		if *p == 0 {
			free, err := freePort(g.opts.ListenAddress)
			if err != nil {
				return err
			}
			*p = free
		}
	}
	topts := translate.DefaultOptions()
	topts.ExternalHTTPPort, topts.ExternalHTTPSPort = uint32(g.opts.HTTPPort), uint32(g.opts.HTTPSPort)                 //nolint:gosec
	topts.InternalHTTPPort, topts.InternalHTTPSPort = uint32(g.opts.InternalHTTPPort), uint32(g.opts.InternalHTTPSPort) //nolint:gosec
	topts.UpstreamTrustedCA = g.opts.UpstreamTrustedCA
	topts.XffNumTrustedHops = g.opts.XffNumTrustedHops
	if topts.UpstreamTrustedCA == "" {
		topts.UpstreamTrustedCA = systemCABundle()
	}

	// xDS and the rate limit service share one loopback gRPC server.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("xDS on loopback: %w", err)
	}
	limiter, err := ratelimit.New(g.log.Named("ratelimit"), g.reg)
	if err != nil {
		return err
	}
	topts.RateLimitService = lis.Addr().String()
	// translate keeps the pointer of every unchanged resource.
	server := xds.NewServer(ctx, xds.Options{Logger: g.log.Named("xds"), Registerer: g.reg, PointerIdentity: true})
	g.syncer = gateway.NewSyncer(g.model, topts, server, g.log.Named("syncer"))
	attacher := policy.NewAttacher()
	g.syncer.SetDecorator(attacher.Decorate)
	g.grpc = grpc.NewServer()
	server.Register(g.grpc)
	limiter.Register(g.grpc)
	policies := &manifest.PolicySync{Attacher: attacher, Syncer: g.syncer, Limits: func(ls []*ir.GlobalRateLimit) {
		limits := make([]ratelimit.Limit, 0, len(ls))
		for _, l := range ls {
			limits = append(limits, ratelimit.LimitOf(l))
		}
		if err := limiter.SetLimits(limits); err != nil {
			// The policies were validated; this is a bug, and the
			// service keeps its previous limits.
			g.log.Errorw("The rate limit service refused the limits", zap.Error(err))
		}
	}}

	g.proxy = dataplane.New(dataplane.Options{Logger: g.log.Named("proxy"), Registerer: g.reg,
		AccessLog: g.opts.AccessLog, ListenAddress: g.opts.ListenAddress})
	g.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return err
	}
	g.client = xdsclient.New(g.conn, g.proxy, xdsclient.Options{NodeID: nodeID, Cluster: nodeID,
		Logger: g.log.Named("xds-client"), Registerer: g.reg, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second})

	// A KIngress is Ready once the embedded proxy has acknowledged a
	// config that holds its current version: the proxy is in this
	// process, so there is nothing to probe over the network.
	g.server = server
	g.ctrl = manifest.NewController(ctx, manifest.ControllerOptions{
		Store: g.store, Model: g.model, Syncer: g.syncer, Config: config.FromContext(ctx), IngressClasses: g.opts.IngressClasses,
		MirrorTargetHosts:     g.opts.MirrorTargetHosts,
		AuthServiceNamespaces: g.opts.AuthServiceNamespaces,
		Policies:              policies,
		Logger:                g.log.Named("reconciler").WithOptions(zap.IncreaseLevel(zapcore.WarnLevel)),
		Prober: func(enqueue func(types.NamespacedName)) kingress.StatusProber {
			g.readiness = gateway.NewAckReadiness(g.syncer, gateway.AckReadinessOptions{
				Acked: func() bool { return server.Acknowledged(nodeID) }, Enqueue: enqueue})
			return g.readiness
		},
	})
	g.syncer.OnSynced(func(uint64) { g.readiness.Check() })
	server.OnAck(func(node string) {
		if node == nodeID {
			g.readiness.Check()
		}
	})

	g.admin = admin.New(admin.Options{Ready: g.proxy.Ready, Config: g.client.Applied, Gatherer: g.reg, OnDrain: g.proxy.Drain,
		Extra: map[string]http.Handler{"/status": http.HandlerFunc(g.serveStatus)}})
	g.adminLis, err = net.Listen("tcp", g.opts.AdminAddress)
	if err != nil {
		return fmt.Errorf("admin interface on %s: %w (pick another --admin-port)", g.opts.AdminAddress, err)
	}
	go func() { _ = (&http.Server{Handler: g.admin, ReadHeaderTimeout: 5 * time.Second}).Serve(g.adminLis) }()

	// The proxy connects only after the first sync, so its first config is
	// the files' config, not the empty state before it.
	g.scan(ctx, true)
	for _, err := range g.ctrl.ReconcileAll(ctx) {
		g.log.Errorw("Reconcile failed", zap.Error(err))
	}
	if err := g.syncer.Sync(); err != nil {
		g.log.Errorw("Translation failed", zap.Error(err))
	}
	go g.syncer.Run(ctx)
	go func() { _ = g.ctrl.Run(ctx, reconcileWorkers) }()
	go func() { _ = g.grpc.Serve(lis) }()
	go g.client.Run(ctx)
	// Serving starts when the proxy has applied the first complete config.
	deadline := time.Now().Add(30 * time.Second)
	for !g.proxy.Ready() {
		if time.Now().After(deadline) {
			return errors.New("the embedded proxy did not receive a complete config within 30s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// freePort finds a port to listen on, which the proxy binds later. It
// looks below the kernel's ephemeral range: a port from inside it (what
// listening on port 0 gives) may meanwhile become the local port of an
// outgoing connection, and the proxy's bind then fails.
func freePort(host string) (int, error) {
	if host == "" {
		host = "127.0.0.1"
	}
	if lo := ephemeralLow(); lo > 12000 {
		for range 64 {
			port := lo - 1 - rand.IntN(10000)
			if l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port))); err == nil {
				l.Close()
				return port, nil
			}
		}
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ephemeralLow is the first port of Linux's ephemeral range, or 0 when it
// cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return lo
}

// Statuses returns the KIngress statuses of the last reconcile of each.
func (g *Gateway) Statuses() []manifest.IngressStatus { return g.ctrl.Statuses() }

// FileErrors returns the current error of each file that has one.
func (g *Gateway) FileErrors() map[string]error {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]error{}
	for n, f := range g.files {
		if f.err != nil {
			out[n] = f.err
		}
	}
	return out
}

// IngressStatus is one row of /status.
type IngressStatus struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	File      string   `json:"file"`
	Hosts     []string `json:"hosts"`
	Ready     bool     `json:"ready"`
	Status    string   `json:"status"`
}

// StatusReport is the body of /status.
type StatusReport struct {
	// Total and Ready count the KIngresses served and those Ready.
	Total      int               `json:"total"`
	Ready      int               `json:"ready"`
	Ingresses  []IngressStatus   `json:"ingresses,omitempty"`
	FileErrors map[string]string `json:"fileErrors,omitempty"`
	// ServingLastGood lists the files with an error whose earlier content
	// loaded and is still served; a file that never loaded serves nothing.
	ServingLastGood map[string]bool `json:"servingLastGood,omitempty"`
	// Files and Documents count what is loaded, Documents by kind; Skipped
	// says, one line each, what of it is not served and why.
	Files     int            `json:"files"`
	Documents map[string]int `json:"documents,omitempty"`
	Skipped   []string       `json:"skipped,omitempty"`
	// GatewayAPI says, one line each, which Gateway API conditions are
	// not met: what a cluster would show in the objects' status.
	GatewayAPI []string `json:"gatewayAPI,omitempty"`
	// NetworkingIngress says, one line each, what of the
	// networking.k8s.io Ingresses is skipped, refused, ignored or left
	// out: what a cluster would show as Warning Events.
	NetworkingIngress []string `json:"networkingIngress,omitempty"`
	// TrafficPolicies says, one line per policy and target, whether the
	// policy is in force there and, if not, why: its Accepted condition.
	TrafficPolicies []string `json:"trafficPolicies,omitempty"`
}

// Report summarises statuses and file errors.
func (g *Gateway) Report() StatusReport {
	var r StatusReport
	for _, s := range g.Statuses() {
		var hosts []string
		for _, rule := range s.Ingress.Spec.Rules {
			hosts = append(hosts, rule.Hosts...)
		}
		ready := s.Ingress.IsReady()
		r.Total++
		if ready {
			r.Ready++
		}
		r.Ingresses = append(r.Ingresses, IngressStatus{
			Namespace: s.Ingress.Namespace, Name: s.Ingress.Name, File: s.Document.String(), Hosts: hosts,
			Ready: ready, Status: s.Summary(),
		})
	}
	g.mu.Lock()
	for _, f := range g.files {
		if !f.loaded {
			continue
		}
		r.Files++
		for k, n := range f.kinds {
			if r.Documents == nil {
				r.Documents = map[string]int{}
			}
			r.Documents[k] += n
		}
		r.Skipped = append(r.Skipped, f.skipped...)
	}
	slices.Sort(r.Skipped)
	if res := g.ctrl.Gateways(); res != nil {
		r.GatewayAPI = res.NotReady()
	}
	r.NetworkingIngress = g.ctrl.Ingresses().Lines()
	if res := g.ctrl.Policies(); res != nil {
		r.TrafficPolicies = res.Lines()
	}
	for n, f := range g.files {
		if f.err == nil {
			continue
		}
		if r.FileErrors == nil {
			r.FileErrors, r.ServingLastGood = map[string]string{}, map[string]bool{}
		}
		r.FileErrors[n] = f.err.Error()
		if f.loaded {
			r.ServingLastGood[n] = true
		}
	}
	g.mu.Unlock()
	return r
}

// serveStatus serves the report; ?summary leaves out the per-KIngress
// rows, for scripts that wait for thousands to be Ready.
func (g *Gateway) serveStatus(w http.ResponseWriter, req *http.Request) {
	report := g.Report()
	if req.URL.Query().Has("summary") {
		report.Ingresses = nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(report); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf.Bytes())
}

// Ports returns the listener ports in use.
func (g *Gateway) Ports() (http, https, internalHTTP, internalHTTPS int) {
	return g.opts.HTTPPort, g.opts.HTTPSPort, g.opts.InternalHTTPPort, g.opts.InternalHTTPSPort
}

// AdminAddr is where the admin interface listens.
func (g *Gateway) AdminAddr() net.Addr { return g.adminLis.Addr() }

// Shutdown drains the proxy and stops everything.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.admin.Drain()
	err := g.proxy.Shutdown(ctx)
	g.cancel()
	<-g.done
	g.stop()
	return err
}

func (g *Gateway) stop() {
	if g.conn != nil {
		_ = g.conn.Close()
	}
	if g.grpc != nil {
		g.grpc.Stop()
	}
	if g.adminLis != nil {
		_ = g.adminLis.Close()
	}
}
