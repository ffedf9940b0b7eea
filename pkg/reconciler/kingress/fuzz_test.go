package kingress

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"github.com/weir-dev/weir/pkg/ir"
	"github.com/weir-dev/weir/pkg/translate"
)

// FuzzKIngressesThroughTranslate builds a set of KIngresses from the input,
// with hosts, TLS, splits and headers drawn from pools that mix good values
// with those Envoy refuses or mis-serves, and runs them through Build, the
// model and translate, as the reconciler does. It asserts:
//   - nothing panics;
//   - the result passes Validate, which holds Envoy's acceptance rules;
//   - each object refused for itself is refused when translated alone, so
//     a problem is never pinned on the wrong object;
//   - every virtual host of an object without problems is served.
//
// go test replays the seeds below and any in
// testdata/fuzz/FuzzKIngressesThroughTranslate; make unit also fuzzes it for
// a bounded time (hack/fuzz.sh).
func FuzzKIngressesThroughTranslate(f *testing.F) {
	for _, seed := range [][]byte{
		{}, {3, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {2, 6, 6, 1, 1, 0, 0, 1, 1}, {1, 7, 0, 2, 3, 1, 4, 4},
		[]byte("kelvin and dotted server names"), []byte{4, 250, 13, 77, 1, 8, 9, 200, 3, 3, 3, 1, 0, 5},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := &kin{data: data}
		ings, objs := in.ingresses()
		l := newListers(objs...)
		model := ir.NewModel()
		frags := map[ir.ObjectRef]*ir.Fragment{}
		for _, ing := range ings {
			frag, _ := Build(ing, "hash", l.Listers, SecretPolicy{})
			displaced, _, err := model.Set(frag)
			if err == nil {
				frags[frag.Source] = frag
			}
			// An older object took their domain; the reconciler marks them
			// DomainConflict when it next sees them.
			for _, d := range displaced {
				delete(frags, d)
			}
		}
		res, err := translate.New(translate.DefaultOptions()).Translate(model.Fragments())
		if err != nil {
			t.Fatalf("translate: %v", err)
		}
		if err := res.Validate(); err != nil {
			t.Fatalf("a real Envoy would refuse this: %v", err)
		}
		bySource := res.ProblemsBySource()
		for ref, frag := range frags {
			ps := bySource[ref]
			own := slices.ContainsFunc(ps, func(p translate.Problem) bool {
				return p.Reason != translate.ReasonDomainConflict && p.Reason != translate.ReasonServerNameConflict
			})
			if own {
				alone, err := translate.New(translate.DefaultOptions()).Translate([]*ir.Fragment{frag})
				if err != nil {
					t.Fatal(err)
				}
				if len(alone.ProblemsBySource()[ref]) == 0 {
					t.Fatalf("%v has problems %+v with the others, and none alone: they are not its own", ref, ps)
				}
			}
			if len(ps) == 0 {
				assertServed(t, res, frag)
			}
		}
	})
}

// assertServed checks that every virtual host of frag is in the route
// configuration of each plain listener it is on.
func assertServed(t *testing.T, res *translate.Resources, frag *ir.Fragment) {
	t.Helper()
	for _, vh := range frag.VirtualHosts {
		for _, role := range []ir.ListenerRole{ir.ExternalHTTP, ir.InternalHTTP} {
			if !vh.Listeners.Has(role) {
				continue
			}
			served := false
			for _, rc := range res.Routes {
				if rc.GetName() != role.String() {
					continue
				}
				for _, v := range rc.GetVirtualHosts() {
					served = served || v.GetName() == vh.Name
				}
			}
			if !served {
				t.Fatalf("%v has no problems, but its virtual host %s is not served on %s", frag.Source, vh.Name, role)
			}
		}
	}
}

// kin hands out the fuzz bytes one at a time, then zeros.
type kin struct {
	data []byte
	pos  int
}

func (in *kin) intn(n int) int {
	if in.pos >= len(in.data) {
		return 0
	}
	b := in.data[in.pos]
	in.pos++
	return int(b) % n
}

