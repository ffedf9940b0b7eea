// Command weir is Weir's user CLI: `weir translate` shows the exact Envoy
// config Weir produces for a set of Kubernetes YAML files.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/manifest"
	"github.com/weir-dev/weir/pkg/reconciler/policy"
	"github.com/weir-dev/weir/pkg/translate"
	"github.com/weir-dev/weir/pkg/xds"
)

const usage = `weir: a Knative networking layer and gateway.

Usage:
  weir run -f FILE|DIR [-f ...] [--http-port 8080] [--https-port 8443]
           [--internal-http-port 8081] [--internal-https-port 8444]
           [--admin-port 9901] [--log-level info]
      Serve the KIngresses, Gateway API objects and Ingresses in the files
      with the embedded gateway, and hot-reload them when the files change.
      No cluster needed. --ingress-class nginx also serves that class.

  weir status [--admin-port 9901]
      Show the KIngresses a running 'weir run' serves and their status.

  weir translate -f FILE|DIR [-f ...] [-o json|yaml] [--strict] [--show-secrets]
                 [--ingress-class NAME]
      Reconcile the KIngresses, Services, EndpointSlices and Secrets in the
      files and print the Envoy v3 resources Weir serves for them (private
      keys redacted unless --show-secrets). Says on stderr what it read, and
      each thing it skipped or left out; --strict then exits non-zero.

  weir check -f FILE|DIR [-f ...]
      Judge networking.k8s.io Ingresses written for ingress-nginx (for
      example 'kubectl get ingress -A -o yaml'), whatever their class: per
      Ingress and annotation, whether Weir honours it, honours it with a
      documented difference, ignores it with a warning, or refuses the
      Ingress (snippets, and security annotations it cannot enforce).
      Exits non-zero when an Ingress would be refused.

Run 'weir COMMAND -h' for a command's flags.
`

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "weir:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "translate":
		return translateCmd(ctx, args[1:], stdout, stderr)
	case "run":
		return runCmd(ctx, args[1:], stdout, stderr)
	case "status":
		return statusCmd(ctx, args[1:], stdout, stderr)
	case "check":
		return checkCmd(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

func translateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weir translate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files fileList
	fs.Var(&files, "f", "a YAML file or a directory of them (repeatable)")
	output := fs.String("o", "json", "output format: json or yaml")
	strict := fs.Bool("strict", false, "exit non-zero if anything was skipped or left out (for CI)")
	showSecrets := fs.Bool("show-secrets", false, "print the private keys of TLS secrets instead of [redacted]")
	var classes fileList
	fs.Var(&classes, "ingress-class", `a networking.k8s.io Ingress class to serve besides "weir", e.g. nginx (repeatable)`)
	var mirrors fileList
	fs.Var(&mirrors, "mirror-target-host", "a host an Ingress's mirror-target may name (repeatable); none by default")
	var authNamespaces fileList
	fs.Var(&authNamespaces, "auth-service-namespace", "a namespace whose Services any Ingress's auth-url may name, besides the Ingress's own (repeatable; * for all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(files) == 0 {
		fs.Usage()
		return errors.New("translate needs at least one -f FILE|DIR")
	}
	if *output != "json" && *output != "yaml" {
		return fmt.Errorf("-o %q: want json or yaml", *output)
	}

	// Output must not change from run to run: the tokens of internal
	// redirects come from a fixed key here (a gateway makes its own).
	res, problems, err := translateFiles(ctx, files, manifest.Reconciler{IngressClasses: classes, MirrorTargetHosts: mirrors, AuthServiceNamespaces: authNamespaces, InternalKey: []byte("weir translate")}, stderr)
	if err != nil {
		return err
	}
	dump := xds.Dump
	if *showSecrets {
		dump = xds.DumpWithSecrets
	}
	out, err := dump(res.ByType(), *output)
	if err != nil {
		return err
	}
	if _, err := stdout.Write(out); err != nil {
		return err
	}
	if *strict && problems > 0 {
		return fmt.Errorf("--strict: %d %s skipped or left out (listed above)", problems, plural(problems, "thing was", "things were"))
	}
	return nil
}

