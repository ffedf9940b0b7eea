// Package cluster runs a small but real Kubernetes control plane on this
// machine, without Docker or a kubelet, for Weir's end-to-end and Knative
// conformance tests:
//
//   - etcd, kube-apiserver and kube-controller-manager (only the
//     EndpointSlice controllers), built by hack/build-k8s.sh;
//   - a service proxy (our kube-proxy): every Service's ClusterIP:port and
//     every node port on 127.0.0.1, forwarded to ready endpoints;
//   - a pod runner (our kubelet): Knative's test images and Weir's commands
//     as processes, each pod in a network namespace of its own;
//   - Weir itself: weir-controller and weir-proxy gateways, run as pods of
//     the config/ manifests.
//
// Start brings up the control plane, StartPodRunner the kubelet, StartWeir
// the controller and gateways; Stop (or the test's Cleanup) ends them all.
// It needs root (network namespaces). See README.md in this directory.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	netclient "knative.dev/networking/pkg/client/clientset/versioned"
)

// Options configure Start.
type Options struct {
	// Progress receives build progress and harness messages (default
	// os.Stderr).
	Progress io.Writer
	// WorkDir holds etcd's data, certificates, kubeconfigs, pod files and
	// process logs. Empty means a new temporary directory.
	WorkDir string
	// KeepWorkDir keeps WorkDir after Stop, for its logs.
	KeepWorkDir bool
}

// Cluster is a running control plane.
type Cluster struct {
	// Kubeconfig is an admin (system:masters) kubeconfig for the host.
	Kubeconfig string
	// WorkDir holds data, certificates, pod files and logs (logs/).
	WorkDir string
	// Config, Kube and Networking talk to the apiserver as admin.
	Config     *rest.Config
	Kube       kubernetes.Interface
	Networking netclient.Interface
	// NodeName is the fake node that pods run on.
	NodeName string
	// NodeAddress is where node ports are served: 127.0.0.1.
	NodeAddress string
	// HTTPNodePort and HTTPSNodePort are weir-system/weir's node ports for
	// ports 80 and 443: the suite's --ingressendpoint=127.0.0.1 dials them.
	HTTPNodePort, HTTPSNodePort int

	opts      Options
	net       *network
	logDir    string
	caFile    string
	kubelet   *kubeletPKI
	token     string
	apiPort   int
	ctx       context.Context
	cancel    context.CancelFunc
	informers informers.SharedInformerFactory
	proxy     *serviceProxy
	runner    *PodRunner

	mu       sync.Mutex
	procs    []*process // control plane, in start order
	stopOnce sync.Once
}

// Start builds (or finds cached) binaries and starts etcd, kube-apiserver,
// kube-controller-manager and the service proxy, then installs the KIngress
// CRD, the namespaces, Knative's ConfigMaps, Weir's config/ objects and the
// Node. On error everything started so far is stopped.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Progress == nil {
		opts.Progress = os.Stderr
	}
	bin, err := EnsureKubernetes(ctx, opts.Progress)
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, NodeName: "weir-node", NodeAddress: "127.0.0.1"}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if c.net, err = newNetwork(); err != nil {
		return nil, err
	}
	c.WorkDir = opts.WorkDir
	if c.WorkDir == "" {
		if c.WorkDir, err = os.MkdirTemp("", "weir-cluster-"); err != nil {
			return nil, err
		}
	}
	c.logDir = filepath.Join(c.WorkDir, "logs")
	if err := os.MkdirAll(c.logDir, 0o755); err != nil {
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.HTTPNodePort, c.HTTPSNodePort = c.net.nodePortBase()+80, c.net.nodePortBase()+43

	t0 := time.Now()
	etcdURL, err := c.startEtcd(ctx, bin)
	if err != nil {
		return nil, err
	}
	if err := c.startAPIServer(ctx, bin, etcdURL); err != nil {
		return nil, err
	}
	if err := c.startControllerManager(bin); err != nil {
		return nil, err
	}
	if err := c.bootstrap(ctx); err != nil {
		return nil, fmt.Errorf("installing the cluster's objects: %w", err)
	}
	c.informers = informers.NewSharedInformerFactory(c.Kube, 0)
	c.proxy = newServiceProxy(c)
	c.informers.Start(c.ctx.Done())
	for typ, ok := range c.informers.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, fmt.Errorf("informer for %v did not sync", typ)
		}
	}
	go c.proxy.run(c.ctx)
	c.logf("control plane up in %v (index %d, kubeconfig %s)", time.Since(t0).Round(time.Millisecond), c.net.index, c.Kubeconfig)
	return c, nil
}

