package xdstls

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
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
// predecessor.
type Authority struct {
	mu   sync.RWMutex
	ca   *CA
	tls  *tls.Config // the server config of ca, for GetConfigForClient
	held map[string]heldCerts
	now  func() time.Time
}

// heldCerts is what one identity's Secret holds.
type heldCerts struct {
	current, previous *x509.Certificate
	previousUntil     time.Time
}

// NewAuthority starts from ca, with no identity Secret read yet: until
// one is, any certificate from ca is in force.
func NewAuthority(ca *CA) *Authority {
	return &Authority{ca: ca, now: time.Now}
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
	list, err := kube.CoreV1().Secrets(identityNamespace).List(ctx, metav1.ListOptions{LabelSelector: IdentityLabel + "=gateway"})
	if err != nil {
		return false, false, fmt.Errorf("listing the gateways' xDS certificate Secrets in %s: %w", identityNamespace, err)
	}
	held := map[string]heldCerts{}
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
		held[cur.URIs[0].String()] = h
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	caChanged = !bytes.Equal(a.ca.CertPEM, ca.CertPEM)
	if caChanged {
		a.ca, a.tls = ca, nil
	}
	changed = caChanged || !sameHeld(a.held, held)
	a.held = held
	return caChanged, changed, nil
}

func sameHeld(a, b map[string]heldCerts) bool {
	if len(a) != len(b) {
		return false
	}
	same := func(x, y *x509.Certificate) bool { return x == nil && y == nil || x != nil && y != nil && x.Equal(y) }
	for k, x := range a {
		y, ok := b[k]
		if !ok || !same(x.current, y.current) || !same(x.previous, y.previous) || !x.previousUntil.Equal(y.previousUntil) {
			return false
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
// a refresh that changed the CA or a certificate in force; errors go to
// onError and the last good state stays.
func (a *Authority) Follow(ctx context.Context, kube kubernetes.Interface, caNamespace, caName, identityNamespace string, interval time.Duration, onChange func(caChanged bool), onError func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		caChanged, changed, err := a.Refresh(ctx, kube, caNamespace, caName, identityNamespace)
		switch {
		case err != nil:
			onError(err)
		case changed:
			onChange(caChanged)
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
	h, ok := a.held[leaf.URIs[0].String()]
	switch {
	case !ok, leaf.Equal(h.current):
		return nil
	case h.current.CheckSignatureFrom(a.ca.Cert) != nil:
		// What the Secret held is from a replaced CA: it is being
		// rewritten, and leaf is from the current one.
		return nil
	case leaf.NotBefore.After(h.current.NotBefore):
		// Issued after the Secret was last read: newer than what is
		// known to be in force, so not withdrawn.
		return nil
	case h.previous != nil && leaf.Equal(h.previous) && a.now().Before(h.previousUntil):
		return nil
	}
	return fmt.Errorf("the client certificate (serial %x) was withdrawn: its identity's Secret holds another", leaf.SerialNumber)
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
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.tls == nil {
				pool := x509.NewCertPool()
				pool.AddCert(a.ca.Cert)
				a.tls = &tls.Config{
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
			return a.tls, nil
		},
	}
}
