// Command weir is Weir's user CLI: `weir translate` shows the exact Envoy
// config Weir produces for a set of Kubernetes YAML files.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/manifest"
	"github.com/weir-dev/weir/pkg/translate"
	"github.com/weir-dev/weir/pkg/xds"
)

const usage = `weir: a Knative networking layer and gateway.

Usage:
  weir run -f FILE|DIR [-f ...] [--http-port 8080] [--https-port 8443]
           [--internal-http-port 8081] [--internal-https-port 8444]
           [--admin-port 9901] [--log-level info]
      Serve the KIngresses in the files with the embedded gateway, and
      hot-reload them when the files change. No cluster needed.

  weir status [--admin-port 9901]
      Show the KIngresses a running 'weir run' serves and their status.

  weir translate -f FILE|DIR [-f ...] [-o json|yaml]
      Reconcile the KIngresses, Services, EndpointSlices and Secrets in the
      files and print the Envoy v3 resources Weir serves for them (private
      keys redacted).

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

	res, err := translateFiles(ctx, files, stderr)
	if err != nil {
		return err
	}
	out, err := xds.Dump(res.ByType(), *output)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

// translateFiles runs the controller's reconcile and translate path over
// the files. Non-fatal problems (a KIngress that is not Ready, a translation
// warning) are written to warnings.
func translateFiles(ctx context.Context, files []string, warnings io.Writer) (*translate.Resources, error) {
	docs, err := manifest.Load(files...)
	if err != nil {
		return nil, err
	}
	model := ir.NewModel()
	statuses, errs := (&manifest.Reconciler{Model: model, Syncer: noTrigger{}}).Apply(ctx, docs)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, s := range statuses {
		if sum := s.Summary(); sum != "Ready" {
			fmt.Fprintf(warnings, "warning: %s (KIngress %s/%s): %s\n", s.Document, s.Ingress.Namespace, s.Ingress.Name, sum)
		}
	}
	res, err := translate.New(translate.DefaultOptions()).Translate(model.Fragments())
	if err != nil {
		return nil, err
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(warnings, "warning:", w)
	}
	if err := res.Validate(); err != nil {
		return nil, fmt.Errorf("the translated config is invalid, please report this as a bug: %w", err)
	}
	return res, nil
}

// noTrigger is the syncer of a one-shot translation: nothing is served.
type noTrigger struct{}

func (noTrigger) Trigger() {}