// StartForTest starts a cluster that is stopped when the test ends, and
// whose process logs are printed if it failed.
func StartForTest(t testing.TB, opts Options) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.DumpLogs(os.Stderr)
		}
		c.Stop()
	})
	return c
}

// StopOnSignal stops the cluster and exits when the process gets SIGINT or
// SIGTERM (Ctrl-C, a killed job), so no pod network or process outlives a
// test binary stopped early. go test's -timeout panics instead: the
// processes still die with it (Pdeathsig), and the next cluster on the same
// index removes the network left behind.
func (c *Cluster) StopOnSignal() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		c.logf("got %v: stopping the cluster", s)
		c.Stop()
		os.Exit(1)
	}()
}

func (c *Cluster) logf(format string, args ...any) {
	fmt.Fprintf(c.opts.Progress, "[cluster %s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// Stop ends every process the cluster started (pods, Weir, control plane),
// removes the pod network and, unless KeepWorkDir, the work directory. It
// is safe to call more than once.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		if c.cancel != nil {
			c.cancel()
		}
		if c.runner != nil {
			c.runner.stopAll()
		}
		if c.proxy != nil {
			c.proxy.close()
		}
		c.mu.Lock()
		procs := c.procs
		c.procs = nil
		c.mu.Unlock()
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop(10 * time.Second)
		}
		if c.net != nil {
			c.net.teardown()
		}
		if c.WorkDir != "" && c.opts.WorkDir == "" && !c.opts.KeepWorkDir {
			_ = os.RemoveAll(c.WorkDir)
		}
	})
}

// DumpLogs writes the end of every process log (control plane, Weir and
// pods) to w.
func (c *Cluster) DumpLogs(w io.Writer) {
	files, _ := filepath.Glob(filepath.Join(c.logDir, "*.log"))
	for _, f := range files {
		fmt.Fprintf(w, "===== %s\n%s\n", f, tail(f, 40))
	}
}

// StaticServiceIP is an address of the Service range that the apiserver
// never hands out on its own: it allocates from the upper part of the range
// first and keeps the lowest sixteenth (16 addresses of a /24) for
// Services that ask for an address.
func (c *Cluster) StaticServiceIP() string {
	ip := slices.Clone(c.net.svcNet.IP.To4())
	ip[3] = 10
	return ip.String()
}

// LogDir is where every process writes its output.
func (c *Cluster) LogDir() string { return c.logDir }

