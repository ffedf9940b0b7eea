package xdstls_test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/weir-dev/weir/pkg/xds"
	"github.com/weir-dev/weir/pkg/xdstls"
)

// TestAuthorityFollowsItsSecrets: the controller follows the CA Secret and
// the gateways' certificate Secrets. A certificate replaced by a renewal
// stays in force for the grace period, and is refused after it; one whose
// Secret was deleted and made again is refused at once; a replaced CA is
// trusted no more. Each refusal happens at the handshake for a new
// connection, and ends a stream already open (Router.Reauthorize), while
// the new certificate is admitted.
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
	// issue keeps the shared gateways' Secret from the current CA as
	// EnsureGatewaySecret does at time at, and returns the gateway's TLS
	// as it mounts that Secret.
	issue := func(at time.Time) *tls.Config {
		t.Helper()
		if _, err := xdstls.EnsureGatewaySecret(ctx, kube, authority.CA(), gwNS, gwSecret, "", nil, nil, at); err != nil {
			t.Fatal(err)
		}
		s, err := kube.CoreV1().Secrets(gwNS).Get(ctx, gwSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return xdstls.ClientConfig(writeIdentity(t, s.Data[xdstls.CAFile], s.Data[xdstls.CertFile], s.Data[xdstls.KeyFile]), serverName)
	}

	shared := xds.NewServer(ctx, xds.Options{})
	shared.Apply(map[string][]types.Resource{resourcev3.SecretType: {&tlsv3.Secret{Name: "knative"}}})
	router := xds.NewRouter(shared, func(string) *xds.Server { return xds.NewServer(ctx, xds.Options{}) })
	router.SetAuthorizer(authority.Authorize)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(authority.ServerConfig([]string{serverName}))))
	router.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)

	// open starts an ADS stream as a shared gateway and reads its first
	// answer; the stream stays open.
	open := func(conf *tls.Config) (discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient, error) {
		t.Helper()
		conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(conf)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
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
	admitted := func(what string, conf *tls.Config) discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
		t.Helper()
		s, err := open(conf)
		if err != nil {
			t.Fatalf("%s: %v; want it admitted", what, err)
		}
		return s
	}
	refused := func(what string, conf *tls.Config) {
		t.Helper()
		if _, err := open(conf); err == nil || status.Code(err) == codes.PermissionDenied {
			t.Errorf("%s: %v; want the handshake refused", what, err)
		}
	}
	// ended checks that Reauthorize ended stream, and only it.
	ended := func(what string, stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient) {
		t.Helper()
		errs := router.Reauthorize()
		if len(errs) != 1 || !strings.Contains(errs[0].Error(), "current xDS CA") {
			t.Fatalf("%s: Reauthorize ended %v; want one stream", what, errs)
		}
		if _, err := stream.Recv(); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: the open stream got %v; want it ended with PermissionDenied", what, err)
		}
	}

	first := issue(now.Add(-60 * 24 * time.Hour))
	if _, changed := refresh(); !changed {
		t.Fatal("the first certificate was not read")
	}
	firstStream := admitted("the first certificate", first)

	// A renewal: the replaced certificate stays in force for a while.
	second := issue(now)
	if caChanged, changed := refresh(); caChanged || !changed {
		t.Fatalf("after a renewal: CA changed %v, certificates changed %v", caChanged, changed)
	}
	if errs := router.Reauthorize(); len(errs) != 0 {
		t.Errorf("a renewal in its grace period ended %v", errs)
	}
	admitted("a certificate in its grace period", first)
	secondStream := admitted("the renewed certificate", second)

	// The grace period ends (as the annotation says, which every replica
	// reads): the replaced certificate is refused.
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
	if _, changed := refresh(); !changed {
		t.Fatal("the end of the grace period was not read")
	}
	// Two streams of the first certificate are open.
	if errs := router.Reauthorize(); len(errs) != 2 || !strings.Contains(errs[0].Error(), "withdrawn") {
		t.Fatalf("past the grace period, Reauthorize ended %v; want the first certificate's 2 streams", errs)
	}
	if _, err := firstStream.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the first certificate's open stream got %v; want it ended with PermissionDenied", err)
	}
	refused("a certificate replaced past the grace period", first)
	admitted("the renewed certificate, still", second)

	// Deleting the Secret withdraws its certificate at once.
	if err := kube.CoreV1().Secrets(gwNS).Delete(ctx, gwSecret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	third := issue(now)
	refresh()
	refused("a certificate whose Secret was deleted", second)
	if errs := router.Reauthorize(); len(errs) != 2 {
		// The second certificate's two open streams.
		t.Errorf("after the Secret was deleted, Reauthorize ended %v; want 2 streams", errs)
	}
	if _, err := secondStream.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the second certificate's stream: %v", err)
	}
	thirdStream := admitted("the certificate made after the deletion", third)

	// A new CA: nothing from the old one is trusted, and the gateways'
	// certificates from the new one are.
	if err := kube.CoreV1().Secrets(caNS).Delete(ctx, caName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if caChanged, _ := refresh(); !caChanged {
		t.Fatal("a new CA was not followed")
	}
	refused("a certificate from the replaced CA", third)
	ended("a stream of a certificate from the replaced CA", thirdStream)
	admitted("a certificate from the new CA", issue(now))
	refresh()

	// A certificate issued after the Secrets were last read is newer than
	// any known to be in force: it is admitted before the next refresh.
	if err := kube.CoreV1().Secrets(gwNS).Delete(ctx, gwSecret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	admitted("a certificate issued since the last refresh", issue(now.Add(2*time.Second)))
}
