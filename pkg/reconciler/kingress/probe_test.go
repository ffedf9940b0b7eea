package kingress

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

func gatewaySlice(svc string, port int32, eps ...sliceEndpoint) *discoveryv1.EndpointSlice {
	s := endpointSlice(svc+"-abc", svc, "http", port, eps...)
	s.Namespace = "weir-system"
	return s
}

func TestProbeTargets(t *testing.T) {
	ing := kingress("hello", func(i *v1alpha1.Ingress) {
		// The only header-free path is /api, so the probe must use it.
		paths := i.Spec.Rules[0].HTTP.Paths
		paths[0].Path = "/api"
		tagged := paths[0].DeepCopy()
		tagged.Path = ""
		tagged.Headers = map[string]v1alpha1.HeaderMatch{"Knative-Serving-Tag": {Exact: "x"}}
		i.Spec.Rules[0].HTTP.Paths = append(paths, *tagged)
		i.Spec.Rules = append(i.Spec.Rules, v1alpha1.IngressRule{
			Hosts:      []string{"hello.default.svc.cluster.local"},
			Visibility: v1alpha1.IngressVisibilityClusterLocal,
			HTTP:       &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{Splits: paths[0].Splits}}},
		})
	})
	l := newListers(
		gatewaySlice("weir", 8080, ready("10.1.0.1"), notReady("10.1.0.2")),
		gatewaySlice("weir-internal", 8081, ready("10.1.0.1")),
	)
	targets, err := (&ProbeTargets{EndpointSlices: l.EndpointSlices}).ListProbeTargets(context.Background(), ing)
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != 2 {
		t.Fatalf("targets = %+v, want external and internal", targets)
	}
	ext, local := targets[0], targets[1]
	if !ext.PodIPs.Equal(sets.New("10.1.0.1")) || ext.PodPort != "8080" {
		t.Errorf("external target = %v:%s, want only the ready pod on 8080", sets.List(ext.PodIPs), ext.PodPort)
	}
	if len(ext.URLs) != 1 || ext.URLs[0].String() != "http://hello.example.com/api" {
		t.Errorf("external URLs = %v", ext.URLs)
	}
	var localURLs []string
	for _, u := range local.URLs {
		localURLs = append(localURLs, u.String())
	}
	// One URL per rule: the rule's virtual host holds every expanded name.
	want := []string{"http://hello.default.svc.cluster.local/"}
	if diff := cmp.Diff(want, localURLs); diff != "" || local.PodPort != "8081" {
		t.Errorf("internal target port %s, URLs (-want +got):\n%s", local.PodPort, diff)
	}
}

func TestProbeTargetsWithoutGatewayPods(t *testing.T) {
	l := newListers(gatewaySlice("weir", 8080, notReady("10.1.0.2")))
	_, err := (&ProbeTargets{EndpointSlices: l.EndpointSlices}).ListProbeTargets(context.Background(), kingress("hello"))
	if err == nil || !strings.Contains(err.Error(), "no ready gateway pods behind Service weir-system/weir") {
		t.Errorf("error = %v, want one naming the gateway Service", err)
	}
}
