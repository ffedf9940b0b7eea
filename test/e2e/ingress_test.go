package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // htpasswd's {SHA}
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/weir-dev/weir/pkg/reconciler/ingress"
)

// createIngress creates a networking.k8s.io Ingress of class weir, routing
// "/" of host to service, deleted when the test ends.
func createIngress(t *testing.T, name, host, service string, annotations map[string]string) {
	t.Helper()
	ctx := context.Background()
	class, prefix := "weir", netv1.PathTypePrefix
	ing := &netv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Annotations: annotations},
		Spec: netv1.IngressSpec{IngressClassName: &class, Rules: []netv1.IngressRule{{Host: host, IngressRuleValue: netv1.IngressRuleValue{HTTP: &netv1.HTTPIngressRuleValue{
			Paths: []netv1.HTTPIngressPath{{Path: "/", PathType: &prefix, Backend: netv1.IngressBackend{Service: &netv1.IngressServiceBackend{Name: service, Port: netv1.ServiceBackendPort{Number: 80}}}}},
		}}}}},
	}
	if _, err := kube.Kube.NetworkingV1().Ingresses(namespace).Create(ctx, ing, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.Kube.NetworkingV1().Ingresses(namespace).Delete(ctx, name, metav1.DeleteOptions{}) })
}

// getWithHeader is get with one request header set.
func getWithHeader(ctx context.Context, c *http.Client, host, name, value string) (runtimeInfo, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d/", kube.NodeAddress, kube.HTTPNodePort), nil)
	if err != nil {
		return runtimeInfo{}, 0, err
	}
	req.Host = host
	req.Header.Set(name, value)
	resp, err := c.Do(req)
	if err != nil {
		return runtimeInfo{}, 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var info runtimeInfo
	if resp.StatusCode == http.StatusOK {
		err = json.Unmarshal(body, &info)
	}
	return info, resp.StatusCode, err
}

// TestNetworkingIngress: Ingresses of class weir (config/'s IngressClass)
// are served by the shared gateways, a canary by header, basic auth, an
// authorization service and a rate limit included; their
// status.loadBalancer is the gateway Service's address; an Ingress with a
// snippet is refused with a Warning Event and not served; and a rolling
// update of a backend's pods loses no request.
func TestNetworkingIngress(t *testing.T) {
	const host, snippetHost = "ingress.e2e.example.com", "ingress-snippet.e2e.example.com"
	ctx := context.Background()
	startBackend(t, "ing-a")
	startBackend(t, "ing-b")
	createIngress(t, "shop", host, "ing-a", nil)
	createIngress(t, "shop-canary", host, "ing-b", map[string]string{
		ingress.AnnotationPrefix + "canary":           "true",
		ingress.AnnotationPrefix + "canary-by-header": "x-canary",
	})
	createIngress(t, "snippet", snippetHost, "ing-a", map[string]string{ingress.AnnotationPrefix + "server-snippet": "return 200;"})

	eventually(t, host, 60*time.Second, fromBackend("ing-a"))
	c := &http.Client{Timeout: 5 * time.Second}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		info, code, err := getWithHeader(ctx, c, host, "x-canary", "always")
		return err == nil && code == 200 && backendName(info) == "ing-b", nil
	}); err != nil {
		t.Errorf("x-canary: always did not reach the canary: %v", err)
	}
	if info, code, err := getWithHeader(ctx, c, host, "x-canary", "never"); err != nil || code != 200 || backendName(info) != "ing-a" {
		t.Errorf("x-canary: never: %d from %q, %v; want ing-a", code, backendName(info), err)
	}

	svc, err := kube.Kube.CoreV1().Services("weir-system").Get(ctx, "weir", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		ing, err := kube.Kube.NetworkingV1().Ingresses(namespace).Get(ctx, "shop", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		lb := ing.Status.LoadBalancer.Ingress
		return len(lb) == 1 && lb[0].IP == svc.Spec.ClusterIP, nil
	}); err != nil {
		ing, _ := kube.Kube.NetworkingV1().Ingresses(namespace).Get(ctx, "shop", metav1.GetOptions{})
		t.Errorf("status.loadBalancer of shop: %+v, want the gateway Service's %s: %v", ing.Status.LoadBalancer, svc.Spec.ClusterIP, err)
	}

	var refused *corev1.Event
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := kube.Kube.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=snippet,involvedObject.kind=Ingress"})
		if err != nil {
			return false, err
		}
		for i := range evs.Items {
			if evs.Items[i].Reason == "Refused" && evs.Items[i].Type == corev1.EventTypeWarning {
				refused = &evs.Items[i]
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Errorf("no Refused Warning Event on the Ingress with a snippet: %v", err)
	} else {
		t.Logf("Event on snippet: %s", refused.Message)
	}
	// A path the gateway's Envoy would refuse is left out of the served
	// config, and the Ingress says so.
	class, implSpecific := "weir", netv1.PathTypeImplementationSpecific
	big := &netv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "too-big", Namespace: namespace, Annotations: map[string]string{ingress.AnnotationPrefix + "use-regex": "true"}},
		Spec: netv1.IngressSpec{IngressClassName: &class, Rules: []netv1.IngressRule{{Host: "too-big.e2e.example.com", IngressRuleValue: netv1.IngressRuleValue{HTTP: &netv1.HTTPIngressRuleValue{
			Paths: []netv1.HTTPIngressPath{{Path: `/\pL{1000}`, PathType: &implSpecific, Backend: netv1.IngressBackend{Service: &netv1.IngressServiceBackend{Name: "ing-a", Port: netv1.ServiceBackendPort{Number: 80}}}}},
		}}}}},
	}
	if _, err := kube.Kube.NetworkingV1().Ingresses(namespace).Create(ctx, big, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.Kube.NetworkingV1().Ingresses(namespace).Delete(ctx, "too-big", metav1.DeleteOptions{})
	})
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := kube.Kube.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=too-big,involvedObject.kind=Ingress"})
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(evs.Items, func(e corev1.Event) bool {
			return e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "RE2 program")
		}), nil
	}); err != nil {
		t.Errorf("no Warning Event on the Ingress whose path the gateway cannot serve: %v", err)
	}

	// auth-url: the runtime image's /healthz admits only kubelet's
	// User-Agent, so it is an authorization service: the check carries
	// the request's headers to a pod of the cluster, and its refusal (400)
	// reaches the client while the backend is never asked.
	const guarded, limited = "ingress-auth.e2e.example.com", "ingress-limit.e2e.example.com"
	createIngress(t, "guarded", guarded, "ing-a", map[string]string{
		ingress.AnnotationPrefix + "auth-url": fmt.Sprintf("http://ing-b.%s.svc.cluster.local/healthz", namespace),
	})
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		info, code, err := getWithHeader(ctx, c, guarded, "User-Agent", "kube-probe/1.35")
		return err == nil && code == 200 && backendName(info) == "ing-a", nil
	}); err != nil {
		t.Errorf("a request the authorization service admits was not served: %v", err)
	}
	if _, code, _ := getWithHeader(ctx, c, guarded, "User-Agent", "curl/8"); code != http.StatusBadRequest {
		t.Errorf("a request the authorization service refuses: %d, want its 400", code)
	}

	// auth-type basic: the users of an Opaque Secret, which Weir watches
	// by name, so a changed password takes effect without a restart.
	const staff = "ingress-basic-auth.e2e.example.com"
	users := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "staff-users", Namespace: namespace},
		StringData: map[string]string{"auth": shaHtpasswd("alice", "first password")},
	}
	if _, err := kube.Kube.CoreV1().Secrets(namespace).Create(ctx, users, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.Kube.CoreV1().Secrets(namespace).Delete(ctx, "staff-users", metav1.DeleteOptions{}) })
	createIngress(t, "staff", staff, "ing-a", map[string]string{
		ingress.AnnotationPrefix + "auth-type":   "basic",
		ingress.AnnotationPrefix + "auth-secret": "staff-users",
	})
	basic := func(userPass string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(userPass)) }
	admits := func(userPass string, want bool) func(ctx context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			info, code, err := getWithHeader(ctx, c, staff, "Authorization", basic(userPass))
			if want {
				return err == nil && code == 200 && backendName(info) == "ing-a", nil
			}
			return err == nil && code == http.StatusUnauthorized, nil
		}
	}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, admits("alice:first password", true)); err != nil {
		t.Errorf("basic auth: alice was not admitted: %v", err)
	}
	for _, userPass := range []string{"alice:second password", "bob:first password"} {
		if ok, _ := admits(userPass, false)(ctx); !ok {
			t.Errorf("basic auth: %q was not answered 401", userPass)
		}
	}
	if _, code, _ := getWithHeader(ctx, c, staff, "x", "y"); code != http.StatusUnauthorized {
		t.Errorf("basic auth without credentials: %d, want 401", code)
	}
	users.StringData["auth"] = shaHtpasswd("alice", "second password")
	if _, err := kube.Kube.CoreV1().Secrets(namespace).Update(ctx, users, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, admits("alice:first password", false)); err != nil {
		t.Errorf("basic auth: the old password still admits after the Secret changed: %v", err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, admits("alice:second password", true)); err != nil {
		t.Errorf("basic auth: the new password does not admit: %v", err)
	}

	// limit-rpm 1 with a burst multiplier of 1: two requests at once per
	// client and gateway replica, then 503.
	createIngress(t, "limited", limited, "ing-a", map[string]string{
		ingress.AnnotationPrefix + "limit-rpm":              "1",
		ingress.AnnotationPrefix + "limit-burst-multiplier": "1",
	})
	eventually(t, limited, 60*time.Second, fromBackend("ing-a"))
	var codes []int
	for range 10 {
		_, code, _ := getWithHeader(ctx, c, limited, "x", "y")
		codes = append(codes, code)
	}
	if !slices.Contains(codes, http.StatusServiceUnavailable) || slices.ContainsFunc(codes, func(c int) bool { return c != 200 && c != 503 }) {
		t.Errorf("10 requests over limit-rpm 1: %v, want 200s then 503s", codes)
	}

	if _, code, _ := getWithHeader(ctx, c, snippetHost, "x", "y"); code != http.StatusNotFound {
		t.Errorf("the refused Ingress's host answered %d, want 404", code)
	}
	if ing, err := kube.Kube.NetworkingV1().Ingresses(namespace).Get(ctx, "snippet", metav1.GetOptions{}); err != nil || len(ing.Status.LoadBalancer.Ingress) != 0 {
		t.Errorf("the refused Ingress claims to be served: %+v (%v)", ing.Status.LoadBalancer, err)
	}

	// A rolling update of ing-a: a new pod joins the Service, then the
	// old one goes. No request may fail meanwhile.
	p := startProber(t, host, fromBackend("ing-a"))
	p.waitAnswers(t, 50)
	next := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "ing-a-2", Namespace: namespace, Labels: map[string]string{"app": "ing-a"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:  "app",
			Image: "ko.local/runtime:latest",
			Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
			Env:   []corev1.EnvVar{{Name: "PORT", Value: strconv.Itoa(8080)}, {Name: "BACKEND", Value: "ing-a"}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
				HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt(8080)},
			}},
		}}},
	}
	if _, err := kube.Kube.CoreV1().Pods(namespace).Create(ctx, next, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.Kube.CoreV1().Pods(namespace).Delete(ctx, next.Name, metav1.DeleteOptions{}) })
	if err := kube.WaitEndpoints(ctx, namespace, "ing-a", 2, time.Minute); err != nil {
		t.Fatal(err)
	}
	p.waitAnswers(t, 50)
	if err := kube.Kube.CoreV1().Pods(namespace).Delete(ctx, "ing-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := kube.Kube.CoreV1().Pods(namespace).Get(ctx, "ing-a", metav1.GetOptions{})
		return err != nil, nil
	}); err != nil {
		t.Fatal("the old pod was not removed:", err)
	}
	p.waitAnswers(t, 100)
	p.stop(t, 200)
}

