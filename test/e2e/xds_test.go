package e2e

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
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
