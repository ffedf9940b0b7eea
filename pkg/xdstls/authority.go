package xdstls

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// PreviousCertFile is where a gateway identity's Secret keeps the
// certificate it held before the last one was issued, and
// PreviousUntilAnnotation until when that one stays in force: a gateway
// reconnecting before its kubelet has synced the new files still gets in.
const (
	PreviousCertFile        = "previous.crt"
	PreviousUntilAnnotation = "weir.dev/xds-previous-valid-until"
)

// WithdrawalGrace is how long a replaced certificate stays in force: the
// kubelet refreshes a mounted Secret within about two minutes.
const WithdrawalGrace = 10 * time.Minute

// Authority is the CA as its Secret holds it now, and the gateway
// certificates still in force, as the identity Secrets hold them. Every
// controller replica follows the same Secrets (Refresh), so replicas agree
// within one refresh. A certificate is in force while it is the one its
// identity's Secret holds, or the one that Secret held before, for
// WithdrawalGrace after it was replaced: deleting an identity's Secret
// withdraws its certificate at once, as a new one is issued with no
// predecessor. Enforce closes the connections of certificates no longer
// in force, so their gateways reconnect with what their Secret holds now.
type Authority struct {
	mu   sync.RWMutex
	ca   *CA
	held map[string][]heldCerts
	// lastRead is when the identity Secrets were last read, and
	// caNamespace/caName the CA Secret.
	lastRead            time.Time
	caNamespace, caName string
	now                 func() time.Time

	// conns are the xDS server's connections, with their certificates.
	connsMu sync.Mutex
	conns   map[*trackedConn]struct{}
}

// heldCerts is what one identity Secret holds, or held before it was
// deleted.
type heldCerts struct {
	current, previous *x509.Certificate
	previousUntil     time.Time
	// deleted: the Secret is gone, and every certificate it ever held
	// with it; only a newer one, being issued, is in force.
	deleted bool
}

// issueSkew allows for the clocks of the replicas that issue and read a
// certificate, beyond the 5 minutes Issue backdates NotBefore by.
const issueSkew = time.Minute

// NewAuthority starts from ca, with no identity Secret read yet: until
// one is, any certificate from ca is in force.
func NewAuthority(ca *CA) *Authority {
	return &Authority{ca: ca, now: time.Now, conns: map[*trackedConn]struct{}{}}
}

// CA is the current CA.
func (a *Authority) CA() *CA {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.ca
}

// Refresh reads the CA Secret caNamespace/caName (making a CA if it is
// gone) and the identity Secrets of identityNamespace. It reports whether
// the CA changed, and whether anything that decides which certificates
// are in force did.
func (a *Authority) Refresh(ctx context.Context, kube kubernetes.Interface, caNamespace, caName, identityNamespace string) (caChanged, changed bool, err error) {
	ca, err := EnsureCASecret(ctx, kube, caNamespace, caName)
	if err != nil {
		return false, false, err
	}
	read := a.now()
	list, err := kube.CoreV1().Secrets(identityNamespace).List(ctx, metav1.ListOptions{LabelSelector: IdentityLabel + "=gateway"})
	if err != nil {
		return false, false, fmt.Errorf("listing the gateways' xDS certificate Secrets in %s: %w", identityNamespace, err)
	}
	held := map[string][]heldCerts{}
	for _, s := range list.Items {
		cur := parseCert(s.Data[CertFile])
		if cur == nil || len(cur.URIs) != 1 {
			continue
		}
		h := heldCerts{current: cur, previous: parseCert(s.Data[PreviousCertFile])}
		if h.previous != nil {
			if until, err := time.Parse(time.RFC3339, s.Annotations[PreviousUntilAnnotation]); err == nil {
				h.previousUntil = until
			}
		}
		id := cur.URIs[0].String()
		held[id] = append(held[id], h)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	caChanged = !bytes.Equal(a.ca.CertPEM, ca.CertPEM)
	if caChanged {
		a.ca = ca
	}
	// An identity whose Secrets are all gone keeps, as deleted, the
	// newest certificate it had: that one and older ones stay withdrawn.
	for id, hs := range a.held {
		if _, ok := held[id]; ok {
			continue
		}
		newest := hs[0]
		for _, h := range hs[1:] {
			if h.current.NotBefore.After(newest.current.NotBefore) {
				newest = h
			}
		}
		held[id] = []heldCerts{{current: newest.current, deleted: true}}
	}
	changed = caChanged || !sameHeld(a.held, held)
	a.held, a.lastRead = held, read
	a.caNamespace, a.caName = caNamespace, caName
	return caChanged, changed, nil
}

// EnsureGatewaySecret is the package's EnsureGatewaySecret with the
// current CA. A Secret from another CA is rewritten only once the CA
// Secret is confirmed to hold this one: a replica that has not read a
// new CA yet must not put the gateways back on the old one.
func (a *Authority) EnsureGatewaySecret(ctx context.Context, kube kubernetes.Interface, namespace, name, group string, labels, owner map[string]string, now time.Time) (bool, error) {
	a.mu.RLock()
	ca, caNamespace, caName := a.ca, a.caNamespace, a.caName
	a.mu.RUnlock()
	confirm := func(ca *CA) error {
		if caName == "" {
			return nil
		}
		s, err := kube.CoreV1().Secrets(caNamespace).Get(ctx, caName, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading the xDS CA Secret %s/%s: %w", caNamespace, caName, err)
		}
		if !bytes.Equal(s.Data[CertFile], ca.CertPEM) {
			return fmt.Errorf("the xDS CA in Secret %s/%s changed, and this replica has not read it yet; retrying", caNamespace, caName)
		}
		return nil
	}
	return ensureGatewaySecret(ctx, kube, ca, confirm, namespace, name, group, labels, owner, now)
}

func sameHeld(a, b map[string][]heldCerts) bool {
	if len(a) != len(b) {
		return false
	}
	same := func(x, y *x509.Certificate) bool { return x == nil && y == nil || x != nil && y != nil && x.Equal(y) }
	for k, xs := range a {
		ys, ok := b[k]
		if !ok || len(xs) != len(ys) {
			return false
		}
		for i, x := range xs {
			y := ys[i]
			if !same(x.current, y.current) || !same(x.previous, y.previous) || !x.previousUntil.Equal(y.previousUntil) || x.deleted != y.deleted {
				return false
			}
		}
	}
	return true
}

func parseCert(certPEM []byte) *x509.Certificate {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return nil
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil
	}
	return c
}

