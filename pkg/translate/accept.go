package translate

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/weir-dev/weir/pkg/envoycheck"
	"github.com/weir-dev/weir/pkg/ir"
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
	return ir.LowerASCII(h), nil
}

// checkDomainWildcard refuses a '*' that Envoy's virtual host matching
// (source/common/router/config_impl.cc) cannot honour: "*" alone, or one
// leading or one trailing '*', are wildcards; any other '*' makes an exact
// domain that no Host matches.
func checkDomainWildcard(d string) error {
	if d == "*" {
		return nil
	}
	inner := d
	if strings.HasPrefix(inner, "*") {
		inner = inner[1:]
	} else if strings.HasSuffix(inner, "*") {
		inner = inner[:len(inner)-1]
	}
	if strings.Contains(inner, "*") {
		return errors.New(`a '*' is a wildcard only as the first or the last character; here it would match no real host`)
	}
	return nil
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
// loads: Go's tls.X509KeyPair accepts more than Envoy does
// (envoycheck.Certificate).
func checkKeyPair(chain, key []byte) error {
	pair, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return err
	}
	return envoycheck.Certificate(pair.Leaf)
}
