// Package envoycheck owns the checks that Envoy makes when it loads a
// certificate, and that Go's crypto/tls does not: translate applies them
// to refuse a certificate per source object, and weir-proxy to NACK what
// Envoy would. docs/envoy-compat.md lists them with their Envoy sources.
package envoycheck

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
)

// Certificate reports whether Envoy loads leaf as a server certificate.
// Envoy's TLS context (source/common/tls/context_impl.cc, ContextImpl)
// refuses RSA keys under 2048 bits and ECDSA keys on curves other than
// P-256, P-384 and P-521 (P-256 only before Envoy 1.33); it loads Ed25519
// outside FIPS builds, as Go does.
func Certificate(leaf *x509.Certificate) error {
	if err := leafNames(leaf); err != nil {
		return err
	}
	return publicKey(leaf.PublicKey)
}

// leafNames mirrors Envoy's server TLS context
// (source/common/tls/server_context_impl.cc), which builds its session ID
// context from the certificate's names: a certificate with neither a
// subject CN nor any SAN, or with an empty CN, is refused.
func leafNames(leaf *x509.Certificate) error {
	hasCN := false
	for _, n := range leaf.Subject.Names {
		if n.Type.Equal(oidCommonName) {
			if s, _ := n.Value.(string); s == "" {
				return errors.New("the certificate's subject CN is empty: Envoy refuses it")
			}
			hasCN = true
		}
	}
	hasSAN := len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.URIs)+len(leaf.EmailAddresses) > 0
	if !hasCN && !hasSAN {
		return errors.New("the certificate has neither a subject CN nor a SAN: Envoy refuses it")
	}
	return nil
}

var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

func publicKey(pub any) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < 2048 {
			return fmt.Errorf("an RSA key of %d bits: Envoy loads only RSA keys of 2048 bits or more", bits)
		}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return fmt.Errorf("an ECDSA key on curve %s: Envoy loads only P-256, P-384 and P-521", k.Curve.Params().Name)
		}
	}
	return nil
}

// CABundle parses a PEM bundle of trusted CA certificates as Envoy loads a
// validation context's trusted_ca: every CERTIFICATE block must parse (one
// bad block fails the whole bundle, where Go's AppendCertsFromPEM would
// skip it), other block types are ignored, and there must be at least one
// certificate.
func CABundle(pemData []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := pemData; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of the CA bundle: %w", n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("the CA bundle has no PEM certificate")
	}
	return pool, nil
}
