// Package secrets owns how front ends read a TLS key pair from a Secret:
// the type it must have, the Secrets that are never served, and problems
// that name the Secret without ever quoting key material.
package secrets

import (
	"crypto/tls"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/weir-dev/weir/pkg/xdstls"
)

// TLSKeyPair reads the key pair of Secret ns/name, or says why it cannot
// be served; the reason never holds key bytes.
func TLSKeyPair(l corelisters.SecretLister, ns, name string) (chain, key []byte, problem string) {
	chain, key, _, problem = TLSKeyPairAndCA(l, ns, name)
	return chain, key, problem
}

// TLSKeyPairAndCA is TLSKeyPair plus the Secret's ca.crt (nil when it has
// none), as cert-manager writes it beside the pair.
func TLSKeyPairAndCA(l corelisters.SecretLister, ns, name string) (chain, key, ca []byte, problem string) {
	sec, err := l.Secrets(ns).Get(name)
	if err != nil {
		if apierrs.IsNotFound(err) {
			return nil, nil, nil, fmt.Sprintf("Secret %s/%s does not exist (weir-controller sees Secrets of type kubernetes.io/tls only)", ns, name)
		}
		return nil, nil, nil, fmt.Sprintf("reading Secret %s/%s: %v", ns, name, err)
	}
	if sec.Type != corev1.SecretTypeTLS {
		return nil, nil, nil, fmt.Sprintf("Secret %s/%s is of type %q; it must be of type kubernetes.io/tls", ns, name, sec.Type)
	}
	if sec.Labels[xdstls.IdentityLabel] != "" {
		return nil, nil, nil, fmt.Sprintf("Secret %s/%s holds Weir's own xDS credentials and is never served; use another Secret", ns, name)
	}
	chain, key = sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]
	if _, err := tls.X509KeyPair(chain, key); err != nil {
		return nil, nil, nil, fmt.Sprintf("Secret %s/%s does not hold a usable tls.crt and tls.key: %v", ns, name, err)
	}
	return chain, key, sec.Data["ca.crt"], ""
}
