package gateway

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func parametersObject(ns, name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.weir.dev/v1alpha1", "kind": "GatewayParameters",
		"metadata": map[string]any{"namespace": ns, "name": name},
		"spec":     spec,
	}}
}

// TestParameters: a GatewayClass's GatewayParameters are every Gateway's
// defaults, and a Gateway's own override them field by field; a class
// whose parameters cannot be read is not accepted, and a Gateway whose
// own cannot be (or that asks for an image, or a reserved label) is not
// accepted either (InvalidParameters, naming the field). Such Gateways
// keep being served by the data plane they have, which is left alone.
func TestParameters(t *testing.T) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, o := range []*unstructured.Unstructured{
		parametersObject("weir-system", "defaults", map[string]any{"replicas": int64(2), "serviceType": "NodePort", "image": "weir-proxy:1"}),
		parametersObject("apps", "big", map[string]any{"replicas": int64(5)}),
		parametersObject("apps", "typo", map[string]any{"replica": int64(5)}),
		parametersObject("apps", "odd-type", map[string]any{"serviceType": "ExternalName"}),
		parametersObject("apps", "own-image", map[string]any{"image": "attacker/proxy"}),
	} {
		if err := idx.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	ref := func(group, kind, ns, name string) *gwv1.ParametersReference {
		return &gwv1.ParametersReference{Group: gwv1.Group(group), Kind: gwv1.Kind(kind), Name: name, Namespace: ptr.To(gwv1.Namespace(ns))}
	}
	class := func(name string, r *gwv1.ParametersReference) *gwv1.GatewayClass {
		gc := &gwv1.GatewayClass{Spec: gwv1.GatewayClassSpec{ControllerName: ControllerName, ParametersRef: r}}
		gc.Name = name
		return gc
	}
	gateway := func(name, class, params string) *gwv1.Gateway {
		gw := &gwv1.Gateway{Spec: gwv1.GatewaySpec{GatewayClassName: gwv1.ObjectName(class),
			Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}}}}
		gw.Namespace, gw.Name = "apps", name
		if params != "" {
			gw.Spec.Infrastructure = &gwv1.GatewayInfrastructure{ParametersRef: &gwv1.LocalParametersReference{Group: ParametersGroup, Kind: ParametersKind, Name: params}}
		}
		return gw
	}
	labelled := gateway("labelled", "weir", "")
	labelled.Spec.Infrastructure = &gwv1.GatewayInfrastructure{Labels: map[gwv1.LabelKey]gwv1.LabelValue{"app": "weir-gateway"}}
	res := Build(Objects{
		GatewayClasses: []*gwv1.GatewayClass{
			class("weir", ref(ParametersGroup, ParametersKind, "weir-system", "defaults")),
			class("missing", ref(ParametersGroup, ParametersKind, "weir-system", "nope")),
			class("wrong-kind", ref("", "ConfigMap", "weir-system", "defaults")),
		},
		Gateways: []*gwv1.Gateway{
			gateway("plain", "weir", ""), gateway("big", "weir", "big"), gateway("typo", "weir", "typo"),
			gateway("odd-type", "weir", "odd-type"), gateway("gone", "weir", "gone"),
			gateway("own-image", "weir", "own-image"), gateway("of-missing", "missing", ""), labelled,
		},
	}, Listers{Parameters: IndexerParameters{Indexer: idx}}, Options{})

	for _, tc := range []struct{ class, want string }{
		{"weir", "True/Accepted"}, {"missing", "False/InvalidParameters"}, {"wrong-kind", "False/InvalidParameters"},
	} {
		if got := conditionOf(res.GatewayClasses[tc.class].Conditions, "Accepted"); got != tc.want {
			t.Errorf("GatewayClass %s Accepted = %s, want %s", tc.class, got, tc.want)
		}
	}
	for _, tc := range []struct{ gateway, want string }{
		{"plain", "True/Accepted"}, {"big", "True/Accepted"}, {"typo", "False/InvalidParameters"},
		{"odd-type", "False/InvalidParameters"}, {"gone", "False/InvalidParameters"},
		{"own-image", "False/InvalidParameters"}, {"of-missing", "False/InvalidParameters"}, {"labelled", "False/InvalidParameters"},
	} {
		if got := conditionOf(res.Gateways[types.NamespacedName{Namespace: "apps", Name: tc.gateway}].Conditions, "Accepted"); got != tc.want {
			t.Errorf("Gateway %s Accepted = %s, want %s", tc.gateway, got, tc.want)
		}
	}
	show := func(p Parameters) string {
		return fmt.Sprintf("replicas=%d image=%s type=%s", ptr.Deref(p.Replicas, -1), p.Image, p.ServiceType)
	}
	for name, want := range map[string]string{
		"plain": show(Parameters{Replicas: ptr.To[int32](2), Image: "weir-proxy:1", ServiceType: corev1.ServiceTypeNodePort}),
		"big":   show(Parameters{Replicas: ptr.To[int32](5), Image: "weir-proxy:1", ServiceType: corev1.ServiceTypeNodePort}),
	} {
		got, ok := res.Parameters[types.NamespacedName{Namespace: "apps", Name: name}]
		if !ok || show(got) != want {
			t.Errorf("Gateway %s parameters %s, want %s", name, show(got), want)
		}
	}
	for _, name := range []string{"typo", "odd-type", "gone", "own-image", "of-missing", "labelled"} {
		nn := types.NamespacedName{Namespace: "apps", Name: name}
		if _, ok := res.Parameters[nn]; ok || !res.KeepDataPlanes[nn] {
			t.Errorf("Gateway %s: parameters to provision %v, data plane kept %v; want it left as it is", name, ok, res.KeepDataPlanes[nn])
		}
	}
	if len(res.Fragments) != 8 {
		t.Errorf("%d fragments, want all 8 Gateways served", len(res.Fragments))
	}
}

func conditionOf(conds []metav1.Condition, typ string) string {
	for _, c := range conds {
		if c.Type == typ {
			return string(c.Status) + "/" + c.Reason
		}
	}
	return "missing"
}
