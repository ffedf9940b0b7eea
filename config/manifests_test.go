// Package config holds Weir's release manifests; this test keeps them
// consistent with the code that relies on them.
package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/weir-dev/weir/pkg/re2size"

	weirconfig "github.com/weir-dev/weir/pkg/config"
)

func loadManifests(t *testing.T) []runtime.Object {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	decoder := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var objs []runtime.Object
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range strings.Split(string(data), "\n---\n") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			obj, _, err := decoder.Decode([]byte(doc), nil, nil)
			if err != nil {
				t.Fatalf("%s document %d: %v", f, i+1, err)
			}
			objs = append(objs, obj)
		}
	}
	return objs
}

func find[T runtime.Object](objs []runtime.Object, ns, name string) T {
	for _, o := range objs {
		if typed, ok := o.(T); ok {
			if m, ok := any(typed).(interface {
				GetNamespace() string
				GetName() string
			}); ok && m.GetNamespace() == ns && m.GetName() == name {
				return typed
			}
		}
	}
	var zero T
	return zero
}

func TestGatewayServicesMatchControllerDefaults(t *testing.T) {
	objs := loadManifests(t)
	def := weirconfig.Default()
	for _, tc := range []struct {
		svc        string
		ns         string
		targetHTTP int32
	}{
		{def.ExternalService.Name, def.ExternalService.Namespace, 8080},
		{def.InternalService.Name, def.InternalService.Namespace, 8081},
	} {
		svc := find[*corev1.Service](objs, tc.ns, tc.svc)
		if svc == nil {
			t.Fatalf("Service %s/%s (config-weir's default) is not in config/", tc.ns, tc.svc)
		}
		var found bool
		for _, p := range svc.Spec.Ports {
			// The prober finds gateway pods through the port named "http".
			if p.Name == "http" && p.Port == 80 && p.TargetPort.IntVal == tc.targetHTTP {
				found = true
			}
		}
		if !found {
			t.Errorf("Service %s/%s has no port http 80 -> %d", tc.ns, tc.svc, tc.targetHTTP)
		}
	}
}

// TestXDSPortIsFenced: the NetworkPolicy lets only gateway pods of
// weir-system reach the controller's xDS port, and keeps metrics and
// health open; the public Service keeps the client's address.
func TestXDSPortIsFenced(t *testing.T) {
	objs := loadManifests(t)
	np := find[*networkingv1.NetworkPolicy](objs, "knative-serving", "weir-controller")
	if np == nil {
		t.Fatal("no NetworkPolicy knative-serving/weir-controller")
	}
	dep := find[*appsv1.Deployment](objs, "knative-serving", "weir-controller")
	if dep == nil || !labels.SelectorFromSet(np.Spec.PodSelector.MatchLabels).Matches(labels.Set(dep.Spec.Template.Labels)) {
		t.Fatal("the NetworkPolicy does not select the controller's pods")
	}
	shared := find[*appsv1.Deployment](objs, "weir-system", "weir-gateway")
	provisioned := labels.Set{"app.kubernetes.io/managed-by": "weir-controller"}
	weirSystem := labels.Set{"kubernetes.io/metadata.name": "weir-system"}
	otherNS := labels.Set{"kubernetes.io/metadata.name": "default"}
	admits := func(port int32, ns, pod labels.Set) bool {
		for _, rule := range np.Spec.Ingress {
			portOK := len(rule.Ports) == 0
			for _, p := range rule.Ports {
				portOK = portOK || p.Port.IntVal == port
			}
			if !portOK {
				continue
			}
			if len(rule.From) == 0 {
				return true
			}
			for _, f := range rule.From {
				if labels.SelectorFromSet(f.NamespaceSelector.MatchLabels).Matches(ns) && labels.SelectorFromSet(f.PodSelector.MatchLabels).Matches(pod) {
					return true
				}
			}
		}
		return false
	}
	for _, tc := range []struct {
		what    string
		port    int32
		ns, pod labels.Set
		want    bool
	}{
		{"a shared gateway pod to xDS", 18000, weirSystem, labels.Set(shared.Spec.Template.Labels), true},
		{"a Gateway's data plane to xDS", 18000, weirSystem, provisioned, true},
		{"another pod of weir-system to xDS", 18000, weirSystem, labels.Set{"app": "other"}, false},
		{"a look-alike in another namespace to xDS", 18000, otherNS, labels.Set(shared.Spec.Template.Labels), false},
		{"anyone to metrics", 9091, otherNS, labels.Set{}, true},
		{"anyone to health", 8080, otherNS, labels.Set{}, true},
	} {
		if got := admits(tc.port, tc.ns, tc.pod); got != tc.want {
			t.Errorf("%s: admitted %v, want %v", tc.what, got, tc.want)
		}
	}
	if svc := find[*corev1.Service](objs, "weir-system", "weir"); svc == nil || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Error("the public gateway Service does not keep the client's address (externalTrafficPolicy: Local)")
	}
}

