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
	prev, next map[*routev3.VirtualHost][]byte
}

var virtualHostsField = (&routev3.RouteConfiguration{}).ProtoReflect().Descriptor().Fields().ByName("virtual_hosts")

// encode returns what the cache is given for rc.
func (w *routeWire) encode(rc *routev3.RouteConfiguration) (types.Resource, error) {
	if w.next == nil {
		w.next = map[*routev3.VirtualHost][]byte{}
	}
	size := 0
	encoded := make([][]byte, len(rc.GetVirtualHosts()))
	for i, vh := range rc.GetVirtualHosts() {
		b, ok := w.next[vh]
		if !ok {
			if b, ok = w.prev[vh]; !ok {
				raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(vh)
				if err != nil {
					return nil, err
				}
				b = protowire.AppendBytes(protowire.AppendTag(nil, virtualHostsField.Number(), protowire.BytesType), raw)
			}
			w.next[vh] = b
		}
		encoded[i] = b
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
	for _, b := range encoded {
		unknown = append(unknown, b...)
	}
	dst.SetUnknown(unknown)
	return top, nil
}

// rotate forgets the hosts no longer served; call it after every Apply.
func (w *routeWire) rotate() {
	w.prev, w.next = w.next, nil
}
