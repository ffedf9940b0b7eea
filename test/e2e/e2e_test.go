package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

func specVersion(v string) func(runtimeInfo) error {
	return func(info runtimeInfo) error {
		if got := info.Request.Headers.Values("X-Spec-Version"); len(got) != 1 || got[0] != v {
			return fmt.Errorf("X-Spec-Version = %v, want %s", got, v)
		}
		return nil
	}
}

func both(checks ...func(runtimeInfo) error) func(runtimeInfo) error {
	return func(info runtimeInfo) error {
		for _, c := range checks {
			if err := c(info); err != nil {
				return err
			}
		}
		return nil
	}
}

// TestDomainConflict: a second KIngress claiming a host that another one
// serves is refused with DomainConflict, naming the host and the owner; the
// first keeps serving; once the first is deleted the second takes over.
func TestDomainConflict(t *testing.T) {
	const host = "conflict.e2e.example.com"
	startBackend(t, "conflict-a")
	startBackend(t, "conflict-b")
	createKIngress(t, "conflict-first", kingressSpec(host, "conflict-a", "1"))
	waitReady(t, "conflict-first")
	eventually(t, host, 30*time.Second, fromBackend("conflict-a"))

	// Creation timestamps have one-second resolution and the model orders
	// claims by age: the second claim must be created in a later second.
	first, err := kube.Networking.NetworkingV1alpha1().Ingresses(namespace).Get(context.Background(), "conflict-first", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for !time.Now().Truncate(time.Second).After(first.CreationTimestamp.Time) {
		time.Sleep(time.Until(first.CreationTimestamp.Add(time.Second))) // the clock is the event
	}
	createKIngress(t, "conflict-second", kingressSpec(host, "conflict-b", "1"))
	second := waitKIngress(t, "conflict-second", time.Minute, "failed with DomainConflict", func(ing *v1alpha1.Ingress) bool {
		c := ing.Status.GetCondition(v1alpha1.IngressConditionLoadBalancerReady)
		return c != nil && c.IsFalse() && c.Reason == "DomainConflict"
	})
	msg := second.Status.GetCondition(v1alpha1.IngressConditionLoadBalancerReady).Message
	if !strings.Contains(msg, host) || !strings.Contains(msg, "conflict-first") {
		t.Errorf("DomainConflict message %q should name the host %s and the KIngress that has it", msg, host)
	}

	// The first one is untouched and still gets all the traffic.
	first, err = kube.Networking.NetworkingV1alpha1().Ingresses(namespace).Get(context.Background(), "conflict-first", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !first.IsReady() {
		t.Errorf("conflict-first lost Ready: %+v", first.Status)
	}
	p := startProber(t, host, fromBackend("conflict-a"))
	p.waitAnswers(t, 100)
	p.stop(t, 20)

	if err := kube.Networking.NetworkingV1alpha1().Ingresses(namespace).Delete(context.Background(), "conflict-first", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReady(t, "conflict-second")
	eventually(t, host, 30*time.Second, fromBackend("conflict-b"))
}

// TestGatewayRollingRestart replaces every gateway pod, one at a time, the
// way a Deployment's rolling update does, while a prober runs: it must see
// no error. Afterwards the controller's readiness prober must find the new
// gateways, so a spec change becomes Ready again.
func TestGatewayRollingRestart(t *testing.T) {
	const host = "gateway-restart.e2e.example.com"
	serveBackend(t, "gwr", host)

	ctx := context.Background()
	p := startProber(t, host, fromBackend("gwr"))
	p.waitAnswers(t, 50)
	old := append([]string(nil), weir.GatewayPods...)
	for i, name := range old {
		replacement := fmt.Sprintf("weir-gateway-r%d-%d", time.Now().Unix()%100000, i)
		if err := weir.AddGateway(ctx, replacement); err != nil {
			t.Fatal(err)
		}
		p.waitAnswers(t, 50) // through the Service with the new gateway in it
		t0 := time.Now()
		if err := weir.DeleteGateway(ctx, name); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s replaced by %s; its drain took %v", name, replacement, time.Since(t0).Round(time.Millisecond))
		p.waitAnswers(t, 50) // through the Service without the old one
	}
	p.stop(t, 200)

	updateKIngress(t, "gwr", kingressSpec(host, "gwr", "2"))
	waitReady(t, "gwr")
	eventually(t, host, 30*time.Second, both(fromBackend("gwr"), specVersion("2")))
}

// TestControllerRestart kills every controller replica at once. The
// gateways keep serving their last configuration meanwhile, the KIngress
// stays Ready, and the gateways resync once the controllers are back: a
// later change is served and Ready.
func TestControllerRestart(t *testing.T) {
	const host = "controller-restart.e2e.example.com"
	serveBackend(t, "ctrlr", host)

	p := startProber(t, host, fromBackend("ctrlr"))
	stopWatch := watchReady(t, "ctrlr")
	_, holder := ingressLeader(t)
	restarts := map[string]int32{}
	for _, name := range weir.ControllerPods {
		restarts[name] = restartCount(t, name)
	}
	p.waitAnswers(t, 50)
	for _, name := range weir.ControllerPods {
		if err := kube.KillPod("knative-serving", name); err != nil {
			t.Fatal(err)
		}
	}
	// Every replica comes back (the pod runner restarts it) and one of the
	// new processes takes the lease; then the new leader has reconciled,
	// and re-probed, every KIngress.
	for _, name := range weir.ControllerPods {
		waitRestarted(t, name, restarts[name])
		if err := kube.WaitPodReady(context.Background(), "knative-serving", name, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	waitNewLeader(t, holder)
	// The new leader's re-probe leaves no trace in the API when nothing
	// changes; the watch spans it while the gateways keep answering.
	p.waitAnswers(t, 500)
	stopWatch()
	updateKIngress(t, "ctrlr", kingressSpec(host, "ctrlr", "2"))
	waitReady(t, "ctrlr")
	eventually(t, host, 30*time.Second, specVersion("2"))
	p.stop(t, 200)
}

// TestLeaderFailover kills the leader of the KIngress reconciler. Traffic
// goes on, the other replica takes over the lease, and status is still
// written: a spec change made after the kill becomes Ready.
func TestLeaderFailover(t *testing.T) {
	const host = "leader-failover.e2e.example.com"
	serveBackend(t, "leader", host)

	leaseName, holder := ingressLeader(t)
	pod, _, _ := strings.Cut(holder, "_")
	t.Logf("lease %s is held by %s", leaseName, holder)

	p := startProber(t, host, fromBackend("leader"))
	p.waitAnswers(t, 50)
	t0 := time.Now()
	if err := kube.KillPod("knative-serving", pod); err != nil {
		t.Fatal(err)
	}
	updateKIngress(t, "leader", kingressSpec(host, "leader", "2"))
	// The lease lasts 15s in test/cluster's config-leader-election.
	waitKIngress(t, "leader", 90*time.Second, "Ready", (*v1alpha1.Ingress).IsReady)
	t.Logf("status of the new generation written %v after the leader was killed", time.Since(t0).Round(time.Millisecond))
	eventually(t, host, 30*time.Second, specVersion("2"))
	if _, now := ingressLeader(t); now == holder {
		t.Errorf("lease still held by the killed process %s", holder)
	}
	p.stop(t, 200)
}

// restartCount is how often the pod runner restarted a controller pod.
func restartCount(t *testing.T, pod string) int32 {
	t.Helper()
	p, err := kube.Kube.CoreV1().Pods("knative-serving").Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Status.ContainerStatuses) == 0 {
		return 0
	}
	return p.Status.ContainerStatuses[0].RestartCount
}

func waitRestarted(t *testing.T, pod string, before int32) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return restartCount(t, pod) > before, nil
	})
	if err != nil {
		t.Fatalf("controller pod %s was not restarted after it was killed", pod)
	}
}

// waitNewLeader waits until a process other than old holds the KIngress
// reconciler's lease.
func waitNewLeader(t *testing.T, old string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 90*time.Second, true, func(context.Context) (bool, error) {
		_, holder := ingressLeader(t)
		return holder != old, nil
	})
	if err != nil {
		t.Fatalf("the lease is still held by the killed process %s", old)
	}
}

