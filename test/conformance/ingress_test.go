package conformance

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"knative.dev/networking/test/conformance/ingress"

	"github.com/weir-dev/weir/pkg/reconciler/kingress"
	"github.com/weir-dev/weir/test/cluster"
)

// gateways is how many weir-proxy pods serve the suite. More than one makes
// the controller's prober wait for every gateway before Ready, as in a
// real cluster.
var gateways = flag.Int("weir-gateways", 2, "number of weir-proxy gateway pods")

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "test/conformance needs root: the pod runner puts each pod in a network namespace. CI runs as root; run `sudo make conformance` elsewhere.")
		return 1
	}
	skips, err := readSkips("SKIPS.md")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the cluster:", err)
		return 1
	}
	defer c.Stop()
	c.StopOnSignal()
	if _, err := c.StartWeir(ctx, cluster.WeirOptions{Gateways: *gateways}); err != nil {
		fmt.Fprintln(os.Stderr, "starting Weir:", err)
		c.DumpLogs(os.Stderr)
		return 1
	}

	// The suite reads these flags (knative.dev/pkg/test and
	// knative.dev/networking/test); the values point it at this cluster.
	for name, value := range map[string]string{
		"kubeconfig":      c.Kubeconfig,
		"ingressendpoint": c.NodeAddress,
		"ingressClass":    kingress.ClassName,
		"enable-beta":     "true",
		"enable-alpha":    "true",
		"dockerrepo":      "ko.local",
		"tag":             "latest",
		"skip-tests":      strings.Join(skips, ","),
	} {
		if err := flag.Set(name, value); err != nil {
			fmt.Fprintf(os.Stderr, "setting the suite's flag -%s: %v\n", name, err)
			return 1
		}
	}

	code := m.Run()
	if code != 0 {
		c.DumpLogs(os.Stderr)
	}
	return code
}

// TestIngressConformance is Knative's ingress conformance suite, stable,
// beta and alpha, unmodified.
func TestIngressConformance(t *testing.T) {
	ingress.RunConformance(t)
}

// readSkips returns the test names listed in SKIPS.md's table. Every skip
// needs a row there with a reason and an issue link.
func readSkips(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "## ") {
			break // the Gateway API suite's table
		}
		cells := strings.Split(strings.TrimSpace(sc.Text()), "|")
		// | `name` | reason | issue |
		if len(cells) != 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
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
