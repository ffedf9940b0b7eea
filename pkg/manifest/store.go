package manifest

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weir-dev/weir/pkg/reconciler/kingress"
	"github.com/weir-dev/weir/pkg/reconciler/policy"
)

// Key names one object across all files.
type Key struct {
	Kind      string // Service, EndpointSlice, Secret or KIngress
	Namespace string
	Name      string
}

func (k Key) String() string { return k.Kind + " " + k.Namespace + "/" + k.Name }

// Change is one object whose served version changed: New is nil when it
// went away, Old is nil when it is new.
type Change struct {
	Key      Key
	Old, New runtime.Object
}

// Store is the cluster-less stand-in for informers: the objects of every
// input file, in indexers that change per object. Setting a file diffs its
// documents by key against what the file held before and touches only the
// objects that changed, so one edited document among 30,000 costs one
// indexer update, not a rebuild.
//
// When two files define the same object, the file first in name order is
// served, and SetFile warns about the other.
type Store struct {
	mu                                   sync.Mutex
	services, slices, secrets, ingresses cache.Indexer
	// gatewayAPI holds Gateway API objects, Namespaces, Ingresses and
	// policies, by kind.
	gatewayAPI map[string]cache.Indexer
	files      map[string]map[Key]Document
	// defs lists, per key, the files that define it, in name order.
	defs map[Key][]string
}

// NewStore returns an empty store.
func NewStore() *Store {
	idx := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	s := &Store{services: idx(), slices: idx(), secrets: idx(), ingresses: idx(),
		files: map[string]map[Key]Document{}, defs: map[Key][]string{}, gatewayAPI: map[string]cache.Indexer{}}
	for _, kind := range slices.Concat(gatewayKinds, ingressKinds, policyKinds) {
		s.gatewayAPI[kind] = idx()
	}
	if err := s.slices.AddIndexers(kingress.SliceIndexers); err != nil {
		panic(err) // only fails on an indexer name clash, fixed at compile time
	}
	return s
}

// Listers returns listers over the store, for kingress.Reconciler.
func (s *Store) Listers() kingress.Listers {
	return kingress.Listers{
		Services:       corelisters.NewServiceLister(s.services),
		EndpointSlices: kingress.IndexedSlices(s.slices),
		Secrets:        corelisters.NewSecretLister(s.secrets),
	}
}

// Ingress returns the served KIngress ns/name and the document it came
// from. The object is shared: copy it before changing it.
func (s *Store) Ingress(ns, name string) (Document, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := Key{Kind: kingress.Kind, Namespace: ns, Name: name}
	return s.servedLocked(key)
}

