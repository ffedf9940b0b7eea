// Package manifest owns Weir's cluster-less source of truth: it reads
// multi-document Kubernetes YAML from files, validates it, and reconciles the
// KIngresses in it through the same reconciler the controller runs, against
// in-memory listers instead of an API server.
package manifest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/weir-dev/weir/pkg/reconciler/policy"
)

// Document is one object read from a file.
type Document struct {
	File string
	// Index counts documents in the file from 1, as a person would.
	Index  int
	Object runtime.Object
	// Sum is the SHA-256 of the document's text: an unchanged sum means an
	// unchanged object, without comparing objects.
	Sum [sha256.Size]byte
}

func (d Document) String() string { return fmt.Sprintf("%s: document %d", d.File, d.Index) }

var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme, serializer.EnableStrict)
)

func init() {
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha1.AddToScheme, gwv1.Install, gwv1beta1.Install, policy.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
}

// KindOf names a decoded object's kind as Weir's messages do.
func KindOf(o runtime.Object) string {
	switch o.(type) {
	case *v1alpha1.Ingress:
		return "KIngress"
	case *corev1.Service:
		return "Service"
	case *corev1.Secret:
		return "Secret"
	case *discoveryv1.EndpointSlice:
		return "EndpointSlice"
	case *corev1.Namespace:
		return "Namespace"
	case *corev1.ConfigMap:
		return "ConfigMap"
	case *gwv1.GatewayClass:
		return "GatewayClass"
	case *gwv1.Gateway:
		return "Gateway"
	case *gwv1.HTTPRoute:
		return "HTTPRoute"
	case *gwv1.GRPCRoute:
		return "GRPCRoute"
	case *gwv1.TLSRoute:
		return "TLSRoute"
	case *gwv1.ReferenceGrant, *gwv1beta1.ReferenceGrant:
		return "ReferenceGrant"
	case *gwv1.BackendTLSPolicy:
		return "BackendTLSPolicy"
	case *netv1.Ingress:
		return "Ingress"
	case *netv1.IngressClass:
		return "IngressClass"
	case *policy.TrafficPolicy:
		return policy.Kind
	}
	return fmt.Sprintf("%T", o)
}

// dataPlaneParameters is read by weir-controller alone.
var dataPlaneParameters = schema.GroupVersionKind{Group: "gateway.weir.dev", Version: "v1alpha1", Kind: "GatewayParameters"}

// supported lists the kinds Weir reads, for error messages.
const supported = "networking.internal.knative.dev/v1alpha1 Ingress, gateway.networking.k8s.io/v1 GatewayClass, Gateway, HTTPRoute, GRPCRoute, TLSRoute, BackendTLSPolicy and ReferenceGrant (also v1beta1), networking.k8s.io/v1 Ingress and IngressClass, policy.weir.dev/v1alpha1 TrafficPolicy, v1 Service, discovery.k8s.io/v1 EndpointSlice, v1 Secret, v1 ConfigMap (a CA bundle), v1 Namespace"

var supportedKinds = map[schema.GroupVersionKind]bool{
	v1alpha1.SchemeGroupVersion.WithKind("Ingress"):          true,
	corev1.SchemeGroupVersion.WithKind("Service"):            true,
	corev1.SchemeGroupVersion.WithKind("Secret"):             true,
	discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice"): true,
	corev1.SchemeGroupVersion.WithKind("Namespace"):          true,
	corev1.SchemeGroupVersion.WithKind("ConfigMap"):          true,
	gwv1.SchemeGroupVersion.WithKind("GatewayClass"):         true,
	gwv1.SchemeGroupVersion.WithKind("Gateway"):              true,
	gwv1.SchemeGroupVersion.WithKind("HTTPRoute"):            true,
	gwv1.SchemeGroupVersion.WithKind("GRPCRoute"):            true,
	gwv1.SchemeGroupVersion.WithKind("TLSRoute"):             true,
	gwv1.SchemeGroupVersion.WithKind("ReferenceGrant"):       true,
	gwv1.SchemeGroupVersion.WithKind("BackendTLSPolicy"):     true,
	gwv1beta1.SchemeGroupVersion.WithKind("ReferenceGrant"):  true,
	netv1.SchemeGroupVersion.WithKind("Ingress"):             true,
	netv1.SchemeGroupVersion.WithKind("IngressClass"):        true,
	policy.SchemeGroupVersion.WithKind(policy.Kind):          true,
}

// Load reads every .yaml/.yml file under the given files or directories
// (directories are not recursed into subdirectories). All errors are
// returned together so a user fixes them in one pass.
func Load(paths ...string) ([]Document, error) {
	files, err := Files(paths...)
	if err != nil {
		return nil, err
	}
	var docs []Document
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		d, err := Decode(f, data)
		docs = append(docs, d...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return docs, errors.Join(errs...)
}

// Files returns the given files and the .yaml/.yml files directly in the
// given directories, sorted.
func Files(paths ...string) ([]string, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
				files = append(files, filepath.Join(p, e.Name()))
			}
		}
	}
	sort.Strings(files)
	return files, nil
}

