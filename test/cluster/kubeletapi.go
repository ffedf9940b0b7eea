package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The pod runner serves the one part of the kubelet API that clients reach
// through the apiserver and the suites use: container logs
// (`kubectl logs`, pods/log). The apiserver and the pod runner trust each
// other through kubeletPKI, as a real control plane and kubelet do, so pods
// (which can reach the host) cannot read each other's logs.

// kubeletPKI is a CA for the apiserver ↔ pod runner channel, the
// apiserver's client certificate and the pod runner's serving certificate.
type kubeletPKI struct {
	caFile, clientCert, clientKey string
	pool                          *x509.CertPool
	serving                       tls.Certificate
}

func newKubeletPKI(dir string, nodeIP net.IP) (*kubeletPKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weir-cluster-kubelet-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, tmpl *x509.Certificate) ([]byte, *ecdsa.PrivateKey, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(serial), now.Add(-time.Hour), now.Add(7*24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		return der, key, err
	}
	clientDER, clientKey, err := issue(2, &x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver-kubelet-client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return nil, err
	}
	servingDER, servingKey, err := issue(3, &x509.Certificate{Subject: pkix.Name{CommonName: "weir-node"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{nodeIP}})
	if err != nil {
		return nil, err
	}
	p := &kubeletPKI{
		caFile:     filepath.Join(dir, "kubelet-ca.crt"),
		clientCert: filepath.Join(dir, "kubelet-client.crt"),
		clientKey:  filepath.Join(dir, "kubelet-client.key"),
		pool:       x509.NewCertPool(),
		serving:    tls.Certificate{Certificate: [][]byte{servingDER}, PrivateKey: servingKey},
	}
	p.pool.AddCert(ca)
	keyDER, err := x509.MarshalECPrivateKey(clientKey)
	if err != nil {
		return nil, err
	}
	for path, block := range map[string]*pem.Block{
		p.caFile:     {Type: "CERTIFICATE", Bytes: caDER},
		p.clientCert: {Type: "CERTIFICATE", Bytes: clientDER},
		p.clientKey:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// serveKubeletAPI listens on the node's address and publishes the port in
// the Node's daemonEndpoints, where the apiserver looks for it.
func (r *PodRunner) serveKubeletAPI(ctx context.Context) error {
	c := r.c
	ln, err := net.Listen("tcp", net.JoinHostPort(c.net.gateway.String(), "0"))
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(r.serveContainerLogs),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{c.kubelet.serving},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    c.kubelet.pool,
			MinVersion:   tls.VersionTLS12,
		},
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	go func() {
		<-c.ctx.Done()
		_ = srv.Close()
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	node, err := c.Kube.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(port) //nolint:gosec // a TCP port
	_, err = c.Kube.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

// serveContainerLogs is the kubelet's GET /containerLogs/{ns}/{pod}/{container}
// with sinceTime, sinceSeconds, tailLines and timestamps. follow is refused:
// nothing here needs it.
func (r *PodRunner) serveContainerLogs(w http.ResponseWriter, req *http.Request) {
	parts := strings.Split(strings.TrimPrefix(req.URL.Path, "/containerLogs/"), "/")
	if req.Method != http.MethodGet || !strings.HasPrefix(req.URL.Path, "/containerLogs/") || len(parts) != 3 {
		http.Error(w, "the pod runner serves only GET /containerLogs/{namespace}/{pod}/{container}", http.StatusNotFound)
		return
	}
	q := req.URL.Query()
	for _, unsupported := range []string{"follow", "previous"} {
		if q.Get(unsupported) == "true" {
			http.Error(w, unsupported+" is not supported by the pod runner", http.StatusBadRequest)
			return
		}
	}
	if q.Has("limitBytes") {
		http.Error(w, "limitBytes is not supported by the pod runner", http.StatusBadRequest)
		return
	}
	var since time.Time
	if s := q.Get("sinceTime"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			http.Error(w, "sinceTime: "+err.Error(), http.StatusBadRequest)
			return
		}
		since = t
	}
	if s := q.Get("sinceSeconds"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			http.Error(w, "sinceSeconds: not a count of seconds", http.StatusBadRequest)
			return
		}
		since = time.Now().Add(-time.Duration(n) * time.Second)
	}
	tailLines := -1
	if s := q.Get("tailLines"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			http.Error(w, "tailLines: not a count", http.StatusBadRequest)
			return
		}
		tailLines = n
	}
	ns, name, container := parts[0], parts[1], parts[2]
	uid, ok := r.runsContainer(ns, name, container)
	if !ok {
		http.Error(w, fmt.Sprintf("container %q in pod %s/%s is not running here", container, ns, name), http.StatusNotFound)
		return
	}
	lines, err := readStampedLog(r.c.stampedPodLog(ns, name, uid), since)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if tailLines >= 0 && len(lines) > tailLines {
		lines = lines[len(lines)-tailLines:]
	}
	w.Header().Set("Content-Type", "text/plain")
	for _, l := range lines {
		if q.Get("timestamps") == "true" {
			fmt.Fprintf(w, "%s %s\n", l.at.Format(time.RFC3339Nano), l.text)
		} else {
			fmt.Fprintf(w, "%s\n", l.text)
		}
	}
}

// runsContainer returns the UID of the pod running here with that
// container.
func (r *PodRunner) runsContainer(ns, name, container string) (types.UID, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rp := range r.pods {
		if rp.namespace == ns && rp.name == name && rp.container == container {
			return rp.uid, true
		}
	}
	return "", false
}

type logLine struct {
	at   time.Time
	text string
}

// readStampedLog returns the lines of a stamped log written at or after
// since.
func readStampedLog(path string, since time.Time) ([]logLine, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		stamp, text, ok := strings.Cut(sc.Text(), " ")
		at, err := time.Parse(time.RFC3339Nano, stamp)
		if !ok || err != nil || at.Before(since) {
			continue
		}
		out = append(out, logLine{at, text})
	}
	return out, sc.Err()
}

// stampedPodLog is a pod's output with each line prefixed by the time it
// began, as a container runtime keeps it; the kubelet API filters it by
// time. It is kept per pod UID, so a pod made again under the same name
// starts a new log. podLog keeps the plain output for people.
func (c *Cluster) stampedPodLog(namespace, name string, uid types.UID) string {
	return filepath.Join(c.logDir, "pod-"+namespace+"_"+name+"_"+string(uid)+".stamped")
}

// stampWriter writes a process's output to a plain log and, line by line
// with the time each line began, to a stamped one. exec.Cmd calls Write
// from one goroutine at a time when stdout and stderr are the same writer.
type stampWriter struct {
	plain, stamped io.Writer
	mu             sync.Mutex
	midLine        bool
}

func (s *stampWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.plain.Write(p); err != nil {
		return 0, err
	}
	var buf bytes.Buffer
	for rest := p; len(rest) > 0; {
		if !s.midLine {
			buf.WriteString(time.Now().UTC().Format(time.RFC3339Nano))
			buf.WriteByte(' ')
		}
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			buf.Write(rest)
			s.midLine = true
			break
		}
		buf.Write(rest[:i+1])
		s.midLine = false
		rest = rest[i+1:]
	}
	if _, err := s.stamped.Write(buf.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}
