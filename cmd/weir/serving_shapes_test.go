package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"knative.dev/networking/pkg/apis/networking"
	netv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"
	netcfg "knative.dev/networking/pkg/config"
	cfgmap "knative.dev/serving/pkg/apis/config"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"knative.dev/serving/pkg/gc"
	routecfg "knative.dev/serving/pkg/reconciler/route/config"
	"knative.dev/serving/pkg/reconciler/route/resources"
	"knative.dev/serving/pkg/reconciler/route/traffic"
	"sigs.k8s.io/yaml"

	"github.com/weir-dev/weir/pkg/reconciler/kingress"
)

// A servingShape is a Route as Knative Serving would see it. Its KIngress is
// made by Serving's own Route→KIngress builder, so the goldens match what a
// cluster really produces.
type servingShape struct {
	name        string
	annotations map[string]string
	targets     map[string]traffic.RevisionTargets
	visibility  map[string]netv1alpha1.IngressVisibility
	tls         []netv1alpha1.IngressTLS
	tagHeaders  bool
}

func target(rev string, percent int64, tag string, proto networking.ProtocolType) traffic.RevisionTarget {
	return traffic.RevisionTarget{
		TrafficTarget: servingv1.TrafficTarget{RevisionName: rev, Percent: ptr.To(percent), Tag: tag},
		Protocol:      proto,
	}
}

var servingShapes = []servingShape{{
	// kn service update hello --traffic hello-00001=60,hello-00002=30,hello-00003=10 --tag hello-00003=canary
	name: "serving-split-tags",
	targets: map[string]traffic.RevisionTargets{
		traffic.DefaultTarget: {
			target("hello-00001", 60, "", networking.ProtocolHTTP1),
			target("hello-00002", 30, "", networking.ProtocolHTTP1),
			target("hello-00003", 10, "canary", networking.ProtocolHTTP1),
		},
		"canary": {target("hello-00003", 100, "canary", networking.ProtocolHTTP1)},
	},
	tagHeaders: true,
}, {
	// A public service whose "internal" tag is cluster-local.
	name: "serving-cluster-local",
	targets: map[string]traffic.RevisionTargets{
		traffic.DefaultTarget: {target("hello-00001", 100, "", networking.ProtocolHTTP1)},
		"internal":            {target("hello-00002", 100, "internal", networking.ProtocolHTTP1)},
	},
	visibility: map[string]netv1alpha1.IngressVisibility{"internal": netv1alpha1.IngressVisibilityClusterLocal},
}, {
	name:        "serving-tls-redirect",
	annotations: map[string]string{networking.HTTPProtocolAnnotationKey: "redirected"},
	targets: map[string]traffic.RevisionTargets{
		traffic.DefaultTarget: {target("hello-00001", 100, "", networking.ProtocolHTTP1)},
	},
	tls: []netv1alpha1.IngressTLS{{Hosts: []string{"hello.default.example.com"}, SecretName: "route-hello-tls", SecretNamespace: "default"}},
}, {
	// A gRPC revision: its Service port is named http2, so upstream is h2c.
	name: "serving-h2c",
	targets: map[string]traffic.RevisionTargets{
		traffic.DefaultTarget: {target("grpc-00001", 100, "", networking.ProtocolH2C)},
	},
}}

// render returns the shape's input documents: Serving's KIngress plus the
// revision Services and EndpointSlices (and the TLS Secret) it refers to.
func (s servingShape) render(t *testing.T) []byte {
	t.Helper()
	network, err := netcfg.NewConfigFromMap(nil)
	if err != nil {
		t.Fatal(err)
	}
	features, err := cfgmap.NewFeaturesConfigFromMap(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if s.tagHeaders {
		features.TagHeaderBasedRouting = cfgmap.Enabled
	}
	ctx := routecfg.ToContext(context.Background(), &routecfg.Config{
		Domain:   &routecfg.Domain{Domains: map[string]routecfg.DomainConfig{"example.com": {}}},
		GC:       &gc.Config{},
		Network:  network,
		Features: features,
	})
	route := &servingv1.Route{ObjectMeta: metav1.ObjectMeta{
		Name: "hello", Namespace: "default", UID: "00000000-0000-0000-0000-000000000001", Annotations: s.annotations,
	}}
	tc := &traffic.Config{Targets: s.targets, Visibility: s.visibility}
	ing, err := resources.MakeIngress(ctx, route, tc, s.tls, kingress.ClassName)
	if err != nil {
		t.Fatalf("Serving's MakeIngress: %v", err)
	}
	ing.TypeMeta = metav1.TypeMeta{APIVersion: "networking.internal.knative.dev/v1alpha1", Kind: "Ingress"}
	ing.CreationTimestamp = metav1.Unix(1_700_000_000, 0)

	objs := []runtime.Object{ing}
	revs := map[string]networking.ProtocolType{}
	for _, targets := range s.targets {
		for _, tt := range targets {
			revs[tt.RevisionName] = tt.Protocol
		}
	}
	for i, rev := range slices.Sorted(maps.Keys(revs)) {
		portName := networking.ServicePortName(revs[rev])
		objs = append(objs,
			&corev1.Service{
				TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
				ObjectMeta: metav1.ObjectMeta{Name: rev, Namespace: "default"},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
					Name: portName, Port: int32(networking.ServicePort(revs[rev])), TargetPort: intstr.FromInt(8012),
				}}},
			},
			&discoveryv1.EndpointSlice{
				TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
				ObjectMeta: metav1.ObjectMeta{Name: rev + "-x1", Namespace: "default",
					Labels: map[string]string{discoveryv1.LabelServiceName: rev}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(portName), Port: ptr.To[int32](8012), Protocol: ptr.To(corev1.ProtocolTCP)}},
				Endpoints: []discoveryv1.Endpoint{{
					Addresses:  []string{fmt.Sprintf("10.0.%d.1", i+1)},
					Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				}},
			})
	}
	for _, tls := range s.tls {
		objs = append(objs, &corev1.Secret{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: tls.SecretName, Namespace: tls.SecretNamespace},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: readTestdata(t, "tls.crt"), corev1.TLSPrivateKeyKey: readTestdata(t, "tls.key")},
		})
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# Generated by TestServingShapes (go test ./cmd/weir -update) with\n# knative.dev/serving's Route→KIngress builder. Do not edit.\n")
	for _, o := range objs {
		out, err := yaml.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		buf.WriteString("---\n")
		buf.Write(out)
	}
	return buf.Bytes()
}

// TestServingShapes keeps testdata/serving-*.in.yaml identical to what
// Serving's builder makes today; the goldens test translates them.
func TestServingShapes(t *testing.T) {
	for _, s := range servingShapes {
		t.Run(s.name, func(t *testing.T) {
			got := s.render(t)
			path := filepath.Join("testdata", s.name+".in.yaml")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./cmd/weir -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s is stale: Serving's builder now makes something else; rerun with -update and review the diff", path)
			}
		})
	}
}

// readTestdata reads a fixture. tls.key is a throwaway test key, made once
// with openssl for these goldens.
func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
