package e2e

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weir-dev/weir/pkg/xdstls"
	"github.com/weir-dev/weir/test/cluster"
)

// TestXDSRefusesStrangers: weir-controller's xDS port, reached as any pod
// would, refuses a plaintext client and a TLS client without a
// certificate before any xDS message, and the shared gateways' own
// identity (read from its Secret, as a pod that stole it would) cannot
// read a Gateway's config. The gateways themselves connect with their
// mounted identities, which every other test depends on.
func TestXDSRefusesStrangers(t *testing.T) {
	ctx := context.Background()
	svc, err := kube.Kube.CoreV1().Services("knative-serving").Get(ctx, "weir-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(svc.Spec.ClusterIP, "18000")
	serverName := cluster.ServiceHost("knative-serving", "weir-controller")
	ask := func(creds credentials.TransportCredentials, node string) error {
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
		if err != nil {
			return err
		}
		if err := stream.Send(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resourcev3.SecretType}); err != nil {
			return err
		}
		resp, err := stream.Recv()
		if err == nil {
			t.Errorf("node %s was served %d secrets", node, len(resp.GetResources()))
		}
		return err
	}

	if err := ask(insecure.NewCredentials(), "stranger"); err == nil || status.Code(err) == codes.PermissionDenied {
		t.Errorf("plaintext: %v, want the connection refused", err)
	}
	if err := ask(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}), "stranger"); err == nil || status.Code(err) == codes.PermissionDenied { //nolint:gosec // a stranger that trusts anything
		t.Errorf("TLS without a client certificate: %v, want the handshake refused", err)
	}

	s, err := kube.Kube.CoreV1().Secrets("weir-system").Get(ctx, "weir-gateway-xds", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range []string{xdstls.CAFile, xdstls.CertFile, xdstls.KeyFile} {
		if err := os.WriteFile(filepath.Join(dir, f), s.Data[f], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := ask(credentials.NewTLS(xdstls.ClientConfig(dir, serverName)), "gateway/"+namespace+"/edge/pod"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the shared identity asking for a Gateway's config: %v, want PermissionDenied", err)
	}
}

// TestXDSCARotation replaces the xDS CA under running gateways: the CA
// Secret is deleted and every controller replica killed. The controllers
// come back with a new CA and reissue the gateways' certificates; the
// gateways, which keep serving meanwhile, read the new certificate and CA
// from their mounted Secret when they reconnect (no restart), and a later
// change is served and Ready through them. Certificates of the old CA are
// then refused, so a reconnect with the old files could not have worked.
func TestXDSCARotation(t *testing.T) {
	const host = "ca-rotation.e2e.example.com"
	ctx := context.Background()
	serveBackend(t, "carot", host)
	p := startProber(t, host, fromBackend("carot"))
	_, holder := ingressLeader(t)
	old, err := kube.Kube.CoreV1().Secrets("knative-serving").Get(ctx, "weir-xds-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restarts := controllerRestarts(t)
	p.waitAnswers(t, 50)

	if err := kube.Kube.CoreV1().Secrets("knative-serving").Delete(ctx, "weir-xds-ca", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range weir.ControllerPods {
		if err := kube.KillPod("knative-serving", name); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range weir.ControllerPods {
		waitRestarted(t, name, restarts[name])
		if err := kube.WaitPodReady(ctx, "knative-serving", name, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	waitNewLeader(t, holder)
	fresh, err := kube.Kube.CoreV1().Secrets("knative-serving").Get(ctx, "weir-xds-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(fresh.Data["tls.crt"]) == string(old.Data["tls.crt"]) {
		t.Fatal("the controllers came back with the old CA")
	}
	// The shared gateways' certificate is reissued from the new CA.
	deadline := time.Now().Add(time.Minute)
	for {
		s, err := kube.Kube.CoreV1().Secrets("weir-system").Get(ctx, "weir-gateway-xds", metav1.GetOptions{})
		if err == nil && string(s.Data[xdstls.CAFile]) == string(fresh.Data["tls.crt"]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shared gateways' certificate was not reissued from the new CA: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A change made now reaches the gateways only over new connections,
	// which the old certificates could not open.
	updateKIngress(t, "carot", kingressSpec(host, "carot", "2"))
	waitReady(t, "carot")
	eventually(t, host, 60*time.Second, specVersion("2"))
	p.stop(t, 200)
}

// TestXDSCertificateWithdrawal: deleting the shared gateways' xDS Secret
// withdraws its certificate with no controller restart: the running
// controllers issue a new one at once, end the streams of the old one,
// and the gateways reconnect with the new one once their mounted Secret
// is refreshed. Traffic through them has no error, and a later change
// reaches them.
func TestXDSCertificateWithdrawal(t *testing.T) {
	const host = "withdrawal.e2e.example.com"
	ctx := context.Background()
	serveBackend(t, "withdraw", host)
	p := startProber(t, host, fromBackend("withdraw"))
	old, err := kube.Kube.CoreV1().Secrets("weir-system").Get(ctx, "weir-gateway-xds", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restarts := controllerRestarts(t)
	p.waitAnswers(t, 50)
	const endedLine = "Closed an xDS connection whose certificate is no longer in force"
	endedBefore := controllersLogged(t, endedLine)

	if err := kube.Kube.CoreV1().Secrets("weir-system").Delete(ctx, "weir-gateway-xds", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		s, err := kube.Kube.CoreV1().Secrets("weir-system").Get(ctx, "weir-gateway-xds", metav1.GetOptions{})
		if err == nil && string(s.Data[xdstls.CertFile]) != string(old.Data[xdstls.CertFile]) {
			if len(s.Data[xdstls.PreviousCertFile]) != 0 {
				t.Error("the new Secret keeps the withdrawn certificate in force")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new certificate was issued after the Secret was deleted: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The controllers close the connections of the withdrawn certificate.
	deadline = time.Now().Add(time.Minute)
	for controllersLogged(t, endedLine) == endedBefore {
		if time.Now().After(deadline) {
			t.Fatal("no controller closed a connection of the withdrawn certificate")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A change made now reaches the gateways only over new connections,
	// which only the new certificate can open.
	updateKIngress(t, "withdraw", kingressSpec(host, "withdraw", "2"))
	waitReady(t, "withdraw")
	eventually(t, host, 60*time.Second, specVersion("2"))
	p.stop(t, 200)
	for name, n := range controllerRestarts(t) {
		if n != restarts[name] {
			t.Errorf("controller %s restarted (%d → %d); the withdrawal must need none", name, restarts[name], n)
		}
	}
}

// controllerRestarts are the restart counts of the weir-controller pods.
func controllerRestarts(t *testing.T) map[string]int32 {
	t.Helper()
	out := map[string]int32{}
	for _, name := range weir.ControllerPods {
		out[name] = restartCount(t, name)
	}
	return out
}

// controllersLogged counts the lines of the weir-controller pods' logs
// that hold s.
func controllersLogged(t *testing.T, s string) int {
	t.Helper()
	n := 0
	for _, name := range weir.ControllerPods {
		b, err := os.ReadFile(kube.PodLog("knative-serving", name))
		if err != nil {
			t.Fatal(err)
		}
		n += strings.Count(string(b), s)
	}
	return n
}
