package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// GatewayParameters (gateway.weir.dev/v1alpha1, config/110-gatewayparameters.yaml)
// shape a Gateway's data plane. A GatewayClass's parametersRef gives the
// defaults; a Gateway's spec.infrastructure.parametersRef overrides them
// field by field.
const (
	ParametersGroup = "gateway.weir.dev"
	ParametersKind  = "GatewayParameters"
)

// ParametersResource is the GatewayParameters resource.
var ParametersResource = schema.GroupVersionResource{Group: ParametersGroup, Version: "v1alpha1", Resource: "gatewayparameters"}

// Parameters is the spec of a GatewayParameters.
type Parameters struct {
	// Replicas of the Gateway's Deployment; 1 when unset.
	Replicas *int32 `json:"replicas,omitempty"`
	// Image replaces the gateway container's image.
	Image string `json:"image,omitempty"`
	// ServiceType of the Gateway's Service; weir-controller's default
	// (GATEWAY_SERVICE_TYPE) when unset.
	ServiceType corev1.ServiceType `json:"serviceType,omitempty"`
	// Resources replace the gateway container's requests and limits.
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
}

// over returns p with the fields o sets replaced by o's.
func (p Parameters) over(o *Parameters) Parameters {
	if o == nil {
		return p
	}
	if o.Replicas != nil {
		p.Replicas = o.Replicas
	}
	if o.Image != "" {
		p.Image = o.Image
	}
	if o.ServiceType != "" {
		p.ServiceType = o.ServiceType
	}
	if o.Resources != nil {
		p.Resources = o.Resources
	}
	return p
}

// ReservedLabel reports whether a label key may not be propagated from
// a Gateway's spec.infrastructure to its data plane: the shared gateways'
// Services and Weir itself select pods by these.
func ReservedLabel(key string) bool {
	return key == "app" || strings.HasPrefix(key, "app.kubernetes.io/") || strings.HasPrefix(key, "weir.dev/") || key == "pod-template-hash"
}

// ParametersLister reads GatewayParameters.
type ParametersLister interface {
	Get(namespace, name string) (*Parameters, error)
}

// IndexerParameters reads GatewayParameters from an informer of
// unstructured objects (a dynamic informer: the kind has no typed client).
type IndexerParameters struct{ Indexer cache.Indexer }

// Get decodes the spec strictly: a field this version does not know is
// refused rather than ignored.
func (ip IndexerParameters) Get(namespace, name string) (*Parameters, error) {
	o, ok, err := ip.Indexer.GetByKey(namespace + "/" + name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("GatewayParameters %s/%s does not exist", namespace, name)
	}
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("GatewayParameters %s/%s: unexpected %T", namespace, name, o)
	}
	spec, _, err := unstructured.NestedMap(u.Object, "spec")
	if err != nil {
		return nil, fmt.Errorf("GatewayParameters %s/%s: spec: %w", namespace, name, err)
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	return decodeParameters(raw, namespace+"/"+name)
}

func decodeParameters(raw []byte, name string) (*Parameters, error) {
	var p Parameters
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("GatewayParameters %s: spec: %w", name, err)
	}
	if p.Replicas != nil && *p.Replicas < 0 {
		return nil, fmt.Errorf("GatewayParameters %s: spec.replicas: %d is negative", name, *p.Replicas)
	}
	switch p.ServiceType {
	case "", corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
	default:
		return nil, fmt.Errorf("GatewayParameters %s: spec.serviceType: %q is not ClusterIP, NodePort or LoadBalancer", name, p.ServiceType)
	}
	return &p, nil
}

// parametersRef resolves a reference to GatewayParameters in namespace,
// or says why it cannot be used. Without a lister (weir run, which makes
// no data planes) a reference of the right kind is accepted unread.
func (b *builder) parametersRef(group gwv1.Group, kind gwv1.Kind, namespace, name, field string) (*Parameters, string) {
	if group != ParametersGroup || kind != ParametersKind {
		return nil, fmt.Sprintf("%s: %s %s is not supported; refer to a %s.%s", field, kind, group, ParametersKind, ParametersGroup)
	}
	if namespace == "" {
		return nil, field + ".namespace: GatewayParameters are namespaced; name the namespace"
	}
	if b.listers.Parameters == nil {
		return nil, ""
	}
	p, err := b.listers.Parameters.Get(namespace, name)
	if err != nil {
		return nil, fmt.Sprintf("%s: %v", field, err)
	}
	return p, ""
}