// ingressLeader returns the Lease of the KIngress reconciler and its
// holder ("pod_uuid", Knative's leader identity).
func ingressLeader(t *testing.T) (string, string) {
	t.Helper()
	var name, holder string
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		leases, err := kube.Kube.CoordinationV1().Leases("knative-serving").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, l := range leases.Items {
			if strings.HasPrefix(l.Name, "weir-controller.") && strings.Contains(l.Name, "ingress") &&
				l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
				name, holder = l.Name, *l.Spec.HolderIdentity
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatal("no weir-controller Lease for the KIngress reconciler has a holder")
	}
	return name, holder
}

// TestTLSSecretMustBeLabeled: weir-controller watches only Secrets with
// Knative's certificate label. A KIngress whose Secret lacks it says how to
// fix that; once labeled, the certificate is served over TLS with SNI.
func TestTLSSecretMustBeLabeled(t *testing.T) {
	const host = "tls-label.e2e.example.com"
	ctx := context.Background()
	startBackend(t, "tlslabel")
	certPEM, keyPEM, pool := selfSigned(t, host)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "tls-label", Namespace: namespace},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
	}
	if _, err := kube.Kube.CoreV1().Secrets(namespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.Kube.CoreV1().Secrets(namespace).Delete(ctx, secret.Name, metav1.DeleteOptions{}) })

	spec := kingressSpec(host, "tlslabel", "1")
	spec.TLS = []v1alpha1.IngressTLS{{Hosts: []string{host}, SecretName: secret.Name, SecretNamespace: namespace}}
	createKIngress(t, "tlslabel", spec)
	failed := waitKIngress(t, "tlslabel", time.Minute, "failed with SecretNotFound", func(ing *v1alpha1.Ingress) bool {
		c := ing.Status.GetCondition(v1alpha1.IngressConditionLoadBalancerReady)
		return c != nil && c.IsFalse() && c.Reason == "SecretNotFound"
	})
	msg := failed.Status.GetCondition(v1alpha1.IngressConditionLoadBalancerReady).Message
	if want := "kubectl label secret -n " + namespace + " tls-label networking.internal.knative.dev/certificate-uid=tls-label"; !strings.Contains(msg, want) {
		t.Errorf("SecretNotFound message %q does not say %q", msg, want)
	}

	secret, err := kube.Kube.CoreV1().Secrets(namespace).Get(ctx, secret.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	secret.Labels = map[string]string{"networking.internal.knative.dev/certificate-uid": "tls-label"}
	if _, err := kube.Kube.CoreV1().Secrets(namespace).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReady(t, "tlslabel")

	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host}}}
	var lastErr error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("https://%s:%d/", kube.NodeAddress, kube.HTTPSNodePort), nil)
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 &&
			resp.TLS.PeerCertificates[0].DNSNames[0] == host {
			return
		}
		lastErr = fmt.Errorf("status %s", resp.Status)
	}
	t.Fatalf("https://%s through the gateway: %v", host, lastErr)
}