func TestControllerImageIsThisRepo(t *testing.T) {
	d := find[*appsv1.Deployment](loadManifests(t), "knative-serving", "weir-controller")
	if d == nil {
		t.Fatal("no weir-controller Deployment")
	}
	img := d.Spec.Template.Spec.Containers[0].Image
	const prefix = "ko://github.com/weir-dev/weir/"
	if !strings.HasPrefix(img, prefix) {
		t.Fatalf("image %q is not built from this repo", img)
	}
	if _, err := os.Stat(filepath.Join("..", strings.TrimPrefix(img, prefix))); err != nil {
		t.Errorf("image %q: %v", img, err)
	}
}

func TestConfigWeirExampleParses(t *testing.T) {
	cm := find[*corev1.ConfigMap](loadManifests(t), "knative-serving", weirconfig.ConfigMapName)
	if cm == nil {
		t.Fatal("no config-weir")
	}
	data := map[string]string{}
	if err := yaml.Unmarshal([]byte(cm.Data["_example"]), &data); err != nil {
		t.Fatalf("_example is not key: value YAML: %v", err)
	}
	if len(data) < 4 {
		t.Fatalf("_example documents %d keys, want all 4", len(data))
	}
	if _, err := weirconfig.FromMap(data); err != nil {
		t.Errorf("_example does not parse: %v", err)
	}
}

func TestEnvoyBootstrapIsValid(t *testing.T) {
	cm := find[*corev1.ConfigMap](loadManifests(t), "weir-system", "weir-bootstrap")
	if cm == nil {
		t.Fatal("no weir-bootstrap ConfigMap")
	}
	j, err := utilyaml.ToJSON([]byte(cm.Data["envoy-bootstrap.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(j, &b); err != nil {
		t.Fatalf("bootstrap does not parse as envoy.config.bootstrap.v3.Bootstrap: %v", err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("bootstrap is invalid: %v", err)
	}
	// The xDS channel is mutual TLS, its files read by SDS from the
	// mounted Secret.
	xdsClusters := 0
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() != "weir-xds" {
			continue
		}
		xdsClusters++
		var tc tlsv3.UpstreamTlsContext
		if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&tc); err != nil {
			t.Fatalf("weir-xds transport socket: %v", err)
		}
		common := tc.GetCommonTlsContext()
		if len(common.GetTlsCertificateSdsSecretConfigs()) != 1 || common.GetValidationContextSdsSecretConfig() == nil {
			t.Error("the xDS cluster presents no client certificate or verifies no server")
		}
		for _, sds := range append(common.GetTlsCertificateSdsSecretConfigs(), common.GetValidationContextSdsSecretConfig()) {
			file := strings.TrimPrefix(sds.GetSdsConfig().GetPathConfigSource().GetPath(), "/etc/envoy/")
			j, err := utilyaml.ToJSON([]byte(cm.Data[file]))
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			var resp discoveryv3.DiscoveryResponse
			if err := protojson.Unmarshal(j, &resp); err != nil || len(resp.GetResources()) != 1 {
				t.Fatalf("%s does not parse as an SDS file with one Secret: %v", file, err)
			}
			var secret tlsv3.Secret
			if err := resp.GetResources()[0].UnmarshalTo(&secret); err != nil || secret.GetName() != sds.GetName() || secret.ValidateAll() != nil {
				t.Errorf("%s: secret %q (%v), want a valid %q", file, secret.GetName(), err, sds.GetName())
			}
		}
	}
	if xdsClusters != 1 {
		t.Errorf("%d weir-xds clusters, want 1", xdsClusters)
	}
	if len(b.GetOverloadManager().GetResourceMonitors()) == 0 {
		t.Error("no overload manager: downstream connections are unbounded")
	}
	if a := b.GetAdmin().GetAddress().GetSocketAddress().GetAddress(); a != "127.0.0.1" {
		t.Errorf("admin binds %q, want loopback", a)
	}
	if b.GetDynamicResources().GetAdsConfig() == nil || b.GetDynamicResources().GetLdsConfig().GetAds() == nil ||
		b.GetDynamicResources().GetCdsConfig().GetAds() == nil {
		t.Error("LDS and CDS must come over ADS")
	}
	// translate refuses regexes by re2size's bound of this limit.
	var limit float64
	for _, l := range b.GetLayeredRuntime().GetLayers() {
		if v, ok := l.GetStaticLayer().GetFields()["re2.max_program_size.error_level"]; ok {
			limit = v.GetNumberValue()
		}
	}
	if limit != re2size.MaxProgramSize {
		t.Errorf("re2.max_program_size.error_level = %v in the bootstrap, want re2size.MaxProgramSize (%d)", limit, re2size.MaxProgramSize)
	}
}
