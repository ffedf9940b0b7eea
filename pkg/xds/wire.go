package xds

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// routeWire keeps the encoding of every virtual host served, so a route
// configuration of 20,000 hosts with one changed costs one host's
// marshalling. go-control-plane marshals each updated resource whole to
// hash and send it; it is handed a copy whose virtual hosts are already
// encoded (as the message's unknown fields, which marshal as the bytes
// they are). The bytes on the wire decode to the same configuration.
//
// Translate hands back the same *VirtualHost for a host that did not
// change, which is what makes the pointer a valid key.
type routeWire struct {
	configs map[string]*wireConfig
}

// wireConfig is the last encoding of one route configuration.
type wireConfig struct {
	vhosts  []*routev3.VirtualHost
	encoded [][]byte // each host's field, tag included
}

var virtualHostsField = (&routev3.RouteConfiguration{}).ProtoReflect().Descriptor().Fields().ByName("virtual_hosts")

// encode returns what the cache is given for rc.
func (w *routeWire) encode(rc *routev3.RouteConfiguration) (types.Resource, error) {
	if w.configs == nil {
		w.configs = map[string]*wireConfig{}
	}
	prev := w.configs[rc.GetName()]
	var byPointer map[*routev3.VirtualHost][]byte // built only if hosts moved
	next := &wireConfig{vhosts: rc.GetVirtualHosts(), encoded: make([][]byte, len(rc.GetVirtualHosts()))}
	size := 0
	for i, vh := range next.vhosts {
		var b []byte
		switch {
		case prev != nil && i < len(prev.vhosts) && prev.vhosts[i] == vh:
			b = prev.encoded[i]
		case prev != nil:
			if byPointer == nil {
				byPointer = make(map[*routev3.VirtualHost][]byte, len(prev.vhosts))
				for j, p := range prev.vhosts {
					byPointer[p] = prev.encoded[j]
				}
			}
			b = byPointer[vh]
		}
		if b == nil {
			raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(vh)
			if err != nil {
				return nil, err
			}
			b = protowire.AppendBytes(protowire.AppendTag(nil, virtualHostsField.Number(), protowire.BytesType), raw)
		}
		next.encoded[i] = b
		size += len(b)
	}
	top := &routev3.RouteConfiguration{}
	dst := top.ProtoReflect()
	rc.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd != virtualHostsField {
			dst.Set(fd, v)
		}
		return true
	})
	unknown := make([]byte, 0, size)
	for _, b := range next.encoded {
		unknown = append(unknown, b...)
	}
	dst.SetUnknown(unknown)
	w.configs[rc.GetName()] = next
	return top, nil
}

// forget drops the encoding of a route configuration no longer served.
func (w *routeWire) forget(name string) { delete(w.configs, name) }
