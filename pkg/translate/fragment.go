package translate

import (
	"bytes"
	"reflect"
	"slices"
	"time"
	"unicode/utf8"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weir-dev/weir/pkg/envoycheck"
	"github.com/weir-dev/weir/pkg/ir"
)

// fragmentEntry memoizes the translation of one source object's fragment.
//
// A fragment is split into parts (virtual hosts, backends, certificates).
// Parts are immutable once built; when the fragment changes, a part whose
// input is equal to before is reused as is, so its protos keep their
// pointers.
type fragmentEntry struct {
	frag   *ir.Fragment
	source string // frag.Source.String(), the tie-breaker between equal names
	ref    ir.ObjectRef
	// pos is the fragment's index in the latest input: the earlier fragment
	// wins when two define the same backend or certificate differently.
	pos        int
	generation uint64

	vhosts    []*vhostPart
	backends  []*backendPart
	certs     []*certPart
	listeners []*listenerPart
	// warnings are those not carried by a part, e.g. about a skipped backend.
	warnings []Problem
}

// partState is what the aggregate tables need to know about any part.
type partState struct {
	// dead is set once the part no longer belongs to a live fragment. It is
	// never cleared: a dead part is not reused.
	dead  bool
	stamp uint8 // scratch for diffParts
}

func (s *partState) state() *partState { return s }

type part interface{ state() *partState }

// vhostPart is one translated virtual host.
type vhostPart struct {
	partState
	entry *fragmentEntry
	name  string
	ir    *ir.VirtualHost
	// missing lists the referenced backends that had no cluster when the
	// part was built; the part is only valid while that stays so.
	missing []string
	roles   ir.ListenerSet
	// proto is nil when the virtual host cannot be emitted at all.
	proto           *routev3.VirtualHost
	usesUnavailable bool
	sourceKey       string
	provenance      ir.Provenance
	field           string
	warnings        []Problem
}

// problem is a problem with the whole virtual host, found when the
// aggregate tables combine it with others.
func (p *vhostPart) problem(reason, format string, args ...any) Problem {
	w := warner{source: p.entry.ref, field: p.field}
	w.addReason(reason, format, args...)
	return w.list[0]
}

// clusterDef is everything the Cluster proto depends on besides the name.
type clusterDef struct {
	service      ir.ServiceRef
	protocol     ir.Protocol
	externalName string
	// tls is ir.BackendTLS.Key.
	tls            string
	connectTimeout time.Duration
	lb             ir.LoadBalancer
	maxRequests    uint32
}

// backendPart is one translated backend: its cluster and, for EDS, its load
// assignment.
type backendPart struct {
	partState
	entry      *fragmentEntry
	name       string
	ir         *ir.Backend
	def        clusterDef
	endpoints  []ir.Endpoint
	cluster    *clusterv3.Cluster
	cla        *endpointv3.ClusterLoadAssignment // nil for ExternalName
	provenance ir.Provenance
	warnings   []Problem // about endpoints left out of cla
	// clusterKey and endpointKey are the Resources.Sources keys.
	clusterKey, endpointKey string
}

// certPart is one certificate name of one fragment; several ir.Certificates
// of the fragment with the same name are merged into it.
type certPart struct {
	partState
	entry      *fragmentEntry
	name       string
	hosts      []string // lower-case, sorted, unique
	roles      ir.ListenerSet
	chain, key []byte
	// validation is how clients are checked; nil asks for nothing.
	validation *ir.ClientValidation
	secret     *tlsv3.Secret
	secretKey  string // the Resources.Sources key
	provenance ir.Provenance
	field      string
}

// problem is a problem with the certificate, found when the aggregate
// tables combine it with others.
func (p *certPart) problem(reason, format string, args ...any) Problem {
	w := warner{source: p.entry.ref, field: p.field}
	w.addReason(reason, format, args...)
	return w.list[0]
}

// delta is what changed in one Translate call.
type delta struct {
	fragmentsChanged bool
	orderChanged     bool
	// warningsChanged is set when a fragment that had or has warnings changed.
	warningsChanged bool

	addedVhosts, deadVhosts       []*vhostPart
	addedBackends, deadBackends   []*backendPart
	addedCerts, deadCerts         []*certPart
	addedListeners, deadListeners []*listenerPart
}

func (d *delta) changed() bool { return d.fragmentsChanged || d.orderChanged }

