package translate

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// The checks in this file mirror checks that Envoy makes when it loads
// config and that go-control-plane's Validate() does not: config that
// fails one of them would be NACKed, and with ADS a NACK refuses the whole
// update, every other object's changes included. Each names the Envoy
// source it mirrors; docs/envoy-compat.md lists them all.

// canonicalHost returns a virtual host domain or TLS server name as Envoy
// compares it: lower-cased with ASCII rules.
//
// Envoy lower-cases domains and the Host header with absl::AsciiStrToLower
// (source/common/router/config_impl.cc). Go's strings.ToLower folds
// Unicode too: the Kelvin sign (U+212A) becomes "k", so "\u212Aube.example"
// would become another object's "kube.example" here while Envoy kept them
// apart. A host that is not ASCII is refused instead; IDNA's mapping would
// fold it the same way, so it is not punycoded either.
func canonicalHost(h string) (string, error) {
	if h == "" {
		return "", errors.New("empty host")
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= utf8.RuneSelf:
			return "", errors.New("not ASCII; write an internationalized name in its punycode form (xn--...)")
		case c <= ' ' || c == 0x7f:
			return "", fmt.Errorf("control character or space at byte %d", i)
		}
	}
	return asciiLower(h), nil
}

func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + ('a' - 'A')
				}
			}
			return string(b)
		}
	}
	return s
}

// canonicalServerName returns a TLS server name as Envoy's filter chain
// manager keys it, in the form Weir emits.
//
// Envoy (source/common/listener_manager/filter_chain_manager_impl.cc,
// addFilterChainForServerNames) stores "*.x.example.com" under
// ".x.example.com", the key it also looks a literal ".x.example.com" up
// by; the two in one listener are "multiple filter chains with overlapping
// matching rules", which refuses the whole listener. A leading dot is
// therefore the same wildcard, and is written "*." here so the two
// de-duplicate. Any other '*' is refused: Envoy matches no other wildcard.
func canonicalServerName(h string) (string, error) {
	h, err := canonicalHost(h)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(h, ".") {
		h = "*" + h
	}
	if i := strings.LastIndexByte(h, '*'); i > 0 || i == 0 && (!strings.HasPrefix(h, "*.") || len(h) == 2) {
		return "", errors.New(`only a leading "*." wildcard is supported`)
	}
	return h, nil
}

// checkKeyPair reports whether chain and key form a key pair that Envoy
// loads. Go's tls.X509KeyPair accepts more than Envoy does: Envoy's TLS
// context (source/common/tls/context_impl.cc, ContextImpl::ContextImpl)
// refuses RSA keys under 2048 bits and ECDSA keys on curves other than
// P-256, P-384 and P-521 (P-256 only before Envoy 1.33). It loads Ed25519
// outside FIPS builds, as Go does.
func checkKeyPair(chain, key []byte) error {
	pair, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return err
	}
	return checkPublicKey(pair.Leaf.PublicKey)
}

func checkPublicKey(pub any) error {
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