// Follow refreshes every interval until ctx ends, calling onChange after
// a refresh that changed the CA or a certificate in force, and closes the
// connections of certificates no longer in force after each one (a grace
// period may have ended); errors go to onError and the last good state
// stays.
func (a *Authority) Follow(ctx context.Context, kube kubernetes.Interface, caNamespace, caName, identityNamespace string, interval time.Duration, onChange func(caChanged bool), onClosed func(error), onError func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, interval)
		caChanged, changed, err := a.Refresh(rctx, kube, caNamespace, caName, identityNamespace)
		cancel()
		switch {
		case err != nil:
			onError(err)
		case changed:
			onChange(caChanged)
		}
		for _, err := range a.Enforce() {
			onClosed(err)
		}
	}
}

// InForce returns why a verified client certificate may no longer be
// used, or nil: it must be from the current CA, and not withdrawn.
func (a *Authority) InForce(leaf *x509.Certificate) error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if err := leaf.CheckSignatureFrom(a.ca.Cert); err != nil {
		return errors.New("the client certificate is not from the current xDS CA")
	}
	if len(leaf.URIs) != 1 {
		return nil // Authorize refuses it for its identity
	}
	hs, ok := a.held[leaf.URIs[0].String()]
	if !ok {
		return nil
	}
	// Issued since the Secrets were last read (Issue backdates NotBefore
	// by 5 minutes), and newer than what they held: being written now.
	issuedSinceRead := leaf.NotBefore.Add(5*time.Minute + issueSkew).After(a.lastRead)
	for _, h := range hs {
		switch {
		case h.deleted:
			if issuedSinceRead && leaf.NotBefore.After(h.current.NotBefore) {
				return nil
			}
		case leaf.Equal(h.current):
			return nil
		case h.current.CheckSignatureFrom(a.ca.Cert) != nil:
			// What the Secret held is from a replaced CA: it is being
			// rewritten, and leaf is from the current one.
			return nil
		case issuedSinceRead && leaf.NotBefore.After(h.current.NotBefore):
			return nil
		case h.previous != nil && leaf.Equal(h.previous) && a.now().Before(h.previousUntil):
			return nil
		}
	}
	return fmt.Errorf("the client certificate (serial %x) was withdrawn: its identity's Secret holds another, or was deleted", leaf.SerialNumber)
}

