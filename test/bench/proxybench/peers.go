package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// writeCert makes a self-signed P-256 certificate for the bench host and
// localhost, the name the TLS runs dial.
func writeCert(dir string) (certFile, keyFile string, certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host, "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err = os.WriteFile(certFile, certPEM, 0o600); err != nil {
		return
	}
	err = os.WriteFile(keyFile, keyPEM, 0o600)
	return
}

// startReverseProxy runs Go's httputil.ReverseProxy in a child process, so
// that it has a runtime of its own like the other proxies.
func startReverseProxy(dir, backend, certFile, keyFile string) (*proc, error) {
	p, err := newProc(dir, backend)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	_, tlsPort, _ := net.SplitHostPort(p.tlsAddr)
	p.cmd = exec.Command(self, "-role=reverse-proxy", "-rp-listen="+p.addr, "-rp-tls-listen=127.0.0.1:"+tlsPort,
		"-rp-cert="+certFile, "-rp-key="+keyFile, "-rp-backend="+backend)
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	return p, waitHTTP("http://"+p.addr+"/", "go reverse proxy")
}

// serveReverseProxy is the child process: the ReverseProxy as its
// documentation sets it up, with upstream keep-alive sized like the others.
func serveReverseProxy() error {
	u, err := url.Parse("http://" + *rpTarget)
	if err != nil {
		return err
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}
	rp.ErrorLog = nil
	errc := make(chan error, 2)
	go func() {
		errc <- (&http.Server{Addr: *rpListen, Handler: rp, ReadHeaderTimeout: 10 * time.Second}).ListenAndServe()
	}()
	go func() {
		errc <- (&http.Server{Addr: *rpTLS, Handler: rp, ReadHeaderTimeout: 10 * time.Second}).ListenAndServeTLS(*rpCert, *rpKey)
	}()
	return <-errc
}

// cpuProfile starts a CPU profile of weir run through its admin pprof
// endpoint; the returned function waits for it and writes it to file.
func (p *proc) cpuProfile(file string, d time.Duration) func() error {
	errc := make(chan error, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.adminAddr, int(d.Seconds())-1))
		if err != nil {
			errc <- err
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(file)
		if err != nil {
			errc <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		errc <- err
	}()
	return func() error { return <-errc }
}

// workerPIDs are nginx's worker processes: they hold the connections.
func (p *proc) workerPIDs() []int {
	out, _ := exec.Command("pgrep", "-P", strconv.Itoa(p.cmd.Process.Pid)).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

// rss sums the resident memory of pids, in bytes.
func rss(pids []int) (int64, error) {
	var total int64
	for _, pid := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return 0, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				total += kb << 10
			}
		}
		f.Close()
	}
	return total, nil
}

type idleResult struct {
	target       string
	conns        int
	before       int64
	after        int64
	perConnBytes int64
}

// measureIdle opens n keep-alive connections to addr, sends one request on
// each and keeps them open, then reads how much memory the proxy's
// processes grew by.
func measureIdle(addr string, pids []int, n int) (idleResult, error) {
	r := idleResult{conns: n}
	var err error
	if r.before, err = rss(pids); err != nil {
		return r, err
	}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	req := "GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
	buf := make([]byte, 4096)
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			return r, fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, req); err != nil {
			return r, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return r, fmt.Errorf("connection %d: %w", i, err)
		}
		for {
			if _, err := resp.Body.Read(buf); err != nil {
				break
			}
		}
		resp.Body.Close()
	}
	if r.after, err = rss(pids); err != nil {
		return r, err
	}
	r.perConnBytes = (r.after - r.before) / int64(n)
	return r, nil
}

func printIdle(rs []idleResult) {
	if len(rs) == 0 {
		return
	}
	fmt.Printf("\nIdle keep-alive connections (each after one request), resident memory of the proxy's processes\n")
	fmt.Printf("(nginx allocates its worker_connections slots at start, so its growth per connection understates its cost)\n\n")
	fmt.Println("| proxy | connections | RSS before | RSS after | growth per connection |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: |")
	for _, r := range rs {
		fmt.Printf("| %s | %d | %d MiB | %d MiB | %.1f KiB |\n", r.target, r.conns, r.before>>20, r.after>>20, float64(r.perConnBytes)/1024)
	}
}

// targetPIDs are the processes that do a proxy's work; nil for the direct
// path.
func targetPIDs(name string, weir, nginx, rp *proc) []int {
	switch name {
	case "weir-proxy":
		return []int{weir.cmd.Process.Pid}
	case "nginx":
		return nginx.workerPIDs()
	case "go-reverseproxy":
		return []int{rp.cmd.Process.Pid}
	}
	return nil
}

// cpuTime sums user and system CPU time of pids (all their threads).
func cpuTime(pids []int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + s
		}
	}
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ is 100 on Linux
}