// rebuild translates f, reusing whatever parts of the previous fragment are
// unchanged, and records the difference in d.
func (e *fragmentEntry) rebuild(f *ir.Fragment, s *shared, d *delta) {
	d.fragmentsChanged = true
	d.warningsChanged = d.warningsChanged || e.hasWarnings()
	w := warner{source: f.Source}

	backends := e.rebuildBackends(f, s, &w)
	available := newNameSet(backends)
	vhosts := e.rebuildVhosts(f, available, s, &w)
	certs := e.rebuildCerts(f, s, &w)
	listeners := e.rebuildListeners(f, vhosts, certs, available, s, &w)

	added, dead := diffParts(e.backends, backends)
	d.addedBackends, d.deadBackends = append(d.addedBackends, added...), append(d.deadBackends, dead...)
	addedV, deadV := diffParts(e.vhosts, vhosts)
	d.addedVhosts, d.deadVhosts = append(d.addedVhosts, addedV...), append(d.deadVhosts, deadV...)
	addedC, deadC := diffParts(e.certs, certs)
	d.addedCerts, d.deadCerts = append(d.addedCerts, addedC...), append(d.deadCerts, deadC...)
	addedL, deadL := diffParts(e.listeners, listeners)
	d.addedListeners, d.deadListeners = append(d.addedListeners, addedL...), append(d.deadListeners, deadL...)

	e.frag, e.backends, e.vhosts, e.certs, e.listeners, e.warnings = f, backends, vhosts, certs, listeners, w.list
	d.warningsChanged = d.warningsChanged || e.hasWarnings()
}

// evict records that the fragment is gone.
func (e *fragmentEntry) evict(d *delta) {
	d.fragmentsChanged = true
	d.warningsChanged = d.warningsChanged || e.hasWarnings()
	for _, p := range e.backends {
		p.dead = true
		d.deadBackends = append(d.deadBackends, p)
	}
	for _, p := range e.vhosts {
		p.dead = true
		d.deadVhosts = append(d.deadVhosts, p)
	}
	for _, p := range e.certs {
		p.dead = true
		d.deadCerts = append(d.deadCerts, p)
	}
	for _, p := range e.listeners {
		p.dead = true
		d.deadListeners = append(d.deadListeners, p)
	}
}

func (e *fragmentEntry) hasWarnings() bool {
	return len(e.warnings) > 0 ||
		slices.ContainsFunc(e.backends, func(p *backendPart) bool { return len(p.warnings) > 0 }) ||
		slices.ContainsFunc(e.vhosts, func(p *vhostPart) bool { return len(p.warnings) > 0 }) ||
		slices.ContainsFunc(e.listeners, func(p *listenerPart) bool { return len(p.warnings) > 0 })
}

func (e *fragmentEntry) appendWarnings(out []Problem) []Problem {
	out = append(out, e.warnings...)
	for _, p := range e.backends {
		out = append(out, p.warnings...)
	}
	for _, p := range e.vhosts {
		out = append(out, p.warnings...)
	}
	for _, p := range e.listeners {
		out = append(out, p.warnings...)
	}
	return out
}

// diffParts marks the parts of old that are not in next as dead, and
// returns them along with the parts of next that are new.
func diffParts[P part](old, next []P) (added, dead []P) {
	for _, p := range old {
		p.state().stamp = 1
	}
	for _, p := range next {
		if p.state().stamp != 1 {
			added = append(added, p)
		}
		p.state().stamp = 2
	}
	for _, p := range old {
		if p.state().stamp == 1 {
			p.state().dead = true
			dead = append(dead, p)
		}
	}
	for _, p := range next {
		p.state().stamp = 0
	}
	return added, dead
}

func (e *fragmentEntry) rebuildBackends(f *ir.Fragment, s *shared, w *warner) []*backendPart {
	out := make([]*backendPart, 0, len(f.Backends))
	for _, b := range f.Backends {
		if b == nil {
			w.add("nil backend ignored")
			continue
		}
		if i := slices.IndexFunc(out, func(p *backendPart) bool { return p.name == b.Name }); i >= 0 {
			if out[i].def != defOf(b) || !slices.Equal(out[i].endpoints, b.Endpoints) {
				w.add("backend %q is defined twice with different content; the first definition is used", b.Name)
			}
			continue
		}
		var prev *backendPart
		if i := slices.IndexFunc(e.backends, func(p *backendPart) bool { return p.name == b.Name }); i >= 0 {
			prev = e.backends[i]
		}
		if p := e.backendPart(f, b, prev, s, w); p != nil {
			out = append(out, p)
		}
	}
	return out
}

func defOf(b *ir.Backend) clusterDef {
	return clusterDef{service: b.Service, protocol: b.Protocol, externalName: b.ExternalName, tls: b.TLS.Key(), connectTimeout: b.ConnectTimeout, lb: b.LoadBalancer, maxRequests: b.MaxRequests}
}

