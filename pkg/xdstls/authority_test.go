package xdstls_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/weir-dev/weir/pkg/xds"
	"github.com/weir-dev/weir/pkg/xdstls"
)

// gateway is a gateway as the controller sees it: one gRPC connection
// whose certificate and CA are read from dir, its mounted Secret, at each
// handshake, and ADS streams opened on that connection.
type gateway struct {
	t    *testing.T
	dir  string
	conn *grpc.ClientConn
}

func newGateway(t *testing.T, addr string) *gateway {
	t.Helper()
	g := &gateway{t: t, dir: t.TempDir()}
	var err error
	g.conn, err = grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(credentials.NewTLS(xdstls.ClientConfig(g.dir, serverName))),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.2, MaxDelay: 100 * time.Millisecond}, MinConnectTimeout: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.conn.Close() })
	return g
}

// mount writes files as the kubelet does when it refreshes the Secret.
func (g *gateway) mount(caPEM, certPEM, keyPEM []byte) {
	g.t.Helper()
	for name, data := range map[string][]byte{xdstls.CAFile: caPEM, xdstls.CertFile: certPEM, xdstls.KeyFile: keyPEM} {
		if err := os.WriteFile(filepath.Join(g.dir, name), data, 0o600); err != nil {
			g.t.Fatal(err)
		}
	}
}

// open starts an ADS stream as a shared gateway on the gateway's one
// connection, waiting up to wait for it to be ready, and reads the first
// answer; the stream stays open.
func (g *gateway) open(wait time.Duration) (discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient, error) {
	// The stream outlives this call; it is given up if not answered in
	// time.
	ctx, cancel := context.WithCancel(context.Background())
	g.t.Cleanup(cancel)
	timer := time.AfterFunc(wait, cancel)
	defer timer.Stop()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(g.conn).StreamAggregatedResources(ctx, grpc.WaitForReady(true))
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: "weir-gateway-0"}, TypeUrl: resourcev3.SecretType}); err != nil {
		return nil, err
	}
	if _, err := stream.Recv(); err != nil {
		return nil, err
	}
	return stream, nil
}