// Ingresses returns every served KIngress document, oldest first (ties
// by namespace/name), the order in which a cluster would have created them.
func (s *Store) Ingresses() []Document {
	s.mu.Lock()
	var out []Document
	for key, files := range s.defs {
		if key.Kind == kingress.Kind {
			out = append(out, s.files[files[0]][key])
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Object.(*v1alpha1.Ingress), out[j].Object.(*v1alpha1.Ingress)
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	return out
}

// SetFile makes docs what file defines and returns the objects whose
// served version changed. KIngresses of another class are skipped with a
// warning; an invalid KIngress is left out with an error, and the rest of
// the file is still taken. The store owns docs' objects from now on.
func (s *Store) SetFile(ctx context.Context, file string, docs []Document) (changes []Change, warnings []string, errs []error) {
	next := make(map[Key]Document, len(docs))
	for _, d := range docs {
		key, err := Admit(ctx, d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if key.Kind == "" {
			ing := d.Object.(*v1alpha1.Ingress)
			warnings = append(warnings, fmt.Sprintf("%s: KIngress %s/%s skipped: its %s annotation is %q, and Weir serves %q",
				d, ing.Namespace, ing.Name, networking.IngressClassAnnotationKey, ing.Annotations[networking.IngressClassAnnotationKey], kingress.ClassName))
			continue
		}
		if prev, dup := next[key]; dup {
			// The first definition wins, in a file as across files.
			warnings = append(warnings, fmt.Sprintf("%s: %s is defined again; the first, document %d, is served", d, key, prev.Index))
			continue
		}
		next[key] = d
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	changes = s.replaceLocked(file, next)
	for key := range next {
		if files := s.defs[key]; len(files) > 1 {
			warnings = append(warnings, fmt.Sprintf("%s is defined in %v; the one in %s is served", key, files, files[0]))
		}
	}
	sort.Strings(warnings)
	return changes, warnings, errs
}

// RemoveFile drops everything file defined and returns what changed.
func (s *Store) RemoveFile(file string) []Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replaceLocked(file, nil)
}

// replaceLocked swaps file's documents for next and updates the indexers
// for every key whose served document changed.
func (s *Store) replaceLocked(file string, next map[Key]Document) []Change {
	prev := s.files[file]
	touched := make([]Key, 0, len(next)+len(prev))
	for key, d := range next {
		if old, ok := prev[key]; !ok || old.Sum != d.Sum {
			touched = append(touched, key)
		}
	}
	for key := range prev {
		if _, ok := next[key]; !ok {
			touched = append(touched, key)
		}
	}
	before := make([]Document, len(touched))
	had := make([]bool, len(touched))
	for i, key := range touched {
		before[i], had[i] = s.servedLocked(key)
	}

	if len(next) == 0 {
		delete(s.files, file)
	} else {
		s.files[file] = next
	}
	for _, key := range touched {
		files := s.defs[key]
		i := sort.SearchStrings(files, file)
		present := i < len(files) && files[i] == file
		_, want := next[key]
		switch {
		case want && !present:
			files = append(files, "")
			copy(files[i+1:], files[i:])
			files[i] = file
		case !want && present:
			files = append(files[:i], files[i+1:]...)
		}
		if len(files) == 0 {
			delete(s.defs, key)
		} else {
			s.defs[key] = files
		}
	}

	var changes []Change
	for i, key := range touched {
		after, has := s.servedLocked(key)
		if had[i] == has && (!has || before[i].Object == after.Object) {
			continue
		}
		c := Change{Key: key}
		if had[i] {
			c.Old = before[i].Object
		}
		if has {
			c.New = after.Object
			_ = s.indexer(key.Kind).Update(after.Object) // indexers only fail on a broken index func
		} else {
			_ = s.indexer(key.Kind).Delete(before[i].Object)
		}
		changes = append(changes, c)
	}
	return changes
}

func (s *Store) servedLocked(key Key) (Document, bool) {
	files := s.defs[key]
	if len(files) == 0 {
		return Document{}, false
	}
	return s.files[files[0]][key], true
}

func (s *Store) indexer(kind string) cache.Indexer {
	switch kind {
	case "Service":
		return s.services
	case "EndpointSlice":
		return s.slices
	case "Secret":
		return s.secrets
	case kingress.Kind:
		return s.ingresses
	}
	return s.gatewayAPI[kind]
}

var gvks = map[string]schema.GroupVersionKind{
	"Service":          corev1.SchemeGroupVersion.WithKind("Service"),
	"EndpointSlice":    discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice"),
	"Secret":           corev1.SchemeGroupVersion.WithKind("Secret"),
	kingress.Kind:      v1alpha1.SchemeGroupVersion.WithKind("Ingress"),
	"Namespace":        corev1.SchemeGroupVersion.WithKind("Namespace"),
	"ConfigMap":        corev1.SchemeGroupVersion.WithKind("ConfigMap"),
	"GatewayClass":     gwv1.SchemeGroupVersion.WithKind("GatewayClass"),
	"Gateway":          gwv1.SchemeGroupVersion.WithKind("Gateway"),
	"HTTPRoute":        gwv1.SchemeGroupVersion.WithKind("HTTPRoute"),
	"GRPCRoute":        gwv1.SchemeGroupVersion.WithKind("GRPCRoute"),
	"TLSRoute":         gwv1.SchemeGroupVersion.WithKind("TLSRoute"),
	"BackendTLSPolicy": gwv1.SchemeGroupVersion.WithKind("BackendTLSPolicy"),
	"Ingress":          netv1.SchemeGroupVersion.WithKind("Ingress"),
	"IngressClass":     netv1.SchemeGroupVersion.WithKind("IngressClass"),
	policy.Kind:        policy.SchemeGroupVersion.WithKind(policy.Kind),
	// v1beta1 ReferenceGrants are stored as v1: the fields are the same.
	"ReferenceGrant": gwv1.SchemeGroupVersion.WithKind("ReferenceGrant"),
}

// gatewayKinds are the kinds the Gateway API front end reads besides
// Services, EndpointSlices and Secrets.
var gatewayKinds = []string{"Namespace", "GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "TLSRoute", "ReferenceGrant", "BackendTLSPolicy", "ConfigMap"}

// ingressKinds are the networking.k8s.io kinds the Ingress front end reads,
// kept beside the Gateway API's.
var ingressKinds = []string{"Ingress", "IngressClass"}

// policyKinds are Weir's policies, kept beside the Gateway API's kinds.
var policyKinds = []string{policy.Kind}

// Admit is the one validation path of weir run, weir translate and the
// controller's view of an object: it defaults the namespace, then defaults
// and validates a KIngress, as the API server would. It returns the zero
// Key for a KIngress of another class, which is skipped.
func Admit(ctx context.Context, d Document) (Key, error) {
	m, err := meta.Accessor(d.Object)
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w", d, err)
	}
	clusterScoped := false
	switch d.Object.(type) {
	case *corev1.Namespace, *gwv1.GatewayClass, *netv1.IngressClass:
		clusterScoped = true
		m.SetNamespace("")
	}
	if m.GetNamespace() == "" && !clusterScoped {
		m.SetNamespace(corev1.NamespaceDefault)
	}
	var kind string
	switch o := d.Object.(type) {
	case *corev1.Namespace, *gwv1.GatewayClass, *gwv1.Gateway, *gwv1.HTTPRoute, *gwv1.GRPCRoute, *gwv1.TLSRoute, *gwv1.ReferenceGrant, *gwv1.BackendTLSPolicy, *corev1.ConfigMap,
		*netv1.Ingress, *netv1.IngressClass, *policy.TrafficPolicy:
		if m.GetName() == "" {
			return Key{}, fmt.Errorf("%s: metadata.name is required", d)
		}
		kind = KindOf(o)
	case *corev1.Service:
		kind = "Service"
	case *discoveryv1.EndpointSlice:
		kind = "EndpointSlice"
	case *corev1.Secret:
		kind = "Secret"
	case *v1alpha1.Ingress:
		if o.Annotations[networking.IngressClassAnnotationKey] != kingress.ClassName {
			return Key{}, nil
		}
		if err := validateKIngress(ctx, d); err != nil {
			return Key{}, err
		}
		kind = kingress.Kind
	default:
		return Key{}, fmt.Errorf("%s: unsupported object %T; Weir reads %s", d, d.Object, supported)
	}
	// The tracker matches references by kind, which decoding may leave empty.
	d.Object.GetObjectKind().SetGroupVersionKind(gvks[kind])
	return Key{Kind: kind, Namespace: m.GetNamespace(), Name: m.GetName()}, nil
}
