// Package standalone owns `weir run`: one process that watches Kubernetes
// YAML files, reconciles and translates them exactly as the controller
// does, serves the result over xDS on loopback, and runs the embedded
// weir-proxy as its gateway. An invalid file is reported and the last good
// version of it keeps serving.
package standalone

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/networking/pkg/status"
	"knative.dev/pkg/logging"

	"github.com/weir-dev/weir/pkg/config"
	"github.com/weir-dev/weir/pkg/dataplane"
	"github.com/weir-dev/weir/pkg/dataplane/admin"
	"github.com/weir-dev/weir/pkg/dataplane/xdsclient"
	"github.com/weir-dev/weir/pkg/gateway"
	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/manifest"
	"github.com/weir-dev/weir/pkg/reconciler/kingress"
	"github.com/weir-dev/weir/pkg/translate"
	"github.com/weir-dev/weir/pkg/xds"
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
}

// Gateway is a running `weir run`.
type Gateway struct {
	opts     Options
	log      *zap.SugaredLogger
	model    *ir.Model
	syncer   *gateway.Syncer
	proxy    *dataplane.Proxy
	client   *xdsclient.Client
	prober   *status.Prober
	rec      *manifest.Reconciler
	reg      *prometheus.Registry
	admin    *admin.Admin
	adminLis net.Listener
	grpc     *grpc.Server
	conn     *grpc.ClientConn
	cancel   context.CancelFunc
	done     chan struct{}
	reapply  chan struct{}

	// emptySince is when each file was first read empty, by the loop
	// goroutine: an empty file loads only after it has read empty for
	// emptySettleTime, whatever its modification time says (an in-place
	// save may leave the old time on the truncated file).
	emptySince map[string]time.Time

	mu       sync.Mutex
	files    map[string]*file
	statuses []manifest.IngressStatus
	applies  int
}

// file is the last good content of one input file.
type file struct {
	sum  [sha256.Size]byte
	docs []manifest.Document
	err  error // the current content's error, if any; docs stay the last good
}

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
		reapply: make(chan struct{}, 1), files: map[string]*file{}, model: ir.NewModel()}
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

	// translate keeps the pointer of every unchanged resource.
	server := xds.NewServer(ctx, xds.Options{Logger: g.log.Named("xds"), Registerer: g.reg, PointerIdentity: true})
	g.syncer = gateway.NewSyncer(g.model, topts, server, g.log.Named("syncer"))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("xDS on loopback: %w", err)
	}
	g.grpc = grpc.NewServer()
	server.Register(g.grpc)

	g.proxy = dataplane.New(dataplane.Options{Logger: g.log.Named("proxy"), Registerer: g.reg,
		AccessLog: g.opts.AccessLog, ListenAddress: g.opts.ListenAddress})
	g.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return err
	}
	g.client = xdsclient.New(g.conn, g.proxy, xdsclient.Options{NodeID: "weir-run", Cluster: "weir-run",
		Logger: g.log.Named("xds-client"), Registerer: g.reg, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second})

	probeIP := g.opts.ListenAddress
	if probeIP == "" || probeIP == "0.0.0.0" {
		probeIP = "127.0.0.1"
	}
	g.prober = status.NewProber(g.log.Named("prober"),
		&kingress.LocalGateway{IP: probeIP, ExternalPort: g.opts.HTTPPort, InternalPort: g.opts.InternalHTTPPort},
		func(*v1alpha1.Ingress) { g.requestReapply() })
	g.prober.Start(ctx.Done())
	g.rec = &manifest.Reconciler{Model: g.model, Syncer: g.syncer, Prober: g.prober, Config: config.FromContext(ctx)}

	g.admin = admin.New(admin.Options{Ready: g.proxy.Ready, Config: g.client.Applied, Gatherer: g.reg,
		Extra: map[string]http.Handler{"/status": http.HandlerFunc(g.serveStatus)}})
	g.adminLis, err = net.Listen("tcp", g.opts.AdminAddress)
	if err != nil {
		return fmt.Errorf("admin interface on %s: %w (pick another --admin-port)", g.opts.AdminAddress, err)
	}
	go func() { _ = (&http.Server{Handler: g.admin, ReadHeaderTimeout: 5 * time.Second}).Serve(g.adminLis) }()

	// The proxy connects only after the first sync, so its first config is
	// the files' config, not the empty state before it.
	g.reload(ctx, g.readInputs())
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

