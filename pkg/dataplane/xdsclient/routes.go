package xdsclient

import (
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
	// byConfig holds, per route configuration name, its virtual hosts of
	// the last decode by the SHA-256 of their bytes.
	byConfig map[string]map[[sha256.Size]byte]*routev3.VirtualHost
}

func (d *routeDecoder) decode(raw []byte) (*routev3.RouteConfiguration, error) {
	var rest []byte
	var vhosts []*routev3.VirtualHost
	next := map[[sha256.Size]byte]*routev3.VirtualHost{}
	for b := raw; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("RouteConfiguration: %w", protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, fmt.Errorf("RouteConfiguration: %w", protowire.ParseError(m))
		}
		if num != virtualHostsField || typ != protowire.BytesType {
			rest = append(rest, b[:n+m]...)
			b = b[n+m:]
			continue
		}
		v, _ := protowire.ConsumeBytes(b[n:])
		b = b[n+m:]
		sum := sha256.Sum256(v)
		vh := next[sum]
		if vh == nil {
			vh = d.find(sum)
		}
		if vh == nil {
			vh = &routev3.VirtualHost{}
			if err := proto.Unmarshal(v, vh); err != nil {
				return nil, fmt.Errorf("RouteConfiguration: virtual_hosts[%d]: %w", len(vhosts), err)
			}
		}
		next[sum] = vh
		vhosts = append(vhosts, vh)
	}
	rc := &routev3.RouteConfiguration{}
	if err := proto.Unmarshal(rest, rc); err != nil {
		return nil, err
	}
	rc.VirtualHosts = vhosts
	if d.byConfig == nil {
		d.byConfig = map[string]map[[sha256.Size]byte]*routev3.VirtualHost{}
	}
	d.byConfig[rc.GetName()] = next
	return rc, nil
}

// find looks for a virtual host in every configuration's last decode: the
// internal and external route tables often carry the same host.
func (d *routeDecoder) find(sum [sha256.Size]byte) *routev3.VirtualHost {
	for _, m := range d.byConfig {
		if vh := m[sum]; vh != nil {
			return vh
		}
	}
	return nil
}

// forget drops a removed configuration's virtual hosts.
func (d *routeDecoder) forget(name string) { delete(d.byConfig, name) }