// translateFiles runs the controller's reconcile and translate path over
// the files. It writes to report a summary of what it read, then one line
// per thing it skipped or left out, with its file, document and object:
// documents that do not decode, KIngresses of another class or invalid,
// duplicates, KIngresses that are not Ready, and what translate left out.
// It returns how many such lines it wrote.
func translateFiles(ctx context.Context, files []string, settings manifest.Reconciler, report io.Writer) (*translate.Resources, int, error) {
	paths, err := manifest.Files(files...)
	if err != nil {
		return nil, 0, err
	}
	docs, loadErr := manifest.Load(paths...)
	res, lines, err := translateDocs(ctx, docs, loadErr, settings)
	if err != nil {
		return nil, 0, err
	}
	fmt.Fprintf(report, "Read %d %s, %d %s: %s.\n", len(paths), plural(len(paths), "file", "files"),
		len(docs), plural(len(docs), "document", "documents"), kindCounts(docs))
	for _, l := range lines {
		fmt.Fprintln(report, l)
	}
	return res, len(lines), nil
}

// translateDocs reconciles and translates decoded documents; loadErr holds
// the documents that did not decode. It returns one line per thing
// skipped or left out. An error means a bug, not bad input.
func translateDocs(ctx context.Context, docs []manifest.Document, loadErr error, settings manifest.Reconciler) (*translate.Resources, []string, error) {
	var lines []string
	for _, e := range leafErrors(loadErr) {
		// A file that cannot be read is not skipped input: stop.
		var pathErr *fs.PathError
		if errors.As(e, &pathErr) {
			return nil, nil, e
		}
		lines = append(lines, "skipped: "+e.Error())
	}
	model := ir.NewModel()
	policies := &manifest.PolicySync{Attacher: policy.NewAttacher()}
	rec := &manifest.Reconciler{Model: model, Syncer: noTrigger{}, IngressClasses: settings.IngressClasses, MirrorTargetHosts: settings.MirrorTargetHosts, AuthServiceNamespaces: settings.AuthServiceNamespaces, InternalKey: settings.InternalKey,
		Policies: policies, Warn: func(w string) { lines = append(lines, "skipped: "+w) }}
	statuses, errs := rec.Apply(ctx, docs)
	for _, e := range errs {
		lines = append(lines, "skipped: "+e.Error())
	}
	for _, s := range statuses {
		if sum := s.Summary(); sum != "Ready" {
			lines = append(lines, fmt.Sprintf("not ready: %s (KIngress %s/%s): %s", s.Document, s.Ingress.Namespace, s.Ingress.Name, sum))
		}
	}
	if rec.Gateways != nil {
		for _, l := range rec.Gateways.NotReady() {
			lines = append(lines, "not ready: "+l)
		}
	}
	lines = append(lines, rec.Ingresses.Lines()...)
	opts := translate.DefaultOptions()
	if last := policies.Last(); last != nil {
		for _, l := range last.Lines() {
			if !strings.Contains(l, "Accepted=True") {
				lines = append(lines, "not served: "+l)
			}
		}
		if len(last.Limits) > 0 {
			// Where weir run serves its rate limit service; a cluster's
			// gateways reach weir-controller's.
			opts.RateLimitService = translateRateLimitService
		}
	}
	res, err := translate.New(opts).Translate(policies.Attacher.Decorate(model.Fragments()))
	if err != nil {
		return nil, nil, err
	}
	for _, w := range res.Warnings {
		lines = append(lines, "left out: "+w)
	}
	if err := res.Validate(); err != nil {
		return nil, nil, fmt.Errorf("the translated config is invalid, please report this as a bug: %w", err)
	}
	return res, lines, nil
}

// translateRateLimitService stands for the rate limit service's address
// in `weir translate`'s output: weir run picks a loopback port at start.
const translateRateLimitService = "127.0.0.1:18081"

// leafErrors flattens errors.Join trees, so each document's error is a line.
func leafErrors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leafErrors(e)...)
		}
		return out
	}
	return []error{err}
}

// kindCounts says how many documents of each kind were read.
func kindCounts(docs []manifest.Document) string {
	counts := map[string]int{}
	for _, d := range docs {
		counts[manifest.KindOf(d.Object)]++
	}
	return formatKinds(counts)
}

// formatKinds is "2 KIngress, 3 Service", by kind name.
func formatKinds(counts map[string]int) string {
	if len(counts) == 0 {
		return "nothing to serve"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
	}
	return strings.Join(parts, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// noTrigger is the syncer of a one-shot translation: nothing is served.
type noTrigger struct{}

func (noTrigger) Trigger() {}
