// Package e2e holds end-to-end tests of what Knative's conformance suite
// does not cover: domain conflicts, gateway and controller restarts, and
// leader failover, against a real kube-apiserver (test/cluster) with two
// controller replicas and two weir-proxy gateways.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
	// After every test, TLS ones included: no process may have logged a
	// private key (docs/security.md).
	if leaks, scanned, err := privateKeysIn(kube.LogDir()); err != nil || scanned == 0 || len(leaks) > 0 {
		fmt.Fprintf(os.Stderr, "scanning the cluster's logs for private keys (%d files): %v; found in: %v\n", scanned, err, leaks)
		return 1
	}
	return code
}

// privateKeysIn returns "file:line" for each line of the logs under dir
// that holds a PEM private key's header, and how many files it read.
func privateKeysIn(dir string) (leaks []string, scanned int, err error) {
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		scanned++
		for i, line := range bytes.Split(b, []byte("\n")) {
			if bytes.Contains(line, []byte("PRIVATE KEY-----")) {
				leaks = append(leaks, fmt.Sprintf("%s:%d", filepath.Base(path), i+1))
			}
		}
		return nil
	})
	return leaks, scanned, err
}

func TestPrivateKeysInFindsPEMKeys(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "clean.log"), []byte("ok\n-----BEGIN CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "leak.log"), []byte("a\nb\n{\"key\":\"-----BEGIN EC PRIVATE KEY-----\\nMHc...\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	leaks, scanned, err := privateKeysIn(dir)
	if err != nil || scanned != 2 || len(leaks) != 1 || leaks[0] != "leak.log:3" {
		t.Errorf("privateKeysIn = %v, %d files, %v; want [leak.log:3], 2 files", leaks, scanned, err)
	}
}