func freePort(host string) (int, error) {
	if host == "" {
		host = "127.0.0.1"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (g *Gateway) requestReapply() {
	select {
	case g.reapply <- struct{}{}:
	default:
	}
}

func (g *Gateway) loop(ctx context.Context) {
	defer close(g.done)
	t := time.NewTicker(g.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if in := g.readInputs(); !g.loaded(in) && in.settled {
				g.reload(ctx, in)
			}
		case <-g.reapply:
			g.apply(ctx)
		}
	}
}

// A file is loaded only once it has been left alone for settleTime, so a
// file caught halfway through an in-place save (often a valid but truncated
// YAML stream) is not served; a later poll picks it up. An empty file is
// most likely a save stalled between truncate and write, so it waits
// longer. Scripts should still replace files by rename.
const (
	settleTime      = 100 * time.Millisecond
	emptySettleTime = time.Second
)

// inputs is one reading of the input files.
type inputs struct {
	listErr error
	names   []string
	data    map[string][]byte
	sums    map[string][sha256.Size]byte
	readErr map[string]error
	// settled is false if a file changed while it was read or was
	// modified less than settleTime ago.
	settled bool
}

func (g *Gateway) readInputs() *inputs {
	in := &inputs{data: map[string][]byte{}, sums: map[string][sha256.Size]byte{}, readErr: map[string]error{}, settled: true}
	in.names, in.listErr = g.listFiles()
	for _, n := range in.names {
		before, err := os.Stat(n)
		if err != nil {
			in.readErr[n] = err
			continue
		}
		b, err := os.ReadFile(n)
		if err != nil {
			in.readErr[n] = err
			continue
		}
		after, err := os.Stat(n)
		if err != nil || !after.ModTime().Equal(before.ModTime()) || after.Size() != int64(len(b)) {
			in.settled = false
		} else if age := time.Since(after.ModTime()); age >= 0 && (age < settleTime || len(bytes.TrimSpace(b)) == 0 && age < emptySettleTime) {
			in.settled = false
		}
		if len(bytes.TrimSpace(b)) == 0 {
			if g.emptySince == nil {
				g.emptySince = map[string]time.Time{}
			}
			first, seen := g.emptySince[n]
			if !seen {
				first = time.Now()
				g.emptySince[n] = first
			}
			if time.Since(first) < emptySettleTime {
				in.settled = false
			}
		} else {
			delete(g.emptySince, n)
		}
		in.data[n] = b
		in.sums[n] = sha256.Sum256(b)
	}
	return in
}

// loaded reports whether in is what the gateway has loaded: no file
// appeared, vanished or changed.
func (g *Gateway) loaded(in *inputs) bool {
	if in.listErr != nil {
		return true // nothing to do but keep serving; reload logs it
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(in.names) != len(g.files) {
		return false
	}
	for _, n := range in.names {
		f, ok := g.files[n]
		if !ok {
			return false
		}
		if sum, ok := in.sums[n]; !ok || sum != f.sum {
			return false
		}
	}
	return true
}

// listFiles returns the YAML files under the configured paths.
func (g *Gateway) listFiles() ([]string, error) {
	var out []string
	for _, p := range g.opts.Paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			out = append(out, p)
			continue
		}
		for _, pat := range []string{"*.yaml", "*.yml"} {
			m, err := filepath.Glob(filepath.Join(p, pat))
			if err != nil {
				return nil, err
			}
			out = append(out, m...)
		}
	}
	sort.Strings(out)
	return out, nil
}

// reload loads a reading of the files. A file that fails to decode or
// validate keeps its last good documents, and its error is logged with
// file, document and field.
func (g *Gateway) reload(ctx context.Context, in *inputs) {
	if in.listErr != nil {
		g.log.Errorw("Cannot list the input files; keeping the current config", zap.Error(in.listErr))
		return
	}
	g.mu.Lock()
	seen := map[string]bool{}
	for _, n := range in.names {
		seen[n] = true
		if err := in.readErr[n]; err != nil {
			g.log.Errorw("Cannot read file; keeping its last good version", "file", n, zap.Error(err))
			continue
		}
		data, sum := in.data[n], in.sums[n]
		f := g.files[n]
		if f != nil && f.sum == sum {
			continue
		}
		if f == nil {
			f = &file{}
			g.files[n] = f
		}
		f.sum = sum
		docs, err := manifest.Decode(n, data)
		if err == nil {
			for _, d := range docs {
				if verr := manifest.Validate(ctx, manifest.Document{File: d.File, Index: d.Index, Object: d.Object.DeepCopyObject()}); verr != nil {
					err = errors.Join(err, verr)
				}
			}
		}
		f.err = err
		if err != nil {
			g.log.Errorf("Invalid input; the last good version of %s keeps serving:\n%v", n, err)
			continue
		}
		f.docs = docs
		g.log.Infow("Loaded", "file", n, "documents", len(docs))
	}
	for n := range g.files {
		if !seen[n] {
			delete(g.files, n)
			g.log.Infow("File removed; dropping what it defined", "file", n)
		}
	}
	g.mu.Unlock()
	g.apply(ctx)
}

// apply reconciles the current documents and pushes the result.
func (g *Gateway) apply(ctx context.Context) {
	g.mu.Lock()
	var docs []manifest.Document
	names := make([]string, 0, len(g.files))
	for n := range g.files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		docs = append(docs, g.files[n].docs...)
	}
	g.mu.Unlock()

	statuses, errs := g.rec.Apply(ctx, docs)
	for _, err := range errs {
		g.log.Errorw("Reconcile failed", zap.Error(err))
	}
	if err := g.syncer.Sync(); err != nil {
		g.log.Errorw("Translation failed; the proxy keeps its last config", zap.Error(err))
	}
	g.mu.Lock()
	g.statuses = statuses
	g.applies++
	g.mu.Unlock()
}

// Statuses returns the KIngress statuses of the last reconcile.
func (g *Gateway) Statuses() []manifest.IngressStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]manifest.IngressStatus(nil), g.statuses...)
}

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
	Ingresses  []IngressStatus   `json:"ingresses"`
	FileErrors map[string]string `json:"fileErrors,omitempty"`
}

// Report summarises statuses and file errors.
func (g *Gateway) Report() StatusReport {
	var r StatusReport
	for _, s := range g.Statuses() {
		var hosts []string
		for _, rule := range s.Ingress.Spec.Rules {
			hosts = append(hosts, rule.Hosts...)
		}
		r.Ingresses = append(r.Ingresses, IngressStatus{
			Namespace: s.Ingress.Namespace, Name: s.Ingress.Name, File: s.Document.String(), Hosts: hosts,
			Ready: s.Ingress.IsReady(), Status: s.Summary(),
		})
	}
	for n, err := range g.FileErrors() {
		if r.FileErrors == nil {
			r.FileErrors = map[string]string{}
		}
		r.FileErrors[n] = err.Error()
	}
	return r
}

func (g *Gateway) serveStatus(w http.ResponseWriter, _ *http.Request) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(g.Report()); err != nil {
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
