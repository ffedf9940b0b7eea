package xdstls_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/weir-dev/weir/pkg/xds"
	"github.com/weir-dev/weir/pkg/xdstls"
)

const serverName = "weir-controller.knative-serving.svc"

// writeIdentity writes what a gateway's mounted Secret holds.
func writeIdentity(t *testing.T, caPEM, certPEM, keyPEM []byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string][]byte{xdstls.CAFile: caPEM, xdstls.CertFile: certPEM, xdstls.KeyFile: keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestMutualTLSAndAuthorization: the xDS server refuses, before any xDS
// message, a client without a certificate, with one from another CA, or
// with an expired one; a gateway whose identity is Gateway A's asking for
// Gateway B's node is refused and receives nothing, not B's key; each
// identity reads its own group; and the gateway checks the server's name.
func TestMutualTLSAndAuthorization(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	now := time.Now()
	ca, err := xdstls.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := xdstls.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}

	shared := xds.NewServer(ctx, xds.Options{})
	router := xds.NewRouter(shared, func(string) *xds.Server { return xds.NewServer(ctx, xds.Options{}) })
	router.SetAuthorizer(xdstls.Authorize)
	secret := func(name string) types.Resource {
		return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			PrivateKey: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "KEY OF " + name}},
		}}}
	}
	shared.Apply(map[string][]types.Resource{resourcev3.SecretType: {secret("knative")}})
	router.Group("ns/a").Apply(map[string][]types.Resource{resourcev3.SecretType: {secret("ns/a-cert")}})
	router.Group("ns/b").Apply(map[string][]types.Resource{resourcev3.SecretType: {secret("ns/b-cert")}})

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.ServerConfig([]string{serverName}))))
	router.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)

	// ask opens an ADS stream as node and returns the secrets it gets, or
	// the stream's error.
	ask := func(t *testing.T, conf *tls.Config, node string) ([]string, error) {
		t.Helper()
		conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(conf)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		defer scancel()
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
		if err != nil {
			return nil, err
		}
		if err := stream.Send(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resourcev3.SecretType}); err != nil {
			return nil, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		var names []string
		for _, a := range resp.GetResources() {
			var s tlsv3.Secret
			if err := a.UnmarshalTo(&s); err != nil {
				t.Fatal(err)
			}
			names = append(names, s.GetName())
		}
		return names, nil
	}
	identity := func(t *testing.T, signer *xdstls.CA, group string, issued time.Time) *tls.Config {
		t.Helper()
		certPEM, keyPEM, err := signer.Issue(issued, xdstls.LeafLifetime, xdstls.IdentityOf(group), nil, false)
		if err != nil {
			t.Fatal(err)
		}
		return xdstls.ClientConfig(writeIdentity(t, ca.CertPEM, certPEM, keyPEM), serverName)
	}

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, tc := range []struct {
		name string
		conf *tls.Config
	}{
		{"no client certificate", &tls.Config{RootCAs: pool, ServerName: serverName}},
		{"a certificate from another CA", identity(t, stranger, "ns/b", now)},
		{"an expired certificate", identity(t, ca, "ns/b", now.Add(-2*xdstls.LeafLifetime))},
	} {
		if got, err := ask(t, tc.conf, "gateway/ns/b/pod"); err == nil || status.Code(err) == codes.PermissionDenied {
			t.Errorf("%s: got %v, %v; want the connection refused before any xDS", tc.name, got, err)
		}
	}

	got, err := ask(t, identity(t, ca, "ns/a", now), "gateway/ns/b/pod")
	if status.Code(err) != codes.PermissionDenied || len(got) > 0 || !strings.Contains(err.Error(), "Gateway ns/a") {
		t.Errorf("Gateway ns/a's identity asking for ns/b: %v, %v; want PermissionDenied and nothing", got, err)
	}
	if got, err := ask(t, identity(t, ca, "ns/a", now), "weir-gateway-0"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Gateway ns/a's identity asking for the shared gateways' config: %v, %v", got, err)
	}
	if got, err := ask(t, identity(t, ca, "", now), "gateway/ns/a/pod"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the shared identity asking for Gateway ns/a: %v, %v", got, err)
	}
	for _, tc := range []struct{ group, node, want string }{
		{"ns/b", "gateway/ns/b/pod-1", "ns/b-cert"},
		{"", "weir-gateway-0", "knative"},
	} {
		got, err := ask(t, identity(t, ca, tc.group, now), tc.node)
		if err != nil || len(got) != 1 || got[0] != tc.want {
			t.Errorf("identity %q as %s: %v, %v; want %s", tc.group, tc.node, got, err, tc.want)
		}
	}

	// The gateway refuses a server whose certificate does not name the
	// address it dialled.
	certPEM, keyPEM, err := ca.Issue(now, xdstls.LeafLifetime, xdstls.IdentityOf("ns/b"), nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ask(t, xdstls.ClientConfig(writeIdentity(t, ca.CertPEM, certPEM, keyPEM), "elsewhere.example"), "gateway/ns/b/pod"); err == nil {
		t.Errorf("a server with another name was trusted: %v", got)
	}
}

