package translate

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/weir-dev/weir/pkg/ir"
)

// FuzzTranslate builds a structurally valid but otherwise arbitrary fragment
// set from the input, translates it, changes part of it and translates
// again. Every result must pass Validate, and the memoized second result
// must equal a fresh translation. The values come from small pools that
// mix good input with input Envoy would reject, so collisions and bad
// values are frequent. Seeds are in testdata/fuzz/FuzzTranslate.
func FuzzTranslate(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		in := &fuzzInput{data: data}
		frags := in.fragments()
		tr := New(DefaultOptions())
		translateOK(t, tr, frags)

		next := in.change(frags)
		got := translateOK(t, tr, next)
		want := translateOK(t, New(DefaultOptions()), next)
		if err := diffResources(got, want); err != nil {
			t.Fatalf("memoized result differs from a fresh translation: %v", err)
		}
	})
}

// fuzzInput hands out the fuzz bytes one at a time, then zeros.
type fuzzInput struct {
	data []byte
	pos  int
}

func (in *fuzzInput) byte() byte {
	if in.pos >= len(in.data) {
		return 0
	}
	b := in.data[in.pos]
	in.pos++
	return b
}

func (in *fuzzInput) intn(n int) int { return int(in.byte()) % n }

func pick[T any](in *fuzzInput, pool ...T) T { return pool[in.intn(len(pool))] }

var (
	fuzzDomains = []string{"a.example.com", "A.example.com", "b.example.com", "*.example.com", "*", "foo.*",
		"a.example.com:8080", "x", "", "bad\nhost", "c.example.com", "\xffbad.example.com",
		"\u212Aube.example.com", "kube.example.com", ".x.example.com", "*.x.example.com", "a.*.example.com", "X.Example.COM"}
	fuzzHeaders  = []string{"x-a", "X-A", "k-network-hash", ":path", "Host", "", "bad\x00name", "x-\xff"}
	fuzzValues   = []string{"v", "50%", "%REQ(x)%", "", "a\r\nb", "true", "\xc3"}
	fuzzBackends = []string{"ns/a:80", "ns/b:80", "ns/c:80", "ns/missing:80", "", UnavailableCluster, "ns/\xff:80"}
	fuzzWeights  = []uint32{0, 1, 50, 100, math.MaxUint32}
	fuzzAddrs    = []string{"10.0.0.1", "10.0.0.2", "fd00::1", "not-an-ip", "fe80::1%eth0", ""}
	fuzzPorts    = []uint32{8012, 80, 0, 70000}
	fuzzCerts    = []string{"ns/t1", "ns/t2", "ns/t3", "", "ns/\xfe"}
)

// fuzzKeyPair returns a valid pair, a mismatched pair, garbage or nothing.
func (in *fuzzInput) fuzzKeyPair() (chain, key []byte) {
	c1, k1 := testKeyPair("fuzz-1")
	c2, k2 := testKeyPair("fuzz-2")
	switch in.intn(7) {
	case 0, 1:
		return c1, k1
	case 2:
		return c2, k2
	case 3:
		return c1, k2
	case 4:
		return []byte("garbage"), k1
	case 5:
		if in.intn(2) == 0 {
			return testRSAKeyPair(1024) // Go loads it; Envoy does not
		}
	}
	return nil, nil
}

func (in *fuzzInput) fragments() []*ir.Fragment {
	n := 1 + in.intn(4)
	var out []*ir.Fragment
	for i := 0; i < n; i++ {
		out = append(out, in.fragment(fmt.Sprintf("f%d", i)))
	}
	return out
}

func (in *fuzzInput) fragment(name string) *ir.Fragment {
	f := &ir.Fragment{Source: ir.ObjectRef{Kind: "KIngress", Namespace: "ns", Name: name}}
	for i, n := 0, in.intn(4); i < n; i++ {
		b := &ir.Backend{
			Name:     pick(in, fuzzBackends...),
			Service:  ir.ServiceRef{Namespace: "ns", Name: "svc", Port: pick[int32](in, 80, 0, -1, 70000)},
			Protocol: ir.Protocol(in.intn(4)),
		}
		if in.intn(4) == 0 {
			b.ExternalName = pick(in, "ext.example.com", "other.example.com")
			if name := pick(in, "", b.ExternalName, "\u212Aext.example.com"); name != "" {
				b.TLS = &ir.BackendTLS{ServerName: name}
			}
		}
		for j, m := 0, in.intn(4); j < m; j++ {
			b.Endpoints = append(b.Endpoints, ir.Endpoint{Address: pick(in, fuzzAddrs...), Port: pick(in, fuzzPorts...)})
		}
		f.Backends = append(f.Backends, b)
	}
	for i, n := 0, in.intn(4); i < n; i++ {
		vh := &ir.VirtualHost{
			Name:      pick(in, "vh-a", "vh-b", "vh-c", name+"-vh", "", "vh-\xff"),
			Listeners: ir.ListenerSet(in.byte() & 0x0f),
		}
		for j, m := 0, 1+in.intn(3); j < m; j++ {
			vh.Domains = append(vh.Domains, pick(in, fuzzDomains...))
		}
		for j, m := 0, in.intn(4); j < m; j++ {
			vh.Routes = append(vh.Routes, in.route())
		}
		f.VirtualHosts = append(f.VirtualHosts, vh)
	}
	for i, n := 0, in.intn(3); i < n; i++ {
		c := &ir.Certificate{Name: pick(in, fuzzCerts...), Listeners: ir.ListenerSet(in.byte() & 0x0f)}
		c.CertChain, c.PrivateKey = in.fuzzKeyPair()
		for j, m := 0, in.intn(4); j < m; j++ {
			c.Hosts = append(c.Hosts, pick(in, fuzzDomains...))
		}
		f.Certificates = append(f.Certificates, c)
	}
	for i, n := 0, in.intn(3); i < n; i++ {
		f.Listeners = append(f.Listeners, &ir.Listener{
			Name:         pick(in, "l1", "l2", ""),
			Port:         pick[uint32](in, 9000, 9001, 8080, 0),
			Protocol:     ir.ListenerProtocol(in.intn(4)),
			Hostname:     pick(in, "", "*.example.com", "a.example.com", "*", "a.*.com"),
			Certificates: []string{pick(in, fuzzCerts...)},
		})
	}
	for _, vh := range f.VirtualHosts {
		vh.Listener = pick(in, "", "", "l1", "l2", "none")
	}
	return f
}