// backendPart returns prev when b translates to the same protos, otherwise a
// new part that still shares whichever of prev's protos are unchanged. It
// returns nil, with a warning, for a backend that cannot be a cluster.
func (e *fragmentEntry) backendPart(f *ir.Fragment, b *ir.Backend, prev *backendPart, s *shared, w *warner) *backendPart {
	def := defOf(b)
	prov := provenanceOr(b.Provenance, f)
	if prev != nil && (prev.ir == b ||
		prev.def == def && slices.Equal(prev.endpoints, b.Endpoints) && slices.Equal(prev.provenance, prov)) {
		return prev
	}
	p := &backendPart{entry: e, name: b.Name, ir: b, def: def, endpoints: b.Endpoints, provenance: prov}
	if prev != nil {
		p.clusterKey, p.endpointKey = prev.clusterKey, prev.endpointKey
	} else {
		p.clusterKey, p.endpointKey = SourceKey(resourcev3.ClusterType, b.Name), SourceKey(resourcev3.EndpointType, b.Name)
	}
	if prev != nil && prev.def == def {
		p.cluster = prev.cluster
	} else {
		if b.TLS != nil && b.TLS.ClientCertificate != "" && !slices.ContainsFunc(f.Certificates, func(fc *ir.Certificate) bool { return fc != nil && fc.Name == b.TLS.ClientCertificate }) {
			// Envoy would wait for the secret for ever: the cluster would
			// never warm.
			w.add("backend %q left out: its client certificate %q is not among the fragment's certificates", b.Name, b.TLS.ClientCertificate)
			return nil
		}
		c, err := buildCluster(b, s)
		if err != nil {
			w.add("backend %q left out: %v", b.Name, err)
			return nil
		}
		p.cluster = c
	}
	if def.externalName == "" {
		if prev != nil && prev.cla != nil && slices.Equal(prev.endpoints, b.Endpoints) {
			p.cla, p.warnings = prev.cla, prev.warnings
		} else {
			p.cla, p.warnings = buildLoadAssignment(b.Name, b.Endpoints, f.Source)
		}
	}
	return p
}

// provenanceOr returns p, or the fragment's own source when the front end
// did not say.
func provenanceOr(p ir.Provenance, f *ir.Fragment) ir.Provenance {
	if len(p) > 0 {
		return p
	}
	return ir.Provenance{f.Source}
}

// nameSet is the set of backends that have a cluster.
type nameSet struct {
	small []*backendPart
	big   map[string]bool
}

func newNameSet(parts []*backendPart) nameSet {
	if len(parts) <= 8 {
		return nameSet{small: parts}
	}
	m := make(map[string]bool, len(parts))
	for _, p := range parts {
		m[p.name] = true
	}
	return nameSet{big: m}
}

func (n nameSet) has(name string) bool {
	if n.big != nil {
		return n.big[name]
	}
	for _, p := range n.small {
		if p.name == name {
			return true
		}
	}
	return false
}

func (e *fragmentEntry) rebuildVhosts(f *ir.Fragment, available nameSet, s *shared, w *warner) []*vhostPart {
	out := make([]*vhostPart, 0, len(f.VirtualHosts))
	for _, vh := range f.VirtualHosts {
		if vh == nil {
			w.add("nil virtual host ignored")
			continue
		}
		if slices.ContainsFunc(out, func(p *vhostPart) bool { return p.name == vh.Name }) {
			w.add("virtual host %q defined twice; the second is ignored", vh.Name)
			continue
		}
		missing := missingBackends(vh, available)
		if i := slices.IndexFunc(e.vhosts, func(p *vhostPart) bool { return p.name == vh.Name }); i >= 0 {
			prev := e.vhosts[i]
			if slices.Equal(prev.missing, missing) && (prev.ir == vh || reflect.DeepEqual(prev.ir, vh)) {
				out = append(out, prev)
				continue
			}
		}
		p := &vhostPart{
			entry:      e,
			name:       vh.Name,
			ir:         vh,
			missing:    missing,
			roles:      vh.Listeners,
			sourceKey:  SourceKey(resourcev3.VirtualHostType, vh.Name),
			provenance: provenanceOr(vh.Provenance, f),
			field:      vh.Field,
		}
		vw := warner{source: f.Source, vhost: vh.Name, field: vh.Field}
		p.proto, p.usesUnavailable = buildVirtualHost(vh, available, s, &vw)
		p.warnings = vw.list
		out = append(out, p)
	}
	return out
}

// missingBackends lists, in order of appearance, the backends vh refers to
// that have no cluster.
func missingBackends(vh *ir.VirtualHost, available nameSet) []string {
	var missing []string
	for _, r := range vh.Routes {
		if r == nil {
			continue
		}
		for _, b := range r.Backends {
			if !b.Unresolved && !available.has(b.BackendName) {
				missing = append(missing, b.BackendName)
			}
		}
		for _, m := range r.Mirrors {
			if !available.has(m.BackendName) {
				missing = append(missing, m.BackendName)
			}
		}
		for _, f := range r.Filters {
			if a, ok := f.(*ir.ExtAuth); ok && !available.has(a.BackendName) {
				missing = append(missing, a.BackendName)
			}
		}
	}
	return missing
}