func pickOne[T any](in *kin, pool ...T) T { return pool[in.intn(len(pool))] }

var (
	kinHosts = []string{"a.example.com", "A.Example.com", "b.example.com", "*.x.example.com", ".x.example.com",
		"\u212Aube.example.com", "kube.example.com", "a.*.example.com", "c.example.com", "bad host", ""}
	kinHeaderValues = []string{"v", "a\r\nb", "nul\x00", "", "%REQ(x)%"}
	kinServices     = []string{"svc-a", "svc-b", "missing", "ext-https"}
	kinSecrets      = []string{"good", "weak", "opaque", "absent"}
)

func (in *kin) ingresses() ([]*v1alpha1.Ingress, []runtime.Object) {
	objs := []runtime.Object{
		service("svc-a"), service("svc-b"),
		endpointSlice("svc-a-1", "svc-a", "http", 8080, ready("10.0.0.1")),
		endpointSlice("svc-b-1", "svc-b", "http", 8080, ready("10.0.0.2")),
		tlsSecret(testNS, "good"),
		weakSecret(),
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "opaque", Namespace: testNS}, Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"password": []byte("x")}},
	}
	ext := service("ext-https", corev1.ServicePort{Name: "https", Port: 443})
	ext.Spec.Type, ext.Spec.ExternalName = corev1.ServiceTypeExternalName, "api.example.org"
	objs = append(objs, ext)

	var out []*v1alpha1.Ingress
	for i, n := 0, 1+in.intn(4); i < n; i++ {
		ing := kingress(fmt.Sprintf("k%d", i), withCreated(time.Unix(int64(1_700_000_000+in.intn(3)), 0)))
		ing.Spec.Rules = nil
		for r, nr := 0, 1+in.intn(3); r < nr; r++ {
			rule := v1alpha1.IngressRule{Visibility: pickOne(in, v1alpha1.IngressVisibilityExternalIP, v1alpha1.IngressVisibilityClusterLocal),
				HTTP: &v1alpha1.HTTPIngressRuleValue{}}
			for h, nh := 0, 1+in.intn(2); h < nh; h++ {
				rule.Hosts = append(rule.Hosts, pickOne(in, kinHosts...))
			}
			path := v1alpha1.HTTPIngressPath{Path: pickOne(in, "", "/", "/api")}
			for s, ns := 0, 1+in.intn(2); s < ns; s++ {
				port := 80
				svc := pickOne(in, kinServices...)
				if svc == "ext-https" {
					port = 443
				}
				path.Splits = append(path.Splits, split(svc, port, pickOne(in, 100, 50, 0)))
			}
			if in.intn(3) == 0 {
				path.AppendHeaders = map[string]string{"x-h": pickOne(in, kinHeaderValues...)}
			}
			rule.HTTP.Paths = append(rule.HTTP.Paths, path)
			ing.Spec.Rules = append(ing.Spec.Rules, rule)
		}
		for s, ns := 0, in.intn(2); s < ns; s++ {
			tls := v1alpha1.IngressTLS{SecretName: pickOne(in, kinSecrets...), SecretNamespace: testNS}
			for h, nh := 0, 1+in.intn(3); h < nh; h++ {
				tls.Hosts = append(tls.Hosts, pickOne(in, kinHosts...))
			}
			ing.Spec.TLS = append(ing.Spec.TLS, tls)
		}
		out = append(out, ing)
	}
	return out, objs
}

var weakPair = sync.OnceValues(func() ([]byte, []byte) {
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "weak.example.com"},
		DNSNames: []string{"*.example.com"}, NotBefore: time.Unix(0, 0), NotAfter: time.Unix(4_000_000_000, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
})

// weakSecret holds an RSA key of 1024 bits: Go loads it, Envoy does not.
func weakSecret() *corev1.Secret {
	chain, key := weakPair()
	s := tlsSecret(testNS, "weak")
	s.Data = map[string][]byte{corev1.TLSCertKey: chain, corev1.TLSPrivateKeyKey: key}
	return s
}
