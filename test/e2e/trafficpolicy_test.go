package e2e

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/weir-dev/weir/pkg/reconciler/policy"
)

// TestTrafficPolicySchema: the apiserver takes config/'s TrafficPolicy CRD
// and refuses, by its schema and CEL rules, what Weir cannot serve.
func TestTrafficPolicySchema(t *testing.T) {
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	policies := dyn.Resource(policy.Resource).Namespace("default")
	target := map[string]any{"group": "networking.k8s.io", "kind": "Ingress", "name": "shop"}
	newPolicy := func(name string, target, rateLimit map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "policy.weir.dev/v1alpha1", "kind": "TrafficPolicy",
			"metadata": map[string]any{"name": name, "namespace": "default"},
			"spec":     map[string]any{"targetRefs": []any{target}, "rateLimit": rateLimit},
		}}
	}
	for name, p := range map[string]*unstructured.Unstructured{
		"qps 0":                     newPolicy("bad", target, map[string]any{"qps": int64(0)}),
		"a Deployment target":       newPolicy("bad", map[string]any{"group": "apps", "kind": "Deployment", "name": "x"}, map[string]any{"qps": int64(1)}),
		"throttle without a queue":  newPolicy("bad", target, map[string]any{"qps": int64(1), "controlBehavior": "Throttle"}),
		"a queue of 2s":             newPolicy("bad", target, map[string]any{"qps": int64(1), "controlBehavior": "Throttle", "maxQueueingTime": "2s"}),
		"a queue that is no time":   newPolicy("bad", target, map[string]any{"qps": int64(1), "controlBehavior": "Throttle", "maxQueueingTime": "soon"}),
		"a header without its name": newPolicy("bad", target, map[string]any{"qps": int64(1), "by": map[string]any{"type": "Header"}}),
		"a warm-up per client":      newPolicy("bad", target, map[string]any{"qps": int64(10), "by": map[string]any{"type": "ClientIP"}, "warmUp": map[string]any{"period": "10s"}}),
		"neither a limit nor a bound": {Object: map[string]any{"apiVersion": "policy.weir.dev/v1alpha1", "kind": "TrafficPolicy",
			"metadata": map[string]any{"name": "bad", "namespace": "default"}, "spec": map[string]any{"targetRefs": []any{target}}}},
		"a block response on a bound": {Object: map[string]any{"apiVersion": "policy.weir.dev/v1alpha1", "kind": "TrafficPolicy",
			"metadata": map[string]any{"name": "bad", "namespace": "default"},
			"spec": map[string]any{"targetRefs": []any{map[string]any{"group": "", "kind": "Service", "name": "api"}},
				"concurrency": map[string]any{"maxConcurrency": int64(5)}, "blockResponse": map[string]any{"body": "busy"}}}},
		"a bound on an Ingress": {Object: map[string]any{"apiVersion": "policy.weir.dev/v1alpha1", "kind": "TrafficPolicy",
			"metadata": map[string]any{"name": "bad", "namespace": "default"},
			"spec":     map[string]any{"targetRefs": []any{target}, "concurrency": map[string]any{"maxConcurrency": int64(5)}}}},
	} {
		if _, err := policies.Create(ctx, p, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("%s: %v, want refused as invalid", name, err)
		}
	}
	// A bound alone, on a Service, with no rate limit: the CEL rules let it
	// be.
	bound := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "policy.weir.dev/v1alpha1", "kind": "TrafficPolicy",
		"metadata": map[string]any{"name": "bound", "namespace": "default"},
		"spec": map[string]any{"targetRefs": []any{map[string]any{"group": "", "kind": "Service", "name": "api"}},
			"concurrency": map[string]any{"maxConcurrency": int64(5)}}}}
	if _, err := policies.Create(ctx, bound, metav1.CreateOptions{}); err != nil {
		t.Errorf("a concurrency on a Service: %v", err)
	}
	t.Cleanup(func() { _ = policies.Delete(ctx, "bound", metav1.DeleteOptions{}) })
	good := newPolicy("good", target, map[string]any{"qps": int64(100), "by": map[string]any{"type": "Header", "header": "X-Tenant"},
		"controlBehavior": "Throttle", "maxQueueingTime": "200ms"})
	created, err := policies.Create(ctx, good, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("a valid TrafficPolicy: %v", err)
	}
	t.Cleanup(func() { _ = policies.Delete(ctx, "good", metav1.DeleteOptions{}) })
	// The schema's defaults: Global, Allow.
	if scope, _, _ := unstructured.NestedString(created.Object, "spec", "rateLimit", "scope"); scope != "Global" {
		t.Errorf("scope defaulted to %q, want Global", scope)
	}
	if mode, _, _ := unstructured.NestedString(created.Object, "spec", "rateLimit", "failureMode"); mode != "Allow" {
		t.Errorf("failureMode defaulted to %q, want Allow", mode)
	}
}