func (e *fragmentEntry) rebuildCerts(f *ir.Fragment, s *shared, w *warner) []*certPart {
	var out []*certPart
	for _, c := range f.Certificates {
		switch {
		case c == nil:
			w.add("nil certificate ignored")
			continue
		case c.Name == "" || !utf8.ValidString(c.Name):
			w.add("certificate without a valid name ignored")
			continue
		case len(c.CertChain) == 0 || len(c.PrivateKey) == 0:
			w.addAt(c.Field, ReasonUnsupportedCertificate, "certificate %q left out: empty certificate chain or private key", c.Name)
			continue
		}
		prov := provenanceOr(c.Provenance, f)
		hosts := serverNames(c, w)
		if i := slices.IndexFunc(out, func(p *certPart) bool { return p.name == c.Name }); i >= 0 {
			p := out[i]
			if !bytes.Equal(p.chain, c.CertChain) || !bytes.Equal(p.key, c.PrivateKey) {
				w.add("certificate %q is defined twice with different key material; the first is used", c.Name)
			}
			if !sameValidation(p.validation, c.ClientValidation) {
				w.add("certificate %q is defined twice with different client validation; the first is used", c.Name)
			}
			p.hosts = normalizeHosts(append(hosts, p.hosts...))
			p.roles |= c.Listeners
			p.provenance = unionProvenance(p.provenance, prov)
			continue
		}
		if c.ClientValidation != nil {
			if _, err := envoycheck.CABundle(c.ClientValidation.CACertificates); err != nil {
				// Serving the hosts without the check would let every
				// client in.
				w.addAt(c.Field, ReasonUnsupportedCertificate, "certificate %q left out: its client CA bundle: %v", c.Name, err)
				continue
			}
		}
		out = append(out, &certPart{
			entry:      e,
			name:       c.Name,
			hosts:      normalizeHosts(hosts),
			roles:      c.Listeners,
			chain:      c.CertChain,
			key:        c.PrivateKey,
			validation: c.ClientValidation,
			secretKey:  SourceKey(resourcev3.SecretType, c.Name),
			provenance: prov,
			field:      c.Field,
		})
	}
	// Reuse the previous part, or at least its Secret, where nothing changed.
	for i, p := range out {
		var prev *certPart
		if j := slices.IndexFunc(e.certs, func(q *certPart) bool { return q.name == p.name }); j >= 0 {
			prev = e.certs[j]
		}
		sameKeys := prev != nil && bytes.Equal(prev.chain, p.chain) && bytes.Equal(prev.key, p.key)
		switch {
		case sameKeys && prev.roles == p.roles && slices.Equal(prev.hosts, p.hosts) && slices.Equal(prev.provenance, p.provenance) && sameValidation(prev.validation, p.validation):
			out[i] = prev
		case sameKeys:
			p.secret = prev.secret
		default:
			// Envoy and weir-proxy reject a secret they cannot load, and
			// weir-proxy then rejects the whole update.
			if err := s.checkKeyPair(p.chain, p.key); err != nil {
				w.addAt(p.field, ReasonUnsupportedCertificate, "certificate %q left out: %v", p.name, err)
				continue
			}
			p.secret = buildSecret(p.name, p.chain, p.key)
		}
	}
	return slices.DeleteFunc(out, func(p *certPart) bool { return p.secret == nil })
}

// sameValidation reports whether a and b check clients alike.
func sameValidation(a, b *ir.ClientValidation) bool {
	if a == nil || b == nil {
		return a == b
	}
	return bytes.Equal(a.CACertificates, b.CACertificates) && a.AllowInsecureFallback == b.AllowInsecureFallback && a.Optional == b.Optional &&
		(a.MaxDepth == nil) == (b.MaxDepth == nil) && (a.MaxDepth == nil || *a.MaxDepth == *b.MaxDepth)
}

// serverNames returns c's hosts as filter chain server names
// (canonicalServerName), without those a filter chain cannot match on.
func serverNames(c *ir.Certificate, w *warner) []string {
	out := make([]string, 0, len(c.Hosts))
	for _, h := range c.Hosts {
		sn, err := canonicalServerName(h)
		if err != nil {
			w.addAt(c.Field, ReasonInvalidHost, "certificate %q: host %+q left out: %v", c.Name, h, err)
			continue
		}
		out = append(out, sn)
	}
	return out
}

// normalizeHosts sorts and de-duplicates canonical hosts in place.
func normalizeHosts(hosts []string) []string {
	slices.Sort(hosts)
	return slices.Compact(hosts)
}
