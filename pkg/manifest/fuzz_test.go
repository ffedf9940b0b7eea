package manifest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/weir-dev/weir/pkg/dataplane"
	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/translate"
)

// FuzzYAMLThroughTranslate feeds YAML bytes through what weir translate
// and weir run do with a file: decode, validation (the namespace defaulted
// first), reconcile and translate, then weir-proxy's config intake
// (dataplane's Check: Apply without binding). Nothing may panic, the
// result must pass Validate (Envoy's acceptance rules included), and
// weir-proxy must take what translate emits, since a refusal there would
// be a NACK of the whole update. Seeds are cmd/weir's testdata inputs and
// the examples; make unit fuzzes it for a bounded time.
func FuzzYAMLThroughTranslate(f *testing.F) {
	inputs, _ := filepath.Glob(filepath.Join("..", "..", "cmd", "weir", "testdata", "*.in.yaml"))
	examples, _ := filepath.Glob(filepath.Join("..", "..", "examples", "*", "*.yaml"))
	for _, in := range append(inputs, examples...) {
		b, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("apiVersion: v1\nkind: Service\nmetadata: {name: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, _ := Decode("fuzz.yaml", data)
		model := ir.NewModel()
		_, _ = (&Reconciler{Model: model, Syncer: &triggers{}}).Apply(context.Background(), docs)
		res, err := translate.New(translate.DefaultOptions()).Translate(model.Fragments())
		if err != nil {
			t.Fatal(err)
		}
		if err := res.Validate(); err != nil {
			t.Fatalf("a real Envoy would refuse this: %v", err)
		}
		if err := dataplane.New(dataplane.Options{}).Check(&dataplane.Resources{Listeners: res.Listeners, Routes: res.Routes,
			Clusters: res.Clusters, Endpoints: res.Endpoints, Secrets: res.Secrets}); err != nil {
			t.Fatalf("weir-proxy refuses what translate emits: %v", err)
		}
	})
}