func (in *fuzzInput) route() *ir.Route {
	r := &ir.Route{
		Name: pick(in, "r1", "r2", ""),
		Match: ir.Match{
			Path: ir.PathMatch{
				Kind:  ir.PathMatchKind(in.intn(5)),
				Value: pick(in, "/", "", "/api", "^/v[0-9]+", "([", "/x", "/\xff", `/\pL{40}`, `^/api/v[0-9]{1,3}/users/[a-z0-9-]{1,64}$`),
			},
			Method: pick(in, "", "GET", "POST"),
		},
	}
	for i, n := 0, in.intn(3); i < n; i++ {
		r.Match.Headers = append(r.Match.Headers, ir.HeaderMatch{
			Name: pick(in, fuzzHeaders...), Kind: ir.HeaderMatchKind(in.intn(4)), Value: pick(in, "v", "[a-z]+", "(", ""),
		})
	}
	if in.intn(4) == 0 {
		r.Redirect = &ir.Redirect{
			Scheme:     pick(in, "", "https", "http", "HTTPS"),
			Host:       pick(in, "", "b.example.com"),
			Port:       pick[uint32](in, 0, 443, 8443, 70000),
			Path:       pick(in, nil, &ir.PathModifier{Value: "/new"}, &ir.PathModifier{Kind: ir.ReplacePrefixMatch, Value: "/"}, &ir.PathModifier{Kind: ir.ReplacePrefixMatch, Value: "x"}),
			StatusCode: pick(in, 0, 301, 302, 303, 307, 308, 200),
		}
	}
	for i, n := 0, in.intn(4); i < n; i++ {
		r.Backends = append(r.Backends, ir.WeightedBackend{
			BackendName:    pick(in, fuzzBackends...),
			Weight:         pick(in, fuzzWeights...),
			RequestHeaders: in.mutation(),
		})
	}
	r.RequestHeaders = in.mutation()
	r.HostRewrite = pick(in, "", "up.example.com")
	if in.intn(2) == 0 {
		d := pick(in, 0, 30*time.Second, -time.Second)
		r.Timeout = &d
	}
	if in.intn(3) == 0 {
		r.Retry = &ir.RetryPolicy{
			Attempts:      uint32(in.intn(5)),
			PerTryTimeout: pick(in, 0, time.Second, -time.Second),
			On:            []string{pick(in, "5xx", "reset", "bogus", "")},
		}
	}
	for i, n := 0, in.intn(3); i < n; i++ {
		r.Match.QueryParams = append(r.Match.QueryParams, ir.QueryParamMatch{
			Name: pick(in, "q", "", "a b"), Kind: ir.HeaderMatchKind(in.intn(4)), Value: pick(in, "v", "[a-z]+", "(", ""),
		})
	}
	r.ResponseHeaders = in.mutation()
	if in.intn(3) == 0 {
		r.PathRewrite = &ir.PathModifier{Kind: ir.PathModifierKind(in.intn(3)), Value: pick(in, "/", "", "/v2", "/v2/", `/a\1`, "x")}
	}
	if in.intn(5) == 0 {
		r.DirectResponse = &ir.DirectResponse{StatusCode: pick(in, 500, 200, 0, 1000), Body: pick(in, "", "oops", "\xff")}
	}
	return r
}

func (in *fuzzInput) mutation() ir.HeaderMutation {
	var m ir.HeaderMutation
	for i, n := 0, in.intn(3); i < n; i++ {
		h := ir.Header{Name: pick(in, fuzzHeaders...), Value: pick(in, fuzzValues...)}
		switch in.intn(3) {
		case 0:
			m.Set = append(m.Set, h)
		case 1:
			m.Append = append(m.Append, h)
		default:
			m.Remove = append(m.Remove, h.Name)
		}
	}
	return m
}

// change replaces, removes or adds fragments, keeping the others as they
// are, to exercise the memoized path.
func (in *fuzzInput) change(frags []*ir.Fragment) []*ir.Fragment {
	out := make([]*ir.Fragment, 0, len(frags)+1)
	for _, f := range frags {
		switch in.intn(4) {
		case 0: // removed
		case 1: // rebuilt from the next bytes
			out = append(out, in.fragment(f.Source.Name))
		case 2: // same content, new pointers
			g := *f
			g.Backends = nil
			for _, b := range f.Backends {
				c := *b
				g.Backends = append(g.Backends, &c)
			}
			out = append(out, &g)
		default:
			out = append(out, f)
		}
	}
	if in.intn(2) == 0 {
		out = append(out, in.fragment("new"))
	}
	return out
}