// selfSigned returns a certificate for host, its key and a pool trusting it.
func selfSigned(t *testing.T, host string) (certPEM, keyPEM []byte, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), pool
}

// TestNotServedIsNotReady: the controller reports what translate leaves
// out on the KIngress itself, with the field and the reason, instead of
// waiting for a probe that would never succeed: a host with the Kelvin
// sign, which Unicode folding would turn into another host, is refused.
// When the host is fixed, the KIngress becomes Ready and is served.
func TestNotServedIsNotReady(t *testing.T) {
	const host = "not-served.e2e.example.com"
	serveBackend(t, "notserved", host)
	// serveBackend made it Ready; now give its rule a second host that
	// Envoy would fold apart from the ASCII one Go would fold it into.
	spec := kingressSpec(host, "notserved", "2")
	spec.Rules[0].Hosts = append(spec.Rules[0].Hosts, "\u212Aelvin.e2e.example.com")
	updateKIngress(t, "notserved", spec)
	ing := waitKIngress(t, "notserved", time.Minute, "failed with InvalidHost", func(ing *v1alpha1.Ingress) bool {
		c := ing.Status.GetCondition(v1alpha1.IngressConditionLoadBalancerReady)
		return ing.Status.ObservedGeneration == ing.Generation && c != nil && c.IsFalse() && c.Reason == "InvalidHost"
	})
	msg := ing.Status.GetCondition(v1alpha1.IngressConditionLoadBalancerReady).Message
	if !strings.Contains(msg, "spec.rules[0]") || !strings.Contains(msg, "not ASCII") {
		t.Errorf("condition message %q, want the field and the reason", msg)
	}
	// The valid host is still served, at the new version.
	eventually(t, host, 30*time.Second, both(fromBackend("notserved"), specVersion("2")))

	updateKIngress(t, "notserved", kingressSpec(host, "notserved", "3"))
	waitReady(t, "notserved")
	eventually(t, host, 30*time.Second, both(fromBackend("notserved"), specVersion("3")))
}