// Decode splits data into documents and decodes each. Empty documents are
// skipped; every other failure names the file and document.
func Decode(file string, data []byte) ([]Document, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	deserializer := codecs.UniversalDeserializer()
	var docs []Document
	var errs []error
	for i := 1; ; i++ {
		raw, err := reader.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: document %d: %w", file, i, err))
			break
		}
		if len(bytes.TrimSpace(stripComments(raw))) == 0 {
			i--
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(raw, &tm); err != nil {
			errs = append(errs, fmt.Errorf("%s: document %d: %w", file, i, err))
			continue
		}
		if tm.APIVersion == "v1" && tm.Kind == "List" {
			// What `kubectl get -o yaml` prints for several objects.
			var list struct {
				Items []json.RawMessage `json:"items"`
			}
			if err := yaml.Unmarshal(raw, &list); err != nil {
				errs = append(errs, fmt.Errorf("%s: document %d: %w", file, i, err))
				continue
			}
			for j, item := range list.Items {
				var tm metav1.TypeMeta
				if err := json.Unmarshal(item, &tm); err != nil {
					errs = append(errs, fmt.Errorf("%s: document %d, item %d: %w", file, i, j, err))
					continue
				}
				where := fmt.Sprintf("%s: document %d, item %d", file, i, j)
				if d, ok, err := decodeObject(where, tm, item, deserializer); err != nil {
					errs = append(errs, err)
				} else if ok {
					d.File, d.Index = file, i
					docs = append(docs, d)
				}
			}
			continue
		}
		if d, ok, err := decodeObject(fmt.Sprintf("%s: document %d", file, i), tm, raw, deserializer); err != nil {
			errs = append(errs, err)
		} else if ok {
			d.File, d.Index = file, i
			docs = append(docs, d)
		}
	}
	return docs, errors.Join(errs...)
}

// decodeObject decodes one object of a supported kind, whose type is tm;
// ok is false for one that is skipped without an error.
func decodeObject(where string, tm metav1.TypeMeta, raw []byte, deserializer runtime.Decoder) (d Document, ok bool, err error) {
	if tm.GroupVersionKind() == dataPlaneParameters {
		// They shape data planes a cluster makes; weir run and weir
		// translate make none.
		return Document{}, false, nil
	}
	if !supportedKinds[tm.GroupVersionKind()] {
		if tm.APIVersion == "" || tm.Kind == "" {
			return Document{}, false, fmt.Errorf("%s: apiVersion and kind are required", where)
		}
		return Document{}, false, fmt.Errorf("%s: unsupported kind %s %s; Weir reads %s", where, tm.APIVersion, tm.Kind, supported)
	}
	obj, _, err := deserializer.Decode(raw, nil, nil)
	if err != nil {
		return Document{}, false, fmt.Errorf("%s: %w", where, err)
	}
	if s, ok := obj.(*corev1.Secret); ok && len(s.StringData) > 0 {
		// As the API server stores it: stringData is written into
		// data, and wins over the same key there.
		if s.Data == nil {
			s.Data = make(map[string][]byte, len(s.StringData))
		}
		for k, v := range s.StringData {
			s.Data[k] = []byte(v)
		}
		s.StringData = nil
	}
	if rg, ok := obj.(*gwv1beta1.ReferenceGrant); ok {
		// The same object at v1: one kind downstream.
		obj = &gwv1.ReferenceGrant{ObjectMeta: rg.ObjectMeta, Spec: gwv1.ReferenceGrantSpec{From: rg.Spec.From, To: rg.Spec.To}}
	}
	return Document{Object: obj, Sum: sha256.Sum256(raw)}, true, nil
}

func stripComments(raw []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' && string(t) != "---" {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

// validateKIngress defaults and validates a KIngress the way the API
// server's webhook would, and returns an error naming the document and
// field. Admit calls it, after defaulting the namespace.
func validateKIngress(ctx context.Context, d Document) error {
	ing, ok := d.Object.(*v1alpha1.Ingress)
	if !ok {
		return nil
	}
	prefix := fmt.Sprintf("%s (KIngress %s/%s)", d, ing.Namespace, ing.Name)
	if ing.Name == "" {
		return fmt.Errorf("%s: metadata.name is required", prefix)
	}
	// SetDefaults dereferences every rule's http block.
	for i, r := range ing.Spec.Rules {
		if r.HTTP == nil {
			return fmt.Errorf("%s: spec.rules[%d].http: missing field(s); every rule needs http.paths", prefix, i)
		}
	}
	ing.SetDefaults(ctx)
	if fe := ing.Validate(ctx); fe != nil {
		return fmt.Errorf("%s: %s", prefix, strings.ReplaceAll(fe.Error(), "\n", "; "))
	}
	return nil
}
