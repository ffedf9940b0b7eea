// Command cluster-up starts the test/cluster harness (control plane, pod
// runner, weir-controller and gateways), prints how to reach it, and
// stops everything on Ctrl-C. `make cluster-up` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/weir-dev/weir/test/cluster"
)

func main() {
	gateways := flag.Int("gateways", 1, "number of weir-proxy gateway pods")
	controllers := flag.Int("controllers", 1, "number of weir-controller pods (more than one elect a leader)")
	noWeir := flag.Bool("no-weir", false, "start only the control plane and the pod runner")
	workDir := flag.String("work-dir", "", "directory for data, kubeconfig and logs (default: a new temporary directory, removed on exit)")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{WorkDir: *workDir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster-up:", err)
		os.Exit(1)
	}
	// Stop on Ctrl-C or SIGTERM; a second signal kills us outright.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "cluster-up:", err)
		c.DumpLogs(os.Stderr)
		c.Stop()
		os.Exit(1)
	}
	if _, err := c.StartPodRunner(ctx, nil); err != nil {
		fail(err)
	}
	if !*noWeir {
		if _, err := c.StartWeir(ctx, cluster.WeirOptions{Gateways: *gateways, Controllers: *controllers}); err != nil {
			fail(err)
		}
	}
	fmt.Printf(`
The cluster is up.
  export KUBECONFIG=%s
  logs:            %s
  gateway (weir-system/weir): http %s:%d, https %s:%d
  conformance flags: --kubeconfig=%s --ingressendpoint=%s --ingressClass=weir.ingress.networking.knative.dev
Ctrl-C stops it.
`, c.Kubeconfig, c.LogDir(), c.NodeAddress, c.HTTPNodePort, c.NodeAddress, c.HTTPSNodePort, c.Kubeconfig, c.NodeAddress)
	<-sig
	signal.Reset()
	fmt.Println("stopping...")
	c.Stop()
}
