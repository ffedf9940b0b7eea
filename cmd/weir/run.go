package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/weir-dev/weir/pkg/standalone"
)

func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weir run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files fileList
	fs.Var(&files, "f", "a YAML file or a directory of them (repeatable); watched for changes")
	httpPort := fs.Int("http-port", 8080, "external plain-HTTP listener")
	httpsPort := fs.Int("https-port", 8443, "external TLS listener")
	internalHTTPPort := fs.Int("internal-http-port", 8081, "cluster-local plain-HTTP listener (serves every rule)")
	internalHTTPSPort := fs.Int("internal-https-port", 8444, "cluster-local TLS listener")
	adminPort := fs.Int("admin-port", 9901, "admin interface on 127.0.0.1 (/ready, /metrics, /config_dump, /status)")
	listen := fs.String("listen-address", "::", `address the gateway listeners bind to: "::" takes IPv4 and IPv6 (dual-stack), "0.0.0.0" IPv4 only, "127.0.0.1" this machine only`)
	upstreamCA := fs.String("upstream-ca", "", "CA bundle that HTTPS backends (ExternalName Services on port 443 or named https) are verified against (default: the system's)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	accessLog := fs.Bool("access-log", true, "write one JSON line per request to stdout")
	var classes fileList
	fs.Var(&classes, "ingress-class", `a networking.k8s.io Ingress class to serve besides "weir", e.g. nginx (repeatable)`)
	var mirrors fileList
	fs.Var(&mirrors, "mirror-target-host", "a host an Ingress's mirror-target may name (repeatable); none by default, since a target can be any address this machine reaches")
	var authNamespaces fileList
	fs.Var(&authNamespaces, "auth-service-namespace", "a namespace whose Services any Ingress's auth-url may name, besides the Ingress's own (repeatable; * for all)")
	trustedHops := fs.Uint("xff-num-trusted-hops", 0, "how many proxies in front of this gateway append to X-Forwarded-For and are trusted: the client address is that many entries from its right (0: the connection's peer)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *trustedHops > 10 {
		return fmt.Errorf("--xff-num-trusted-hops %d: at most 10; never more than the proxies you run, or clients choose their own address", *trustedHops)
	}
	if len(files) == 0 {
		fs.Usage()
		return errors.New("run needs at least one -f FILE|DIR")
	}
	logger, err := newLogger(*logLevel, stderr)
	if err != nil {
		return err
	}
	var alog io.Writer
	if *accessLog {
		alog = stdout
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	fmt.Fprintf(stderr, "Starting Weir on %s...\n", strings.Join(files, ", "))
	g, err := standalone.Start(ctx, standalone.Options{
		Paths:    files,
		HTTPPort: *httpPort, HTTPSPort: *httpsPort, InternalHTTPPort: *internalHTTPPort, InternalHTTPSPort: *internalHTTPSPort,
		ListenAddress:         *listen,
		AdminAddress:          net.JoinHostPort("127.0.0.1", strconv.Itoa(*adminPort)),
		Logger:                logger,
		AccessLog:             alog,
		UpstreamTrustedCA:     *upstreamCA,
		IngressClasses:        classes,
		MirrorTargetHosts:     mirrors,
		AuthServiceNamespaces: authNamespaces,
		XffNumTrustedHops:     uint32(*trustedHops), //nolint:gosec // at most 10
	})
	if err != nil {
		return err
	}
	printBanner(stderr, g)
	<-ctx.Done()
	fmt.Fprintln(stderr, "Draining (up to 30s; press Ctrl-C again to stop now)...")
	stop()
	sctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	sctx, cancelTimeout := context.WithTimeout(sctx, 30*time.Second)
	defer cancelTimeout()
	return g.Shutdown(sctx)
}

// bannerRows is how many KIngresses the start banner lists.
const bannerRows = 20

func printBanner(w io.Writer, g *standalone.Gateway) {
	h, hs, ih, ihs := g.Ports()
	fmt.Fprintf(w, "Weir is serving:\n  external  http://localhost:%d  https://localhost:%d\n  internal  http://localhost:%d  https://localhost:%d\n  admin     http://%s (/ready /metrics /config_dump /status)\n",
		h, hs, ih, ihs, g.AdminAddr())
	report := g.Report()
	printRead(w, report, bannerRows)
	if len(report.Ingresses) > 0 {
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KINGRESS\tHOSTS\tSTATUS")
		for _, s := range report.Ingresses[:min(len(report.Ingresses), bannerRows)] {
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\n", s.Namespace, s.Name, strings.Join(s.Hosts, ","), s.Status)
		}
		_ = tw.Flush()
	}
	if more := len(report.Ingresses) - bannerRows; more > 0 {
		fmt.Fprintf(w, "... and %d more; 'weir status' lists them all\n", more)
	}
	for _, f := range slices.Sorted(maps.Keys(report.FileErrors)) {
		fmt.Fprintf(w, "error in %s (%s): %s\n", f, fileErrorState(report, f), report.FileErrors[f])
	}
	fmt.Fprintf(w, "Try: curl -H 'Host: <host>' http://localhost:%d/\n", h)
}

// printRead says what weir run loaded, and up to limit lines of what it
// skipped (0: all).
func printRead(w io.Writer, report standalone.StatusReport, limit int) {
	docs := 0
	for _, n := range report.Documents {
		docs += n
	}
	fmt.Fprintf(w, "Read %d %s, %d %s: %s.\n", report.Files, plural(report.Files, "file", "files"),
		docs, plural(docs, "document", "documents"), formatKinds(report.Documents))
	for i, s := range report.Skipped {
		if limit > 0 && i == limit {
			fmt.Fprintf(w, "... and %d more skipped; 'weir status' lists them all\n", len(report.Skipped)-limit)
			break
		}
		fmt.Fprintln(w, "skipped:", s)
	}
	for _, s := range report.GatewayAPI {
		fmt.Fprintln(w, "not ready:", s)
	}
	for _, s := range report.NetworkingIngress {
		fmt.Fprintln(w, s)
	}
}

// fileErrorState says what is served of a file with an error.
func fileErrorState(report standalone.StatusReport, file string) string {
	if report.ServingLastGood[file] {
		return "its last good version is served"
	}
	return "nothing of it is served until it is fixed"
}

func statusCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weir status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	adminPort := fs.Int("admin-port", 9901, "the admin port of the running 'weir run'")
	if err := fs.Parse(args); err != nil {
		return err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/status", *adminPort)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("no 'weir run' answers on %s; is it running with --admin-port %d? (%w)", url, *adminPort, err)
	}
	defer resp.Body.Close()
	var report standalone.StatusReport
	if err := json.NewDecoder(resp.Body).Decode(&report); err != nil {
		return fmt.Errorf("reading %s: %w", url, err)
	}
	printRead(stdout, report, 0)
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KINGRESS\tREADY\tHOSTS\tSTATUS\tSOURCE")
	for _, s := range report.Ingresses {
		fmt.Fprintf(tw, "%s/%s\t%t\t%s\t%s\t%s\n", s.Namespace, s.Name, s.Ready, strings.Join(s.Hosts, ","), s.Status, s.File)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, f := range slices.Sorted(maps.Keys(report.FileErrors)) {
		fmt.Fprintf(stdout, "error in %s (%s): %s\n", f, fileErrorState(report, f), report.FileErrors[f])
	}
	return nil
}

func newLogger(level string, w io.Writer) (*zap.SugaredLogger, error) {
	var l zapcore.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	enc := zap.NewDevelopmentEncoderConfig()
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(w), l)
	return zap.New(core).Sugar(), nil
}
