package kingress

import (
	"context"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	netfake "knative.dev/networking/pkg/client/clientset/versioned/fake"
)

// TestLegacyFinalizerPatch: a KIngress that an older Weir gave a finalizer
// loses only that finalizer when it is deleted, and nothing else is patched.
func TestLegacyFinalizerPatch(t *testing.T) {
	if p := legacyFinalizerPatch(kingress("hello", withFinalizer)); p != nil {
		t.Errorf("a live KIngress is patched: %s", p)
	}
	if p := legacyFinalizerPatch(kingress("hello", withDeletion)); p != nil {
		t.Errorf("a deleted KIngress without the legacy finalizer is patched: %s", p)
	}

	ing := kingress("hello", withFinalizer, withDeletion)
	ing.Finalizers = append(ing.Finalizers, "example.com/keep")
	ing.ResourceVersion = "7"
	client := netfake.NewSimpleClientset(ing)
	patch := legacyFinalizerPatch(ing)
	if patch == nil {
		t.Fatal("no patch for a deleted KIngress with the legacy finalizer")
	}
	got, err := client.NetworkingV1alpha1().Ingresses(ing.Namespace).Patch(context.Background(), ing.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Finalizers, []string{"example.com/keep"}) {
		t.Errorf("finalizers after the patch = %v, want only example.com/keep", got.Finalizers)
	}
	if want := `{"metadata":{"finalizers":["example.com/keep"],"resourceVersion":"7"}}`; string(patch) != want {
		t.Errorf("patch = %s, want %s (the resourceVersion guards a finalizer added since)", patch, want)
	}
}
