// Package gatewayapi runs the Gateway API conformance suite
// (sigs.k8s.io/gateway-api/conformance, the version in go.mod), unmodified,
// against Weir on test/cluster, and writes the report in the upstream
// format to docs/conformance/.
package gatewayapi

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	"sigs.k8s.io/gateway-api/pkg/features"

	gatewayapi "github.com/weir-dev/weir/pkg/reconciler/gateway"
	"github.com/weir-dev/weir/test/cluster"
)

// Version is the Gateway API version in go.mod, which the report names.
const Version = "v1.5.1"

// className is the GatewayClass the suite's Gateways use.
const className = "weir"

// kube is the cluster the suite runs on. The suite's own flags apply
// (sigs.k8s.io/gateway-api/conformance/utils/flags): -run-test runs one
// test, -report-output writes the report elsewhere.
var kube *cluster.Cluster

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "test/conformance/gatewayapi needs root: the pod runner puts each pod in a network namespace. CI runs as root; run `sudo make gateway-conformance` elsewhere.")
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var err error
	if kube, err = cluster.Start(ctx, cluster.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, "starting the cluster:", err)
		return 1
	}
	defer kube.Stop()
	kube.StopOnSignal()
	// The base manifests run CoreDNS (for UDP routes); the pod runner runs
	// the real one, built from the module proxy.
	coredns, err := cluster.EnsureCoreDNS(ctx, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := kube.StartPodRunner(ctx, map[string]string{"coredns": coredns}); err != nil {
		fmt.Fprintln(os.Stderr, "starting the pod runner:", err)
		return 1
	}
	if _, err := kube.StartWeir(ctx, cluster.WeirOptions{Gateways: 1}); err != nil {
		fmt.Fprintln(os.Stderr, "starting Weir:", err)
		kube.DumpLogs(os.Stderr)
		return 1
	}
	gw, err := gwclient.NewForConfig(kube.Config)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	class := &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: className}, Spec: gwv1.GatewayClassSpec{ControllerName: gatewayapi.ControllerName}}
	if _, err := gw.GatewayV1().GatewayClasses().Create(ctx, class, metav1.CreateOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, "creating the GatewayClass:", err)
		return 1
	}
	// The suite's own client reads the kubeconfig from the environment.
	if err := os.Setenv("KUBECONFIG", kube.Kubeconfig); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	if code != 0 {
		kube.DumpLogs(os.Stderr)
	}
	return code
}

func TestGatewayAPIConformance(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	skips, err := readSkips(filepath.Join(root, "test", "conformance", "SKIPS.md"))
	if err != nil {
		t.Fatal(err)
	}
	opts := conformance.DefaultOptions(t)
	opts.GatewayClassName = className
	opts.ConformanceProfiles = sets.New(suite.GatewayHTTPConformanceProfileName, suite.GatewayGRPCConformanceProfileName, suite.GatewayTLSConformanceProfileName)
	// What the GatewayClass status claims, and nothing else.
	opts.SupportedFeatures = sets.New[features.FeatureName]()
	for _, f := range gatewayapi.SupportedFeatures {
		opts.SupportedFeatures.Insert(features.FeatureName(f))
	}
	opts.SkipTests = skips
	// GatewayStaticAddresses: an address the apiserver will give a
	// Service, and one outside the cluster's Service range.
	opts.UsableNetworkAddresses = []gwv1beta1.GatewaySpecAddress{{Type: ptr.To(gwv1.IPAddressType), Value: kube.StaticServiceIP()}}
	opts.UnusableNetworkAddresses = []gwv1beta1.GatewaySpecAddress{{Type: ptr.To(gwv1.IPAddressType), Value: "192.0.2.1"}}
	opts.CleanupBaseResources = true
	opts.Implementation = confv1.Implementation{
		Organization: "weir-dev",
		Project:      "weir",
		URL:          "https://github.com/weir-dev/weir",
		Version:      "main",
		Contact:      []string{"https://github.com/weir-dev/weir/issues"},
	}
	if opts.ReportOutputPath == "" && opts.RunTest == "" {
		opts.ReportOutputPath = filepath.Join(root, "docs", "conformance", "gateway-api-"+Version+"-report.yaml")
	}
	conformance.RunConformanceWithOptions(t, opts)
}

// readSkips reads the Gateway API table of SKIPS.md: the rows after the
// "## Gateway API" heading, "| `ShortName` | reason | issue |".
func readSkips(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var names []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "## ") {
			in = line == "## Gateway API"
			continue
		}
		cells := strings.Split(line, "|")
		if !in || len(cells) != 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		if strings.TrimSpace(cells[2]) == "" || !strings.Contains(cells[3], "http") {
			return nil, fmt.Errorf("%s: skip %q needs a reason and an issue link", path, name)
		}
		names = append(names, name)
	}
	return names, sc.Err()
}
