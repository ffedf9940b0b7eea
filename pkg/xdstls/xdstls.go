// Package xdstls owns the trust of the xDS channel between weir-controller
// and its gateways: the CA the controller keeps in a Secret, the
// certificates it issues from it, the gateway identities those carry, and
// the TLS configurations of both ends. A gateway's identity is a URI SAN:
// spiffe://weir.dev/gateway/shared for Knative's shared gateways, and
// spiffe://weir.dev/gateway/<namespace>/<name> for a Gateway's data plane.
package xdstls

import (
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
	"maps"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	corev1 "k8s.io/api/core/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Files a gateway reads from its mounted Secret, as a kubernetes.io/tls
// Secret names them, plus the CA bundle.
const (
	CAFile   = "ca.crt"
	CertFile = corev1.TLSCertKey
	KeyFile  = corev1.TLSPrivateKeyKey
)

const (
	identityScheme = "spiffe"
	identityHost   = "weir.dev"
	sharedIdentity = "/gateway/shared"
	gatewayPrefix  = "/gateway/"
)

// Lifetimes: the CA outlives every certificate it issues many times over;
// a leaf is renewed once half of its life has passed.
const (
	CALifetime   = 10 * 365 * 24 * time.Hour
	LeafLifetime = 90 * 24 * time.Hour
)

// IdentityOf is the identity of the gateways serving group: "" for the
// shared gateways, "<namespace>/<name>" for a Gateway's data plane (the
// groups of xds.GroupOf).
func IdentityOf(group string) *url.URL {
	if group == "" {
		return &url.URL{Scheme: identityScheme, Host: identityHost, Path: sharedIdentity}
	}
	return &url.URL{Scheme: identityScheme, Host: identityHost, Path: gatewayPrefix + group}
}

// GroupOfCertificate is the group a client certificate may read, from its
// one Weir identity; ok is false when it carries none, or more than one.
func GroupOfCertificate(c *x509.Certificate) (group string, ok bool) {
	found := 0
	for _, u := range c.URIs {
		if u.Scheme != identityScheme || u.Host != identityHost {
			continue
		}
		switch rest, isGateway := strings.CutPrefix(u.Path, gatewayPrefix); {
		case u.Path == sharedIdentity:
			group, found = "", found+1
		case isGateway && strings.Count(rest, "/") == 1 && !strings.HasPrefix(rest, "/") && !strings.HasSuffix(rest, "/"):
			group, found = rest, found+1
		}
	}
	return group, found == 1
}

// CA is the xDS channel's certificate authority.
type CA struct {
	Cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	CertPEM []byte
}

// NewCA makes a self-signed CA.
func NewCA(now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "weir xDS CA", Organization: []string{"weir.dev"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// LoadCA reads a CA from PEM.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The error never holds key bytes.
		return nil, fmt.Errorf("the CA key pair: %w", err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the CA key is a %T, not ECDSA", pair.PrivateKey)
	}
	if !pair.Leaf.IsCA {
		return nil, errors.New("the CA certificate is not a CA")
	}
	return &CA{Cert: pair.Leaf, key: key, CertPEM: certPEM}, nil
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// Issue makes a leaf certificate, for a server (dnsNames) or a client
// (identity), valid from now for lifetime; it returns PEM.
func (ca *CA) Issue(now time.Time, lifetime time.Duration, identity *url.URL, dnsNames []string, server bool) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	usage := x509.ExtKeyUsageClientAuth
	cn := ""
	if server {
		usage = x509.ExtKeyUsageServerAuth
	}
	if identity != nil {
		cn = identity.Path
	} else if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"weir.dev"}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     dnsNames,
	}
	if identity != nil {
		tmpl.URIs = []*url.URL{identity}
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// EnsureCASecret returns the CA kept in Secret namespace/name, making it
// on first use. Replicas that race to make it all end up with the one
// that was stored first.
func EnsureCASecret(ctx context.Context, kube kubernetes.Interface, namespace, name string) (*CA, error) {
	secrets := kube.CoreV1().Secrets(namespace)
	for range 3 {
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			ca, err := LoadCA(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
			if err != nil {
				return nil, fmt.Errorf("Secret %s/%s: %w; delete it to make a new CA (every gateway then gets a new certificate)", namespace, name, err)
			}
			return ca, nil
		}
		if !apierrs.IsNotFound(err) {
			return nil, fmt.Errorf("reading the xDS CA Secret %s/%s: %w", namespace, name, err)
		}
		ca, err := NewCA(time.Now())
		if err != nil {
			return nil, err
		}
		kder, err := x509.MarshalECPrivateKey(ca.key)
		if err != nil {
			return nil, err
		}
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app.kubernetes.io/name": "weir", IdentityLabel: "ca"}},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: ca.CertPEM, corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})},
		}, metav1.CreateOptions{})
		if err == nil {
			return ca, nil
		}
		if !apierrs.IsAlreadyExists(err) {
			return nil, fmt.Errorf("storing the xDS CA in Secret %s/%s: %w", namespace, name, err)
		}
		// Another replica stored one first: read it.
	}
	return nil, fmt.Errorf("the xDS CA Secret %s/%s keeps changing", namespace, name)
}

// ServerConfig is the xDS server's TLS with ca alone in force (an
// Authority that never refreshes).
func (ca *CA) ServerConfig(dnsNames []string) *tls.Config {
	return NewAuthority(ca).ServerConfig(dnsNames)
}

// renewAt is half way through a certificate's life.
func renewAt(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2)
}