// shaHtpasswd is an htpasswd line as `htpasswd -bs` writes it.
func shaHtpasswd(user, password string) string {
	sum := sha1.Sum([]byte(password)) //nolint:gosec // htpasswd's {SHA}
	return user + ":{SHA}" + base64.StdEncoding.EncodeToString(sum[:]) + "\n"
}

// clientCA returns a CA and a client certificate it signed, as PEM, the
// client's as a tls.Certificate.
func clientCA(t *testing.T) (caPEM []byte, client tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "e2e client CA"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "alice"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestIngressClientCertificates: auth-tls-secret makes the gateway's
// HTTPS listener ask the host's clients for a certificate its ca.crt
// signed: with one the backend answers; without one the handshake fails;
// and over a connection opened for another host the request is refused.
func TestIngressClientCertificates(t *testing.T) {
	const host, other = "ingress-mtls.e2e.example.com", "ingress-mtls-open.e2e.example.com"
	ctx := context.Background()
	startBackend(t, "ing-mtls")
	certPEM, keyPEM, pool := selfSigned(t, host)
	otherCert, otherKey, otherPool := selfSigned(t, other)
	caPEM, client := clientCA(t)
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "mtls-server", Namespace: namespace}, Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM}},
		{ObjectMeta: metav1.ObjectMeta{Name: "mtls-open", Namespace: namespace}, Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: otherCert, corev1.TLSPrivateKeyKey: otherKey}},
		{ObjectMeta: metav1.ObjectMeta{Name: "mtls-ca", Namespace: namespace}, Data: map[string][]byte{"ca.crt": caPEM}},
	} {
		if _, err := kube.Kube.CoreV1().Secrets(namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kube.Kube.CoreV1().Secrets(namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}) })
	}
	class, prefix := "weir", netv1.PathTypePrefix
	for _, ing := range []*netv1.Ingress{
		{ObjectMeta: metav1.ObjectMeta{Name: "mtls", Namespace: namespace, Annotations: map[string]string{ingress.AnnotationPrefix + "auth-tls-secret": "mtls-ca"}},
			Spec: netv1.IngressSpec{IngressClassName: &class, TLS: []netv1.IngressTLS{{Hosts: []string{host}, SecretName: "mtls-server"}}, Rules: []netv1.IngressRule{{Host: host, IngressRuleValue: netv1.IngressRuleValue{HTTP: &netv1.HTTPIngressRuleValue{
				Paths: []netv1.HTTPIngressPath{{Path: "/", PathType: &prefix, Backend: netv1.IngressBackend{Service: &netv1.IngressServiceBackend{Name: "ing-mtls", Port: netv1.ServiceBackendPort{Number: 80}}}}},
			}}}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "mtls-open", Namespace: namespace},
			Spec: netv1.IngressSpec{IngressClassName: &class, TLS: []netv1.IngressTLS{{Hosts: []string{other}, SecretName: "mtls-open"}}, Rules: []netv1.IngressRule{{Host: other, IngressRuleValue: netv1.IngressRuleValue{HTTP: &netv1.HTTPIngressRuleValue{
				Paths: []netv1.HTTPIngressPath{{Path: "/", PathType: &prefix, Backend: netv1.IngressBackend{Service: &netv1.IngressServiceBackend{Name: "ing-mtls", Port: netv1.ServiceBackendPort{Number: 80}}}}},
			}}}}}},
	} {
		if _, err := kube.Kube.NetworkingV1().Ingresses(namespace).Create(ctx, ing, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = kube.Kube.NetworkingV1().Ingresses(namespace).Delete(ctx, ing.Name, metav1.DeleteOptions{})
		})
	}
	get := func(ctx context.Context, sni, hostHeader string, roots *x509.CertPool, certs []tls.Certificate) (int, error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: sni, Certificates: certs}}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://%s:%d/", kube.NodeAddress, kube.HTTPSNodePort), nil)
		req.Host = hostHeader
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		code, err := get(ctx, host, host, pool, []tls.Certificate{client})
		return err == nil && code == 200, nil
	}); err != nil {
		t.Fatalf("a client with a certificate of the CA was not served: %v", err)
	}
	if code, err := get(ctx, host, host, pool, nil); err == nil {
		t.Errorf("a client without a certificate got %d, want a failed handshake", code)
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		code, err := get(ctx, other, other, otherPool, nil)
		return err == nil && code == 200, nil
	}); err != nil {
		t.Fatalf("the open host was not served: %v", err)
	}
	// As nginx: 421, so a browser that coalesced the two hosts on one
	// connection opens one for the checked host.
	if code, err := get(ctx, other, host, otherPool, nil); err != nil || code != http.StatusMisdirectedRequest {
		t.Errorf("the checked host over a connection opened for the open one: %d %v, want 421", code, err)
	}
}