// TestAuthorityFollowsItsSecrets: the controller follows the CA Secret and
// the gateways' certificate Secrets. A certificate replaced by a renewal
// stays in force for the grace period, and is refused after it; one whose
// Secret was deleted is refused at once; a replaced CA is trusted no more.
// Each refusal happens at the handshake of a new connection, and Enforce
// closes a connection already open, so a gateway that kept its connection
// reconnects with what its Secret holds now, on the same gRPC client.
func TestAuthorityFollowsItsSecrets(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kube := kubefake.NewSimpleClientset()
	const caNS, caName, gwNS, gwSecret = "knative-serving", "weir-xds-ca", "weir-system", "weir-gateway-xds"
	ca, err := xdstls.EnsureCASecret(ctx, kube, caNS, caName)
	if err != nil {
		t.Fatal(err)
	}
	authority := xdstls.NewAuthority(ca)
	refresh := func() (caChanged, changed bool) {
		t.Helper()
		caChanged, changed, err := authority.Refresh(ctx, kube, caNS, caName, gwNS)
		if err != nil {
			t.Fatal(err)
		}
		return caChanged, changed
	}
	now := time.Now()
	// issue keeps the shared gateways' Secret as the controller does at
	// time at, and returns what it holds.
	type files struct{ ca, cert, key []byte }
	issue := func(at time.Time) files {
		t.Helper()
		if _, err := authority.EnsureGatewaySecret(ctx, kube, gwNS, gwSecret, "", nil, nil, at); err != nil {
			t.Fatal(err)
		}
		s, err := kube.CoreV1().Secrets(gwNS).Get(ctx, gwSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return files{s.Data[xdstls.CAFile], s.Data[xdstls.CertFile], s.Data[xdstls.KeyFile]}
	}

	shared := xds.NewServer(ctx, xds.Options{})
	shared.Apply(map[string][]types.Resource{resourcev3.SecretType: {&tlsv3.Secret{Name: "knative"}}})
	router := xds.NewRouter(shared, func(string) *xds.Server { return xds.NewServer(ctx, xds.Options{}) })
	router.SetAuthorizer(authority.Authorize)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(authority.ServerCredentials([]string{serverName})))
	router.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	gw := newGateway(t, lis.Addr().String())
	mount := func(g *gateway, f files) { g.mount(f.ca, f.cert, f.key) }
	admitted := func(what string, g *gateway) discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
		t.Helper()
		s, err := g.open(10 * time.Second)
		if err != nil {
			t.Fatalf("%s: %v; want it admitted", what, err)
		}
		return s
	}
	refused := func(what string, f files) {
		t.Helper()
		g := newGateway(t, lis.Addr().String())
		mount(g, f)
		if _, err := g.open(500 * time.Millisecond); err == nil {
			t.Errorf("%s: admitted; want the handshake refused", what)
		}
	}
	// closed checks that Enforce closes the gateway's connection, and
	// only it: its open stream ends.
	closed := func(what string, stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient, why string) {
		t.Helper()
		errs := authority.Enforce()
		if len(errs) != 1 || !strings.Contains(errs[0].Error(), why) {
			t.Fatalf("%s: Enforce closed %v; want the gateway's one connection (%s)", what, errs, why)
		}
		if _, err := stream.Recv(); err == nil {
			t.Errorf("%s: the open stream goes on", what)
		}
	}

	first := issue(now.Add(-60 * 24 * time.Hour))
	if _, changed := refresh(); !changed {
		t.Fatal("the first certificate was not read")
	}
	mount(gw, first)
	firstStream := admitted("the first certificate", gw)

	// A renewal: the replaced certificate stays in force for a while.
	second := issue(now)
	if caChanged, changed := refresh(); caChanged || !changed {
		t.Fatalf("after a renewal: CA changed %v, certificates changed %v", caChanged, changed)
	}
	if errs := authority.Enforce(); len(errs) != 0 {
		t.Errorf("a renewal in its grace period closed %v", errs)
	}
	admitted("a certificate in its grace period, on its open connection", gw)

	// The grace period ends (as the annotation says, which every replica
	// reads): the replaced certificate is refused, and the gateway's
	// connection closed. Once the kubelet has written the new files, the
	// gateway's next stream, on the same gRPC client, gets in.
	s, err := kube.CoreV1().Secrets(gwNS).Get(ctx, gwSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if until, err := time.Parse(time.RFC3339, s.Annotations[xdstls.PreviousUntilAnnotation]); err != nil || until.Sub(now) > xdstls.WithdrawalGrace+time.Second || until.Before(now) {
		t.Fatalf("the previous certificate is in force until %q", s.Annotations[xdstls.PreviousUntilAnnotation])
	}
	s.Annotations[xdstls.PreviousUntilAnnotation] = now.Add(-time.Second).UTC().Format(time.RFC3339)
	if _, err := kube.CoreV1().Secrets(gwNS).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	refresh()
	closed("past the grace period", firstStream, "withdrawn")
	refused("a certificate replaced past the grace period", first)
	mount(gw, second)
	secondStream := admitted("the renewed certificate, after the kubelet wrote it", gw)

	// Deleting the Secret withdraws its certificate at once, even before
	// a new one is made.
	if err := kube.CoreV1().Secrets(gwNS).Delete(ctx, gwSecret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	refresh()
	closed("the Secret deleted", secondStream, "withdrawn")
	refused("a certificate whose Secret was deleted", second)
	third := issue(time.Now())
	mount(gw, third)
	thirdStream := admitted("the certificate made after the deletion, before it was read", gw)
	refresh()
	refused("a certificate whose Secret was deleted and made again", second)

	// A new CA: nothing from the old one is trusted, even by a gateway
	// that already trusts the new CA's server certificate.
	if err := kube.CoreV1().Secrets(caNS).Delete(ctx, caName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if caChanged, _ := refresh(); !caChanged {
		t.Fatal("a new CA was not followed")
	}
	closed("the CA replaced", thirdStream, "current xDS CA")
	newCA := authority.CA()
	refused("a certificate from the replaced CA", files{newCA.CertPEM, third.cert, third.key})
	fourth := issue(now)
	mount(gw, fourth)
	admitted("a certificate from the new CA, on the same gRPC client", gw)
}

// TestEnsureGatewaySecretConfirmsTheCA: a replica that has not read a new
// CA yet does not put a gateway's Secret back on the old one.
func TestEnsureGatewaySecretConfirmsTheCA(t *testing.T) {
	ctx := context.Background()
	kube := kubefake.NewSimpleClientset()
	ca, err := xdstls.EnsureCASecret(ctx, kube, "knative-serving", "weir-xds-ca")
	if err != nil {
		t.Fatal(err)
	}
	lagging := xdstls.NewAuthority(ca)
	if _, _, err := lagging.Refresh(ctx, kube, "knative-serving", "weir-xds-ca", "weir-system"); err != nil {
		t.Fatal(err)
	}
	// Another replica replaces the CA and reissues.
	if err := kube.CoreV1().Secrets("knative-serving").Delete(ctx, "weir-xds-ca", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	current := xdstls.NewAuthority(ca)
	if _, _, err := current.Refresh(ctx, kube, "knative-serving", "weir-xds-ca", "weir-system"); err != nil {
		t.Fatal(err)
	}
	if _, err := current.EnsureGatewaySecret(ctx, kube, "weir-system", "weir-gateway-xds", "", nil, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := lagging.EnsureGatewaySecret(ctx, kube, "weir-system", "weir-gateway-xds", "", nil, nil, time.Now()); err == nil || !strings.Contains(err.Error(), "has not read it yet") {
		t.Errorf("a lagging replica rewrote the Secret: %v", err)
	}
	s, err := kube.CoreV1().Secrets("weir-system").Get(ctx, "weir-gateway-xds", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(s.Data[xdstls.CAFile]) != string(current.CA().CertPEM) {
		t.Error("the gateway's Secret is back on the old CA")
	}
}
