// Command weir-proxy is Weir's Go data plane: it takes its listeners,
// routes, clusters, endpoints and secrets from an xDS server such as
// weir-controller and serves HTTP/1.1, HTTP/2, gRPC and websockets with
// Envoy's semantics for the fields Weir emits (docs/dataplane.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/weir-dev/weir/pkg/dataplane"
	"github.com/weir-dev/weir/pkg/dataplane/admin"
	"github.com/weir-dev/weir/pkg/dataplane/xdsclient"
	"github.com/weir-dev/weir/pkg/xdstls"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "weir-proxy:", err)
		os.Exit(1)
	}
}

func run() error {
	hostname, _ := os.Hostname()
	xdsAddress := flag.String("xds-address", "", "the xDS server, host:port (required), e.g. weir-controller.knative-serving:18000")
	nodeID := flag.String("node-id", envOr("POD_NAME", hostname), "this proxy's node id in xDS")
	adminAddress := flag.String("admin-address", admin.DefaultAddress, "the admin interface (/ready, /metrics, /config_dump); keep it on loopback")
	listenAddress := flag.String("listen-address", "", "bind every listener to this address instead of the one in its config")
	drainDelay := flag.Duration("drain-delay", 5*time.Second, "on SIGTERM, how long to keep accepting connections while telling clients to reconnect, so load balancers can take this gateway out first")
	drainTimeout := flag.Duration("drain-timeout", 30*time.Second, "after the drain delay, how long in-flight requests may take to finish")
	accessLog := flag.Bool("access-log", true, "write one JSON line per request to stdout")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	xdsTLSDir := flag.String("xds-tls-dir", "", "a directory holding ca.crt, tls.crt and tls.key (the gateway's mounted xDS Secret): connect to the xDS server with mutual TLS, reading them at every connection; empty connects in plaintext")
	xdsServerName := flag.String("xds-server-name", "", "the name the xDS server's certificate must carry (default: the host of -xds-address)")
	maxConns := flag.Int("max-downstream-connections", 50000, "open connections per listener; more are closed at accept, like Envoy's overload manager (-1: no cap)")
	flag.Parse()
	if *xdsAddress == "" {
		flag.Usage()
		return errors.New("-xds-address is required")
	}
	logger, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var alog io.Writer
	if *accessLog {
		alog = os.Stdout
	}
	proxy := dataplane.New(dataplane.Options{Logger: logger.Named("proxy"), Registerer: reg, AccessLog: alog, ListenAddress: *listenAddress,
		MaxDownstreamConnections: *maxConns})

	creds := insecure.NewCredentials()
	if *xdsTLSDir != "" {
		name := *xdsServerName
		if name == "" {
			if name, _, err = net.SplitHostPort(*xdsAddress); err != nil {
				return fmt.Errorf("-xds-address %q: %w", *xdsAddress, err)
			}
		}
		creds = credentials.NewTLS(xdstls.ClientConfig(*xdsTLSDir, name))
	}
	conn, err := grpc.NewClient(*xdsAddress,
		grpc.WithTransportCredentials(creds),
		// A controller that comes back (or a renewed certificate) is
		// reached within seconds, not gRPC's default two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: func() backoff.Config {
			b := backoff.DefaultConfig
			b.MaxDelay = 10 * time.Second
			return b
		}(), MinConnectTimeout: 5 * time.Second}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
		// A full state-of-the-world response for a large cluster can exceed gRPC's 4 MiB default.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return fmt.Errorf("xDS server %q: %w", *xdsAddress, err)
	}
	defer conn.Close()
	client := xdsclient.New(conn, proxy, xdsclient.Options{NodeID: *nodeID, Cluster: "weir-gateway", Logger: logger.Named("xds"), Registerer: reg})

	adm := admin.New(admin.Options{Ready: proxy.Ready, Config: client.Applied, Gatherer: reg, OnDrain: proxy.Drain})
	adminSrv := &http.Server{Addr: *adminAddress, Handler: adm, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := adminSrv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Fatalw("The admin interface cannot listen; pick another -admin-address", "address", *adminAddress, zap.Error(err))
		}
	}()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	streamCtx, cancelStream := context.WithCancel(context.Background())
	defer cancelStream()
	go client.Run(streamCtx)
	logger.Infow("weir-proxy started", "xds", *xdsAddress, "node", *nodeID, "admin", *adminAddress)

	<-ctx.Done()
	stop() // a second signal ends the process at once
	logger.Infow("Draining: /ready fails and every response asks its client to reconnect", "delay", *drainDelay, "timeout", *drainTimeout)
	adm.Drain()
	proxy.Drain()
	time.Sleep(*drainDelay)
	logger.Infow("Closing listeners; waiting for in-flight requests")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), *drainTimeout)
	defer cancel()
	err = proxy.Shutdown(shutdownCtx)
	cancelStream()
	_ = adminSrv.Close()
	return err
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func newLogger(level string) (*zap.SugaredLogger, error) {
	var l zapcore.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", level)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(l)
	cfg.OutputPaths = []string{"stderr"}
	z, err := cfg.Build()
	if err != nil {
		return nil, err
	}
	return z.Sugar(), nil
}
