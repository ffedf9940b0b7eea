package dataplane

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weir-dev/weir/pkg/envoycheck"
)

// upstreamTLS is a cluster's envoy.transport_sockets.tls UpstreamTlsContext,
// with Envoy's semantics: no validation_context verifies nothing; a
// trusted_ca verifies the chain; SAN matchers then require one of the
// names.
type upstreamTLS struct {
	sni   string
	alpn  []string
	roots *x509.CertPool
	sans  []sanMatcher
	// clientCert, when set, is presented to the upstream; secret is its
	// SDS name.
	clientCert *tls.Certificate
	secret     string
	// key identifies the configuration, for the pool key.
	key string
}

func parseUpstreamTLS(ts *corev3.TransportSocket, path string, secrets map[string]*tls.Certificate) (*upstreamTLS, error) {
	if err := onlyFields(ts, path, "name", "typed_config"); err != nil {
		return nil, err
	}
	var ctx tlsv3.UpstreamTlsContext
	if err := unpack(ts.GetTypedConfig(), &ctx, sub(path, "typed_config")); err != nil {
		return nil, err
	}
	p := sub(path, "typed_config")
	if err := pgv(&ctx, p); err != nil {
		return nil, err
	}
	if err := onlyFields(&ctx, p, "sni", "common_tls_context"); err != nil {
		return nil, err
	}
	out := &upstreamTLS{sni: ctx.GetSni()}
	common := ctx.GetCommonTlsContext()
	cp := sub(p, "common_tls_context")
	if err := onlyFields(common, cp, "alpn_protocols", "validation_context", "tls_certificate_sds_secret_configs"); err != nil {
		return nil, err
	}
	out.alpn = common.GetAlpnProtocols()
	var certID []byte
	switch sdss := common.GetTlsCertificateSdsSecretConfigs(); len(sdss) {
	case 0:
	case 1:
		sp := idx(sub(cp, "tls_certificate_sds_secret_configs"), 0)
		if err := onlyFields(sdss[0], sp, "name", "sds_config"); err != nil {
			return nil, err
		}
		if err := checkADS(sdss[0].GetSdsConfig(), sub(sp, "sds_config")); err != nil {
			return nil, err
		}
		out.secret = sdss[0].GetName()
		if out.clientCert = secrets[out.secret]; out.clientCert == nil {
			return nil, fmt.Errorf("%s: secret %q: %w", sub(sp, "name"), out.secret, ErrMissingResource)
		}
		for _, der := range out.clientCert.Certificate {
			certID = append(certID, der...)
		}
	default:
		// As Envoy: a client presents one certificate.
		return nil, invalid(sub(cp, "tls_certificate_sds_secret_configs"), "Multiple TLS certificates are not supported for client contexts")
	}
	if vc := common.GetValidationContext(); vc != nil {
		vp := sub(cp, "validation_context")
		if err := onlyFields(vc, vp, "trusted_ca", "match_typed_subject_alt_names"); err != nil {
			return nil, err
		}
		for i, m := range vc.GetMatchTypedSubjectAltNames() {
			mp := idx(sub(vp, "match_typed_subject_alt_names"), i)
			t := m.GetSanType()
			if t != tlsv3.SubjectAltNameMatcher_DNS && t != tlsv3.SubjectAltNameMatcher_URI {
				return nil, invalid(sub(mp, "san_type"), "%v is not supported by weir-proxy", t)
			}
			exact := m.GetMatcher().GetExact()
			if exact == "" || m.GetMatcher().GetIgnoreCase() {
				return nil, invalid(sub(mp, "matcher"), "only an exact, case-sensitive match is supported by weir-proxy")
			}
			out.sans = append(out.sans, sanMatcher{uri: t == tlsv3.SubjectAltNameMatcher_URI, exact: exact})
		}
		if ca := vc.GetTrustedCa(); ca != nil {
			pem, err := dataSource(ca, sub(vp, "trusted_ca"))
			if err != nil {
				return nil, err
			}
			// As Envoy: one block that does not parse refuses the bundle.
			if out.roots, err = envoycheck.CABundle(pem); err != nil {
				return nil, invalid(sub(vp, "trusted_ca"), "Failed to load trusted CA certificates: %v", err)
			}
		} else if len(out.sans) > 0 {
			// Envoy's DefaultCertValidator refuses this too.
			return nil, invalid(vp, "SAN-based verification of peer certificates without trusted CA is insecure and not allowed")
		}
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&ctx)
	if err != nil {
		return nil, invalid(p, "%v", err)
	}
	// The secret's content too: a rotated client certificate makes new
	// connections.
	sum := sha256.Sum256(append(b, certID...))
	out.key = hex.EncodeToString(sum[:8])
	return out, nil
}

