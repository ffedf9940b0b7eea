// Package e2e holds end-to-end tests of what Knative's conformance suite
// does not cover: domain conflicts, gateway and controller restarts, and
// leader failover, against a real kube-apiserver (test/cluster) with two
// controller replicas and two weir-proxy gateways.
package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/weir-dev/weir/test/cluster"
)

var (
	kube *cluster.Cluster
	weir *cluster.Weir
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "test/e2e needs root: the pod runner puts each pod in a network namespace. CI runs as root; run `sudo make e2e` elsewhere.")
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
	if weir, err = kube.StartWeir(ctx, cluster.WeirOptions{Controllers: 2, Gateways: 2}); err != nil {
		fmt.Fprintln(os.Stderr, "starting Weir:", err)
		kube.DumpLogs(os.Stderr)
		return 1
	}
	code := m.Run()
	if code != 0 {
		kube.DumpLogs(os.Stderr)
	}
	return code
}