// Authorize is an xds.Authorizer: the stream's peer certificate must be in
// force, and carry the identity of group (as the package's Authorize).
func (a *Authority) Authorize(ctx context.Context, node, group string) error {
	if err := Authorize(ctx, node, group); err != nil {
		return err
	}
	p, _ := peer.FromContext(ctx)
	info := p.AuthInfo.(credentials.TLSInfo)
	if err := a.InForce(info.State.VerifiedChains[0][0]); err != nil {
		return fmt.Errorf("node %q: %w", node, err)
	}
	return nil
}

// ServerConfig is the xDS server's TLS: it presents a certificate for
// dnsNames from the current CA, renewed in memory half way through its
// life or when the CA changes, and requires a client certificate from the
// current CA, with client use and in force, before any xDS message is
// read.
func (a *Authority) ServerConfig(dnsNames []string) *tls.Config {
	var mu sync.Mutex
	var cur *tls.Certificate
	// The config of one CA, kept while it is the current one, so TLS
	// session tickets resume within it.
	var cachedCA *CA
	var cached *tls.Config
	getCertificate := func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		ca := a.CA()
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if cur == nil || now.After(renewAt(cur.Leaf)) || cur.Leaf.CheckSignatureFrom(ca.Cert) != nil {
			certPEM, keyPEM, err := ca.Issue(now, LeafLifetime, nil, dnsNames, true)
			if err != nil {
				return nil, err
			}
			c, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				return nil, err
			}
			cur = &c
		}
		return cur, nil
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			ca := a.CA()
			mu.Lock()
			defer mu.Unlock()
			if cachedCA != ca {
				pool := x509.NewCertPool()
				pool.AddCert(ca.Cert)
				cachedCA = ca
				cached = &tls.Config{
					MinVersion:     tls.VersionTLS12,
					NextProtos:     []string{"h2"},
					ClientAuth:     tls.RequireAndVerifyClientCert,
					ClientCAs:      pool,
					GetCertificate: getCertificate,
					VerifyConnection: func(cs tls.ConnectionState) error {
						if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
							return errors.New("no verified client certificate")
						}
						return a.InForce(cs.VerifiedChains[0][0])
					},
				}
			}
			return cached, nil
		},
	}
}

// ServerCredentials are the xDS server's gRPC transport credentials, of
// ServerConfig, keeping each connection with its client certificate for
// Enforce. Ending a stream would not be enough: a gateway opens its next
// stream on the same connection, with the same certificate, for as long
// as the connection lives.
func (a *Authority) ServerCredentials(dnsNames []string) credentials.TransportCredentials {
	return &trackedCredentials{TransportCredentials: credentials.NewTLS(a.ServerConfig(dnsNames)), a: a}
}

type trackedCredentials struct {
	credentials.TransportCredentials
	a *Authority
}

func (c *trackedCredentials) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	ti, ok := info.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		conn.Close()
		return nil, nil, errors.New("no verified client certificate")
	}
	tc := &trackedConn{Conn: conn, a: c.a, leaf: ti.State.VerifiedChains[0][0]}
	if err := c.a.track(tc); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return tc, info, nil
}

func (c *trackedCredentials) Clone() credentials.TransportCredentials {
	return &trackedCredentials{TransportCredentials: c.TransportCredentials.Clone(), a: c.a}
}

// trackedConn is a connection of the xDS server and its client's
// certificate.
type trackedConn struct {
	net.Conn
	a    *Authority
	leaf *x509.Certificate
}

func (c *trackedConn) Close() error {
	c.a.connsMu.Lock()
	delete(c.a.conns, c)
	c.a.connsMu.Unlock()
	return c.Conn.Close()
}

// track keeps a new connection, if its certificate is still in force. It
// checks under the same lock Enforce holds, after the handshake checked:
// a state that changed between the two is either seen here or by Enforce.
func (a *Authority) track(c *trackedConn) error {
	a.connsMu.Lock()
	defer a.connsMu.Unlock()
	if err := a.InForce(c.leaf); err != nil {
		return err
	}
	a.conns[c] = struct{}{}
	return nil
}

// Enforce closes every connection whose certificate is no longer in force
// (its streams end with it), and returns why for each.
func (a *Authority) Enforce() []error {
	a.connsMu.Lock()
	var closing []*trackedConn
	var why []error
	for c := range a.conns {
		if err := a.InForce(c.leaf); err != nil {
			closing = append(closing, c)
			why = append(why, fmt.Errorf("%s: %w", c.leaf.URIs, err))
			delete(a.conns, c)
		}
	}
	a.connsMu.Unlock()
	for _, c := range closing {
		c.Conn.Close()
	}
	return why
}