func (c *Cluster) track(p *process) {
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitFor polls check until it returns nil, the process dies, or timeout.
func waitFor(ctx context.Context, p *process, timeout time.Duration, what string, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		if p != nil && p.exited() {
			return p.exitError()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not ready after %v: %v", what, timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster) startEtcd(ctx context.Context, bin string) (string, error) {
	client, err := freePort()
	if err != nil {
		return "", err
	}
	peer, err := freePort()
	if err != nil {
		return "", err
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", client)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
	p, err := startProcess("etcd", filepath.Join(c.logDir, "etcd.log"), nil, false,
		filepath.Join(bin, "etcd"),
		"--name=weir", "--data-dir="+filepath.Join(c.WorkDir, "etcd"),
		"--listen-client-urls="+clientURL, "--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=weir="+peerURL,
		// Test data: durability is not worth the fsyncs.
		"--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return "", err
	}
	c.track(p)
	err = waitFor(ctx, p, 30*time.Second, "etcd", func() error {
		resp, err := http.Get(clientURL + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/health: %s", resp.Status)
		}
		return nil
	})
	return clientURL, err
}

func (c *Cluster) startAPIServer(ctx context.Context, bin, etcdURL string) error {
	var err error
	if c.apiPort, err = freePort(); err != nil {
		return err
	}
	pki := filepath.Join(c.WorkDir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	c.token = hex.EncodeToString(b)
	tokens := filepath.Join(pki, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(c.token+`,admin,admin,"system:masters"`+"\n"), 0o600); err != nil {
		return err
	}
	// Service account tokens are signed with this key; TokenRequest gives
	// weir-controller a token of its own, so config/'s RBAC is exercised.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	saKey, saPub := filepath.Join(pki, "sa.key"), filepath.Join(pki, "sa.pub")
	if err := os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return err
	}
	if c.kubelet, err = newKubeletPKI(pki, c.net.gateway); err != nil {
		return err
	}
	certDir := filepath.Join(pki, "serving")
	base := c.net.nodePortBase()
	p, err := startProcess("kube-apiserver", filepath.Join(c.logDir, "kube-apiserver.log"), nil, false,
		filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(c.apiPort),
		// The kubernetes Service's endpoint. It cannot be loopback; the
		// service proxy forwards that Service to 127.0.0.1 instead.
		"--advertise-address="+c.net.gateway.String(),
		"--cert-dir="+certDir,
		"--token-auth-file="+tokens,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saPub,
		"--service-account-signing-key-file="+saKey,
		"--service-cluster-ip-range="+c.net.svcNet.String(),
		fmt.Sprintf("--service-node-port-range=%d-%d", base, base+99),
		"--disable-admission-plugins=ServiceAccount",
		"--profiling=false",
		// pods/log reaches the pod runner's kubelet API, verified both ways.
		"--kubelet-preferred-address-types=InternalIP",
		"--kubelet-certificate-authority="+c.kubelet.caFile,
		"--kubelet-client-certificate="+c.kubelet.clientCert,
		"--kubelet-client-key="+c.kubelet.clientKey,
	)
	if err != nil {
		return err
	}
	c.track(p)
	// --cert-dir's self-signed certificate file holds its CA too.
	c.caFile = filepath.Join(certDir, "apiserver.crt")
	host := fmt.Sprintf("https://127.0.0.1:%d", c.apiPort)
	err = waitFor(ctx, p, 60*time.Second, "kube-apiserver", func() error {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		req, _ := http.NewRequest("GET", host+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s: %s", resp.Status, body)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.Kubeconfig = filepath.Join(c.WorkDir, "kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, host, c.caFile, c.token); err != nil {
		return err
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return err
	}
	c.Config.QPS, c.Config.Burst = 200, 400
	if c.Kube, err = kubernetes.NewForConfig(c.Config); err != nil {
		return err
	}
	c.Networking, err = netclient.NewForConfig(c.Config)
	return err
}

func writeKubeconfig(path, server, caFile, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["weir"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: caFile}
	cfg.AuthInfos["weir"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["weir"] = &clientcmdapi.Context{Cluster: "weir", AuthInfo: "weir"}
	cfg.CurrentContext = "weir"
	return clientcmd.WriteToFile(*cfg, path)
}

func (c *Cluster) startControllerManager(bin string) error {
	p, err := startProcess("kube-controller-manager", filepath.Join(c.logDir, "kube-controller-manager.log"), nil, false,
		filepath.Join(bin, "kube-controller-manager"),
		"--kubeconfig="+c.Kubeconfig,
		// Only what turns Pods into Endpoints and EndpointSlices: there is
		// no scheduler, no kubelet and no garbage collector here.
		// Deployments and ReplicaSets for the Gateways' data planes.
		"--controllers=endpointslice,endpoint,endpointslicemirroring,deployment,replicaset",
		"--leader-elect=false", "--secure-port=0",
	)
	if err != nil {
		return err
	}
	c.track(p)
	// It has no health port with --secure-port=0; an early crash is
	// caught here, later ones show in the test's log dump.
	time.Sleep(200 * time.Millisecond)
	if p.exited() {
		return p.exitError()
	}
	return nil
}

// ServiceHost is the in-cluster DNS name of a Service.
func ServiceHost(namespace, name string) string {
	return name + "." + namespace + ".svc.cluster.local"
}

// errStopped is returned by operations on a stopped cluster.
var errStopped = errors.New("the cluster is stopped")
