package ingress

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/weir-dev/weir/pkg/envoycheck"
	"github.com/weir-dev/weir/pkg/ir"
)

// clientTLSField is the annotation a client certificate problem is
// reported on.
const clientTLSField = "metadata.annotations[" + AnnotationPrefix + "auth-tls-secret]"

// withClientTLS makes the host's TLS connections check client
// certificates as the oldest Ingress of the host with auth-tls-secret
// says, as nginx does per server. It returns the host's HTTPS routes,
// copied, each refusing requests that did not come through the host's
// own filter chain, and ok false when no Ingress asks. A CA Weir cannot serve makes
// them answer 503: the host must not be served unchecked.
func (hb *hostBuilder) withClientTLS(mains []*entry, cert *ir.Certificate, https []*ir.Route) (checked []*ir.Route, ok bool) {
	owner := firstWith(mains, hb.host, func(c config) bool { return c.clientTLS != nil })
	if owner == nil {
		return nil, false
	}
	for _, e := range mains {
		if e != owner && e.cfg.clientTLS != nil && (*e.cfg.clientTLS != *owner.cfg.clientTLS || e.ing.Namespace != owner.ing.Namespace) && servesRulesFor(e.ing, hb.host) {
			hb.problem(e, clientTLSField, "ClientTLSConflict", "host %s checks client certificates as Ingress %s, its oldest with auth-tls-secret, says; this Ingress's settings are not used", hb.host, owner.ref)
		}
	}
	c := owner.cfg.clientTLS
	cv, reason, problem := hb.clientValidation(owner.ing.Namespace, c)
	if problem == "" && hb.host == CatchAllHost {
		reason, problem = "ClientCANotServed", "a rule without a host has no filter chain of its own to check clients on"
	}
	if problem == "" {
		// Its own filter chain: another host may serve the same pair
		// without checking clients. The pair keeps its own name too, for
		// proxy-ssl-secret, which may present it to backends.
		checked := *cert
		checked.ClientValidation = cv
		checked.Name += fmt.Sprintf("+client-ca=%s/%s,verify=%s,depth=%d", owner.ing.Namespace, c.secret, c.verify, c.depth)
		checked.Provenance = append(slices.Clip(cert.Provenance), owner.ref)
		cert.Hosts = nil
		hb.frag.Certificates = append(hb.frag.Certificates, &checked)
		cert = &checked
	}
	for _, r := range https {
		cp := *r
		if problem != "" {
			cp.Redirect, cp.Mirrors, cp.HashPolicy, cp.Filters = nil, nil, nil, nil
			cp.Backends = []ir.WeightedBackend{{BackendName: owner.ref.String() + "/auth-tls-secret", Weight: 100, Unresolved: true}}
		} else {
			// Only over a connection this certificate's chain checked:
			// not over one opened for another name (whose chain checks
			// nothing, or against another CA), nor over any chain that
			// took the host's name if this one was left out.
			cp.Match.ViaCertificate = cert.Name
		}
		checked = append(checked, &cp)
	}
	if problem != "" {
		hb.problem(owner, clientTLSField, reason, "%s; the host's HTTPS paths answer 503 until it is fixed", problem)
		return checked, true
	}
	// Any other connection is answered 421, as nginx answers it: a
	// browser that reused a connection for this host (HTTP/2 coalescing
	// with a shared certificate) then opens one of its own, which this
	// chain checks.
	return append(checked, &ir.Route{
		Name:           hb.host + "/misdirected",
		Match:          ir.Match{Path: ir.PathMatch{Kind: ir.PathPrefix, Value: "/"}},
		DirectResponse: &ir.DirectResponse{StatusCode: http.StatusMisdirectedRequest, Body: "Misdirected Request"},
		Provenance:     ir.Provenance{owner.ref},
	}), true
}

// clientValidation reads c's CA bundle: the ca.crt of a Secret of the
// Ingress's namespace, as ingress-nginx reads it.
// The reason is ClientCANotFound for a Secret that does not exist.
func (hb *hostBuilder) clientValidation(ns string, c *clientTLSConfig) (cv *ir.ClientValidation, reason, problem string) {
	name := ns + "/" + c.secret
	s, missing, problem := hb.annotationSecret(ns, c.secret, "auth-tls-secret")
	switch {
	case missing:
		return nil, "ClientCANotFound", problem
	case problem != "":
		return nil, "ClientCANotServed", problem
	}
	notServed := func(format string, args ...any) (*ir.ClientValidation, string, string) {
		return nil, "ClientCANotServed", fmt.Sprintf(format, args...)
	}
	ca := s.Data["ca.crt"]
	if len(ca) == 0 {
		return notServed("Secret %s of auth-tls-secret has no ca.crt", name)
	}
	if _, ok := s.Data["ca.crl"]; ok {
		// ingress-nginx refuses the certificates it lists; serving
		// without it would let them in.
		return notServed("Secret %s of auth-tls-secret has a ca.crl, which Weir does not apply yet", name)
	}
	// Checked here, not only where Envoy's config is made: a host whose
	// check were left out there would take its clients unchecked.
	if _, err := envoycheck.CABundle(ca); err != nil {
		return notServed("Secret %s of auth-tls-secret: ca.crt: %v", name, err)
	}
	// nginx's depth counts the intermediates (OpenSSL 1.1: neither the
	// client's own certificate nor the trust anchor), and takes 0 as 1;
	// Envoy's counts the certificates after the client's, the trust
	// anchor included.
	depth := max(c.depth, 1) + 1
	return &ir.ClientValidation{
		CACertificates:        ca,
		Optional:              c.verify == "optional",
		AllowInsecureFallback: c.verify == "optional_no_ca",
		MaxDepth:              &depth,
	}, "", ""
}
