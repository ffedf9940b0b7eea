package ingress

import (
	"context"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	netv1 "k8s.io/api/networking/v1"
)

// authSecrets watches the Secrets that auth-secret annotations name, and
// no other: each with a watch of its own, selected by name, so Weir holds
// only the Secrets an Ingress handed it, whatever their type.
type authSecrets struct {
	kube     kubernetes.Interface
	resync   time.Duration
	onChange func()
	// store has every watched Secret; Lister reads it.
	store cache.Indexer

	mu      sync.Mutex
	watches map[types.NamespacedName]*secretWatch
}

type secretWatch struct {
	// synced is the event handler's: the store has the Secret once it
	// is true, which the informer's own HasSynced does not promise.
	synced cache.InformerSynced
	stop   context.CancelFunc
}

// authSecretSyncTimeout bounds how long a rebuild waits for a newly named
// Secret: after it the path answers 503 until the Secret arrives, which
// rebuilds again.
const authSecretSyncTimeout = 10 * time.Second

func newAuthSecrets(kube kubernetes.Interface, resync time.Duration, onChange func()) *authSecrets {
	return &authSecrets{
		kube: kube, resync: resync, onChange: onChange,
		store:   cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}),
		watches: map[types.NamespacedName]*secretWatch{},
	}
}

// Lister reads the watched Secrets.
func (a *authSecrets) Lister() corelisters.SecretLister { return corelisters.NewSecretLister(a.store) }

// Watch makes the watched Secrets exactly want: it stops the watches of
// Secrets no longer named, starts the new ones, and waits until they have
// been read (or ctx ends, or authSecretSyncTimeout passes), so that a
// rebuild does not answer 503 for a Secret that exists.
func (a *authSecrets) Watch(ctx context.Context, want map[types.NamespacedName]bool) {
	a.mu.Lock()
	for key, w := range a.watches {
		if !want[key] {
			w.stop()
			delete(a.watches, key)
			if obj, ok, _ := a.store.GetByKey(key.String()); ok {
				_ = a.store.Delete(obj)
			}
		}
	}
	var started []cache.InformerSynced
	for key := range want {
		if _, ok := a.watches[key]; ok {
			continue
		}
		w := a.start(key)
		a.watches[key] = w
		started = append(started, w.synced)
	}
	a.mu.Unlock()
	if len(started) == 0 {
		return
	}
	wait, cancel := context.WithTimeout(ctx, authSecretSyncTimeout)
	defer cancel()
	cache.WaitForCacheSync(wait.Done(), started...)
}

func (a *authSecrets) start(key types.NamespacedName) *secretWatch {
	w := &secretWatch{}
	byName := fields.OneTermEqualSelector("metadata.name", key.Name).String()
	secrets := a.kube.CoreV1().Secrets(key.Namespace)
	inf := cache.NewSharedIndexInformer(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = byName
			return secrets.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = byName
			return secrets.Watch(ctx, o)
		},
	}, &corev1.Secret{}, a.resync, cache.Indexers{})
	// Only the data is kept: a Secret's annotations may hold a copy of
	// it (kubectl's last-applied-configuration).
	_ = inf.SetTransform(func(obj any) (any, error) {
		if s, ok := obj.(*corev1.Secret); ok {
			return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, ResourceVersion: s.ResourceVersion}, Type: s.Type, Data: s.Data}, nil
		}
		return obj, nil
	})
	reg, _ := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.put(key, w, obj) },
		UpdateFunc: func(_, obj any) { a.put(key, w, obj) },
		DeleteFunc: func(any) { a.put(key, w, nil) },
	})
	ctx, stop := context.WithCancel(context.Background())
	w.synced, w.stop = reg.HasSynced, stop
	go inf.RunWithContext(ctx)
	return w
}

// put stores (or with a nil obj, forgets) a watched Secret, unless w no
// longer watches it: a stopped watch's late event is not the Secret's
// latest.
func (a *authSecrets) put(key types.NamespacedName, w *secretWatch, obj any) {
	a.mu.Lock()
	current := a.watches[key] == w
	if current {
		if obj != nil {
			_ = a.store.Update(obj)
		} else if old, ok, _ := a.store.GetByKey(key.String()); ok {
			_ = a.store.Delete(old)
		}
	}
	a.mu.Unlock()
	if current {
		a.onChange()
	}
}

// Stop ends every watch.
func (a *authSecrets) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for key, w := range a.watches {
		w.stop()
		delete(a.watches, key)
	}
}

// authSecretsOf are the Secrets the Ingresses classes serves name in
// auth-secret (with auth-type basic) and auth-tls-secret, in their own
// namespaces (Weir reads no other).
func authSecretsOf(ings []*netv1.Ingress, classes Classes) map[types.NamespacedName]bool {
	out := map[types.NamespacedName]bool{}
	add := func(ing *netv1.Ingress, key string) {
		if name, _, ok := ownSecret(ing.Namespace, strings.TrimSpace(ing.Annotations[AnnotationPrefix+key])); ok {
			out[types.NamespacedName{Namespace: ing.Namespace, Name: name}] = true
		}
	}
	for _, ing := range ings {
		if !classes.Serves(ing) {
			continue
		}
		if strings.TrimSpace(ing.Annotations[AnnotationPrefix+"auth-type"]) == "basic" {
			add(ing, "auth-secret")
		}
		add(ing, "auth-tls-secret")
	}
	return out
}