func TestGroupOfCertificate(t *testing.T) {
	ca, err := xdstls.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, group := range []string{"", "ns/edge"} {
		certPEM, keyPEM, err := ca.Issue(time.Now(), time.Hour, xdstls.IdentityOf(group), nil, false)
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := xdstls.GroupOfCertificate(pair.Leaf); !ok || got != group {
			t.Errorf("identity of %q read back as %q, %v", group, got, ok)
		}
		if ca.NeedsRenewal(certPEM, xdstls.IdentityOf(group), time.Now()) {
			t.Errorf("a fresh certificate of %q needs renewal", group)
		}
		if !ca.NeedsRenewal(certPEM, xdstls.IdentityOf("other/one"), time.Now()) {
			t.Error("a certificate of another identity does not need renewal")
		}
		if !ca.NeedsRenewal(certPEM, xdstls.IdentityOf(group), time.Now().Add(40*time.Minute)) {
			t.Error("a certificate past half its life does not need renewal")
		}
	}
	if !ca.NeedsRenewal([]byte("garbage"), xdstls.IdentityOf(""), time.Now()) {
		t.Error("garbage does not need renewal")
	}
}

// TestEnsureCASecret: the first call makes the CA and stores it; later
// calls (other replicas, restarts) read the same one; a Secret that does
// not hold a CA is an error that says what to do, and its key is not in
// the message.
func TestEnsureCASecret(t *testing.T) {
	ctx := context.Background()
	kube := kubefake.NewSimpleClientset()
	first, err := xdstls.EnsureCASecret(ctx, kube, "knative-serving", "weir-xds-ca")
	if err != nil {
		t.Fatal(err)
	}
	again, err := xdstls.EnsureCASecret(ctx, kube, "knative-serving", "weir-xds-ca")
	if err != nil || !again.Cert.Equal(first.Cert) {
		t.Fatalf("second read: %v, same CA %v", err, err == nil && again.Cert.Equal(first.Cert))
	}
	bad := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "broken", Namespace: "knative-serving"},
		Data: map[string][]byte{corev1.TLSCertKey: first.CertPEM, corev1.TLSPrivateKeyKey: []byte("-----BEGIN EC PRIVATE KEY-----\nc2VjcmV0\n-----END EC PRIVATE KEY-----\n")}}
	if _, err := kube.CoreV1().Secrets("knative-serving").Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = xdstls.EnsureCASecret(ctx, kube, "knative-serving", "broken")
	if err == nil || !strings.Contains(err.Error(), "delete it") || strings.Contains(err.Error(), "c2VjcmV0") {
		t.Errorf("a broken CA Secret: %v", err)
	}
}

// TestEnsureGatewaySecret: a gateway's Secret is made with its identity
// and the CA, left alone while fresh, and renewed past half its life or
// when the CA changed.
func TestEnsureGatewaySecret(t *testing.T) {
	ctx := context.Background()
	kube := kubefake.NewSimpleClientset()
	now := time.Now()
	ca, err := xdstls.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	ensure := func(ca *xdstls.CA, at time.Time) bool {
		t.Helper()
		wrote, err := xdstls.EnsureGatewaySecret(ctx, kube, ca, "weir-system", "edge-xds", "apps/edge", map[string]string{"app": "x"}, map[string]string{"weir.dev/gateway": "apps/edge"}, at)
		if err != nil {
			t.Fatal(err)
		}
		return wrote
	}
	if !ensure(ca, now) {
		t.Fatal("a missing Secret was not made")
	}
	s, err := kube.CoreV1().Secrets("weir-system").Get(ctx, "edge-xds", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(s.Data[xdstls.CertFile], s.Data[xdstls.KeyFile])
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := xdstls.GroupOfCertificate(pair.Leaf); !ok || g != "apps/edge" || string(s.Data[xdstls.CAFile]) != string(ca.CertPEM) || s.Labels[xdstls.IdentityLabel] == "" || s.Type != corev1.SecretTypeTLS {
		t.Errorf("Secret %+v: identity %q %v", s.ObjectMeta, g, ok)
	}
	if ensure(ca, now.Add(time.Hour)) {
		t.Error("a fresh Secret was written again")
	}
	if !ensure(ca, now.Add(xdstls.LeafLifetime*2/3)) {
		t.Error("a Secret past half its life was not renewed")
	}
	other, err := xdstls.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	if !ensure(other, now.Add(xdstls.LeafLifetime*2/3)) {
		t.Error("a Secret from the old CA was not renewed")
	}
	// Another Gateway's data plane name that collides finds the Secret
	// is not its own, and leaves it.
	before, _ := kube.CoreV1().Secrets("weir-system").Get(ctx, "edge-xds", metav1.GetOptions{})
	if _, err := xdstls.EnsureGatewaySecret(ctx, kube, other, "weir-system", "edge-xds", "evil/edge", nil, map[string]string{"weir.dev/gateway": "evil/edge"}, now); err == nil {
		t.Error("a Secret of another owner was taken over")
	}
	after, _ := kube.CoreV1().Secrets("weir-system").Get(ctx, "edge-xds", metav1.GetOptions{})
	if string(after.Data[xdstls.CertFile]) != string(before.Data[xdstls.CertFile]) {
		t.Error("a Secret of another owner was rewritten")
	}
}