// dataSource reads a DataSource as Envoy does at config load: a file
// that cannot be read refuses the config.
func dataSource(ds *corev3.DataSource, path string) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		if err != nil {
			return nil, invalid(sub(path, "filename"), "cannot read %q: %v", s.Filename, err)
		}
		return b, nil
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	}
	return nil, invalid(path, "a filename, inline_bytes or inline_string is required")
}

func (u *upstreamTLS) config() *tls.Config {
	var certs []tls.Certificate
	if u.clientCert != nil {
		certs = []tls.Certificate{*u.clientCert}
	}
	return &tls.Config{
		ServerName:   u.sni,
		NextProtos:   u.alpn,
		Certificates: certs,
		// Verification is Envoy's, below: the chain against trusted_ca
		// (not against the SNI), then the SAN matchers.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection:   u.verify,
		MinVersion:         tls.VersionTLS12,
	}
}

func (u *upstreamTLS) verify(cs tls.ConnectionState) error {
	if u.roots == nil {
		return nil
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("upstream sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	// Envoy's default validator checks the chain, not the extended key
	// usage, so any is accepted.
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: u.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("upstream certificate: %w", err)
	}
	if len(u.sans) == 0 {
		return nil
	}
	for _, want := range u.sans {
		if want.matches(leaf) {
			return nil
		}
	}
	return fmt.Errorf("upstream certificate for %v %v matches none of %v", leaf.DNSNames, leaf.URIs, u.sans)
}

// sanMatcher is one match_typed_subject_alt_names entry: an exact DNS name
// (with Envoy's wildcard certificate rule) or an exact URI.
type sanMatcher struct {
	uri   bool
	exact string
}

func (m sanMatcher) matches(leaf *x509.Certificate) bool {
	if m.uri {
		for _, u := range rawURISANs(leaf) {
			if u == m.exact {
				return true
			}
		}
		return false
	}
	for _, got := range leaf.DNSNames {
		if dnsNameMatch(m.exact, got) {
			return true
		}
	}
	return false
}

// rawURISANs are the certificate's URI SANs as written: Envoy compares
// those bytes, where Go's parsed URIs are re-serialised (the scheme
// lower-cased, the path re-escaped).
func rawURISANs(c *x509.Certificate) []string {
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var seq asn1.RawValue
		if rest, err := asn1.Unmarshal(ext.Value, &seq); err != nil || len(rest) > 0 || !seq.IsCompound || seq.Tag != asn1.TagSequence {
			return nil
		}
		var out []string
		for rest := seq.Bytes; len(rest) > 0; {
			var name asn1.RawValue
			var err error
			if rest, err = asn1.Unmarshal(rest, &name); err != nil {
				return out
			}
			// GeneralName [6] uniformResourceIdentifier IA5String.
			if name.Class == asn1.ClassContextSpecific && name.Tag == 6 && !name.IsCompound {
				out = append(out, string(name.Bytes))
			}
		}
		return out
	}
	return nil
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

func (m sanMatcher) String() string {
	if m.uri {
		return "URI:" + m.exact
	}
	return "DNS:" + m.exact
}

// dnsNameMatch is Envoy's match of a configured DNS name against a
// certificate's: exact, or a "*." certificate name covering one label,
// without ASCII case (only ASCII: the Kelvin sign is not a k).
func dnsNameMatch(want, cert string) bool {
	if asciiEqualFold(want, cert) {
		return true
	}
	if rest, ok := strings.CutPrefix(cert, "*."); ok {
		if i := strings.IndexByte(want, '.'); i > 0 && asciiEqualFold(want[i+1:], rest) {
			return true
		}
	}
	return false
}

func asciiEqualFold(a, b string) bool {
	return len(a) == len(b) && lowerASCII(a) == lowerASCII(b)
}

// dialTLS wraps dial with the handshake; a failed handshake is a connect
// failure, as in Envoy.
func (u *upstreamTLS) dialTLS(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return u.dialTLSWith(u.config(), dial)
}

// dialTLSWith is dialTLS with conf, a config of u's.
func (u *upstreamTLS) dialTLSWith(conf *tls.Config, dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(c, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, &connectError{fmt.Errorf("TLS handshake with %s: %w", addr, err)}
		}
		return tc, nil
	}
}
