package xdsclient

import (
	"bytes"
	"crypto/sha256"
	"fmt"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// virtualHostsField is RouteConfiguration.virtual_hosts.
const virtualHostsField protowire.Number = 2

// routeDecoder decodes RouteConfigurations so that a virtual host whose
// bytes did not change is the very proto of the previous decode: one
// changed host among 20,000 costs one virtual host's unmarshal, and the
// proxy recognises the rest by pointer instead of re-hashing them.
type routeDecoder struct {
	configs map[string]*decodedRoutes
}

// decodedRoutes is the last decode of one route configuration: each
// virtual host's bytes (kept from the message they came in) and proto.
type decodedRoutes struct {
	raws   [][]byte
	vhosts []*routev3.VirtualHost
}

func (d *routeDecoder) decode(raw []byte) (*routev3.RouteConfiguration, error) {
	var rest []byte
	var raws [][]byte
	for b := raw; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("RouteConfiguration: %w", protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, fmt.Errorf("RouteConfiguration: %w", protowire.ParseError(m))
		}
		if num == virtualHostsField && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[n:])
			raws = append(raws, v)
		} else {
			rest = append(rest, b[:n+m]...)
		}
		b = b[n+m:]
	}
	rc := &routev3.RouteConfiguration{}
	if err := proto.Unmarshal(rest, rc); err != nil {
		return nil, err
	}
	next := &decodedRoutes{raws: raws, vhosts: make([]*routev3.VirtualHost, len(raws))}
	if prev := d.configs[rc.GetName()]; prev != nil {
		reuse(prev, next)
	}
	for i, v := range raws {
		if next.vhosts[i] != nil {
			continue
		}
		vh := &routev3.VirtualHost{}
		if err := proto.Unmarshal(v, vh); err != nil {
			return nil, fmt.Errorf("RouteConfiguration %q: virtual_hosts[%d]: %w", rc.GetName(), i, err)
		}
		next.vhosts[i] = vh
	}
	rc.VirtualHosts = next.vhosts
	if d.configs == nil {
		d.configs = map[string]*decodedRoutes{}
	}
	d.configs[rc.GetName()] = next
	return rc, nil
}

// reuse fills next.vhosts with prev's protos for the bytes that did not
// change. Hosts are matched in place from both ends, which is all a
// change, an addition or a removal of a few hosts disturbs; only the
// middle is matched by hash.
func reuse(prev, next *decodedRoutes) {
	p, n := prev.raws, next.raws
	lo := 0
	for lo < len(n) && lo < len(p) && bytes.Equal(n[lo], p[lo]) {
		next.vhosts[lo] = prev.vhosts[lo]
		lo++
	}
	hi := 0
	for hi < len(n)-lo && hi < len(p)-lo && bytes.Equal(n[len(n)-1-hi], p[len(p)-1-hi]) {
		next.vhosts[len(n)-1-hi] = prev.vhosts[len(p)-1-hi]
		hi++
	}
	if lo+hi == len(n) || lo+hi == len(p) {
		return
	}
	bySum := make(map[[sha256.Size]byte]*routev3.VirtualHost, len(p)-lo-hi)
	for j := lo; j < len(p)-hi; j++ {
		bySum[sha256.Sum256(p[j])] = prev.vhosts[j]
	}
	for i := lo; i < len(n)-hi; i++ {
		next.vhosts[i] = bySum[sha256.Sum256(n[i])]
	}
}

// forget drops a removed configuration's virtual hosts.
func (d *routeDecoder) forget(name string) { delete(d.configs, name) }
