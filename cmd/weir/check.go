package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/weir-dev/weir/pkg/manifest"
	"github.com/weir-dev/weir/pkg/reconciler/ingress"
)

// checkCmd is `weir check`: a migration report for Ingresses written for
// ingress-nginx, whatever their class.
func checkCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weir check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files fileList
	fs.Var(&files, "f", "a YAML file or a directory of them, e.g. the output of 'kubectl get ingress -A -o yaml', and of the Secrets that auth-secret names (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(files) == 0 {
		fs.Usage()
		return errors.New("check needs at least one -f FILE|DIR")
	}
	paths, err := manifest.Files(files...)
	if err != nil {
		return err
	}
	docs, loadErr := manifest.Load(paths...)
	var ings []*netv1.Ingress
	secrets := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, d := range docs {
		switch o := d.Object.(type) {
		case *netv1.Ingress:
			if o.Namespace == "" {
				o.Namespace = "default"
			}
			ings = append(ings, o)
		case *corev1.Secret:
			if o.Namespace == "" {
				o.Namespace = "default"
			}
			_ = secrets.Add(o)
		}
	}
	for _, e := range leafErrors(loadErr) {
		if !strings.Contains(e.Error(), "unsupported kind") {
			fmt.Fprintln(stderr, "skipped:", e)
		}
	}
	if len(ings) == 0 {
		return fmt.Errorf("no networking.k8s.io/v1 Ingress in %s", strings.Join(files, ", "))
	}
	refused := writeCheck(stdout, ings, corelisters.NewSecretLister(secrets))
	if refused > 0 {
		return fmt.Errorf("%d %s would not be served; see \"refused\" above", refused, plural(refused, "Ingress", "Ingresses"))
	}
	return nil
}

// writeCheck prints one row per Ingress and annotation, then what else
// Weir would say about each Ingress, and returns how many are refused.
func writeCheck(w io.Writer, ings []*netv1.Ingress, authSecrets corelisters.SecretLister) int {
	empty := func() cache.Indexer { return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}) }
	// Services and TLS Secrets are not judged here: weir translate
	// does, with them in its input. The Secrets of basic auth are, when
	// the input has them: their hashes decide whether Weir can serve it.
	listers := ingress.Listers{
		Services:       corelisters.NewServiceLister(empty()),
		Secrets:        corelisters.NewSecretLister(empty()),
		AuthSecrets:    authSecrets,
		EndpointSlices: func(string, string) ([]*discoveryv1.EndpointSlice, error) { return nil, nil },
	}
	res := ingress.NewBuilder().Build(ings, ingress.Classes{All: true}, listers, ingress.Options{})
	keys := make([]types.NamespacedName, 0, len(res.Ingresses))
	for k := range res.Ingresses {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b types.NamespacedName) int { return strings.Compare(a.String(), b.String()) })

	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INGRESS\tANNOTATION\tSTATUS\tNOTE")
	counts := map[ingress.Support]int{}
	refused := 0
	for _, k := range keys {
		r := res.Ingresses[k]
		if r.Refused {
			refused++
		}
		if len(r.Findings) == 0 {
			fmt.Fprintf(tw, "%s\t-\t%s\t\n", k, ingress.Honoured)
		}
		for _, f := range r.Findings {
			counts[f.Support]++
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k, strings.TrimPrefix(f.Key, ingress.AnnotationPrefix), f.Support, f.Message)
		}
	}
	_ = tw.Flush()
	for _, k := range keys {
		for _, p := range res.Ingresses[k].Problems {
			if p.Reason == "BackendNotFound" || p.Reason == "InvalidCertificate" || p.Reason == "NoCertificate" || p.Reason == "AuthSecretNotFound" || p.Reason == "ClientCANotFound" {
				continue
			}
			fmt.Fprintf(w, "%s: %s\n", k, p)
		}
	}
	fmt.Fprintf(w, "\n%d %s, %d ingress-nginx %s: %d honoured, %d with a documented difference, %d ignored, %d refused.\n",
		len(keys), plural(len(keys), "Ingress", "Ingresses"), sum(counts), plural(sum(counts), "annotation", "annotations"),
		counts[ingress.Honoured], counts[ingress.HonouredWithDifference], counts[ingress.Ignored], counts[ingress.Refused])
	if refused > 0 {
		fmt.Fprintf(w, "%d %s would not be served by Weir until the refused annotations are removed.\n", refused, plural(refused, "Ingress", "Ingresses"))
	}
	fmt.Fprintln(w, "Services and TLS Secrets are not checked here, nor the Secrets of auth-secret missing from the input; 'weir translate -f' with them in its input shows the Envoy config.")
	return refused
}

func sum(m map[ingress.Support]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