// NeedsRenewal reports whether a stored certificate (PEM) for identity is
// missing, unreadable, not from ca, of another identity, or past half its
// life.
func (ca *CA) NeedsRenewal(certPEM []byte, identity *url.URL, now time.Time) bool {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return true
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil || c.CheckSignatureFrom(ca.Cert) != nil || now.After(renewAt(c)) {
		return true
	}
	return len(c.URIs) != 1 || c.URIs[0].String() != identity.String()
}

// ClientConfig is a gateway's TLS to the xDS server: the certificate and
// CA are read from dir (a mounted Secret) at every handshake, so a
// renewed certificate is used on the next connection without a restart.
// serverName is the name the server's certificate must carry.
func ClientConfig(dir, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
			if err != nil {
				return nil, fmt.Errorf("the gateway's xDS client certificate in %s: %w", dir, err)
			}
			return &c, nil
		},
		// The CA may change under a running gateway; it is read here
		// rather than fixed in RootCAs.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
			if err != nil {
				return fmt.Errorf("the xDS CA bundle: %w", err)
			}
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(caPEM) {
				return fmt.Errorf("the xDS CA bundle %s holds no certificate", filepath.Join(dir, CAFile))
			}
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the xDS server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err = cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: serverName, Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			return err
		},
	}
}

// Authorize is an xds.Authorizer: a stream may read group only if its
// peer's verified client certificate carries that group's identity.
func Authorize(ctx context.Context, node, group string) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return fmt.Errorf("node %q: no peer", node)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return fmt.Errorf("node %q: the connection has no verified client certificate", node)
	}
	got, ok := GroupOfCertificate(info.State.VerifiedChains[0][0])
	if !ok {
		return fmt.Errorf("node %q: the client certificate carries no single Weir gateway identity", node)
	}
	if got != group {
		return fmt.Errorf("node %q asks for %s, but the client certificate is %s's", node, describeGroup(group), describeGroup(got))
	}
	return nil
}

func describeGroup(group string) string {
	if group == "" {
		return "the shared gateways' config"
	}
	return "Gateway " + group
}

// IdentityLabel marks the Secrets that hold Weir's own xDS credentials (the
// CA, and each gateway identity's certificate), so that nothing serves
// them as a listener's or a backend's certificate.
const IdentityLabel = "weir.dev/xds-identity"

// EnsureGatewaySecret keeps Secret namespace/name holding a certificate
// for group's identity from ca, with ca's certificate as ca.crt: made when
// missing, renewed half way through its life or when the CA changed. It
// reports whether it wrote. A concurrent writer wins; the next call looks
// again. A Secret of that name whose annotations lack any of owner's is
// someone else's, and is not touched.
func EnsureGatewaySecret(ctx context.Context, kube kubernetes.Interface, ca *CA, namespace, name, group string, labels, owner map[string]string, now time.Time) (bool, error) {
	return ensureGatewaySecret(ctx, kube, ca, nil, namespace, name, group, labels, owner, now)
}

// ensureGatewaySecret is EnsureGatewaySecret; confirmCA, when set, is
// asked before a certificate from another CA is replaced.
func ensureGatewaySecret(ctx context.Context, kube kubernetes.Interface, ca *CA, confirmCA func(*CA) error, namespace, name, group string, labels, owner map[string]string, now time.Time) (bool, error) {
	secrets := kube.CoreV1().Secrets(namespace)
	cur, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if err != nil && !apierrs.IsNotFound(err) {
		return false, fmt.Errorf("reading Secret %s/%s: %w", namespace, name, err)
	}
	found := err == nil
	if found {
		for k, v := range owner {
			if cur.Annotations[k] != v {
				return false, fmt.Errorf("Secret %s/%s exists and is not the xDS certificate of %s; remove it", namespace, name, describeGroup(group))
			}
		}
	}
	identity := IdentityOf(group)
	if found && string(cur.Data[CAFile]) == string(ca.CertPEM) && !ca.NeedsRenewal(cur.Data[CertFile], identity, now) {
		return false, nil
	}
	if found && string(cur.Data[CAFile]) != string(ca.CertPEM) && confirmCA != nil {
		if err := confirmCA(ca); err != nil {
			return false, err
		}
	}
	certPEM, keyPEM, err := ca.Issue(now, LeafLifetime, identity, nil, false)
	if err != nil {
		return false, err
	}
	lbls := map[string]string{IdentityLabel: "gateway"}
	for k, v := range labels {
		lbls[k] = v
	}
	data := map[string][]byte{CAFile: ca.CertPEM, CertFile: certPEM, KeyFile: keyPEM}
	annotations := owner
	if found {
		annotations = maps.Clone(cur.Annotations)
		delete(annotations, PreviousUntilAnnotation)
		if old := parseCert(cur.Data[CertFile]); old != nil && old.CheckSignatureFrom(ca.Cert) == nil && now.Before(old.NotAfter) {
			// A renewal: the old certificate stays in force until the
			// gateway has the new one (Authority.InForce).
			data[PreviousCertFile] = cur.Data[CertFile]
			if annotations == nil {
				annotations = map[string]string{}
			}
			annotations[PreviousUntilAnnotation] = now.Add(WithdrawalGrace).UTC().Format(time.RFC3339)
		}
	}
	if !found {
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: lbls, Annotations: owner},
			Type:       corev1.SecretTypeTLS,
			Data:       data,
		}, metav1.CreateOptions{})
		if apierrs.IsAlreadyExists(err) {
			return false, nil
		}
	} else {
		next := cur.DeepCopy()
		next.Labels, next.Data, next.Annotations = lbls, data, annotations
		_, err = secrets.Update(ctx, next, metav1.UpdateOptions{})
		if apierrs.IsConflict(err) {
			return false, nil
		}
	}
	if err != nil {
		return false, fmt.Errorf("writing the xDS certificate Secret %s/%s: %w", namespace, name, err)
	}
	return true, nil
}
