// Package buffer is weir-proxy's envoy.filters.http.buffer: it holds a
// request until its whole body has arrived, then lets it through with a
// Content-Length, and answers 413 when the body is larger than
// max_request_bytes. It is the smallest filter that uses every part of the
// filter contract (stop on headers, buffer data, local reply, per-route
// config) and is the worked example in docs/dataplane.md.
package buffer

import (
	"fmt"
	"net/http"
	"strconv"

	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"
)

func init() { httpfilter.Register(factory{}) }

type factory struct{}

func (factory) ConfigType() proto.Message      { return &bufferv3.Buffer{} }
func (factory) RouteConfigType() proto.Message { return &bufferv3.BufferPerRoute{} }

func (factory) NewConfig(m proto.Message, _ *httpfilter.Scope) (httpfilter.Config, error) {
	return compile(m.(*bufferv3.Buffer))
}

func compile(b *bufferv3.Buffer) (*config, error) {
	if bad := httpfilter.UnsupportedField(b, "max_request_bytes"); bad != "" {
		return nil, fmt.Errorf("%s: not supported by weir-proxy", bad)
	}
	if b.GetMaxRequestBytes() == nil {
		return nil, fmt.Errorf("max_request_bytes: required")
	}
	return &config{maxBytes: int(b.GetMaxRequestBytes().GetValue())}, nil
}

// routeConfig is a compiled BufferPerRoute.
type routeConfig struct {
	disabled bool
	override *config
}

func (factory) NewRouteConfig(m proto.Message, _ *httpfilter.Scope) (any, error) {
	pr := m.(*bufferv3.BufferPerRoute)
	switch o := pr.GetOverride().(type) {
	case *bufferv3.BufferPerRoute_Disabled:
		return &routeConfig{disabled: o.Disabled}, nil
	case *bufferv3.BufferPerRoute_Buffer:
		c, err := compile(o.Buffer)
		if err != nil {
			return nil, fmt.Errorf("buffer.%w", err)
		}
		return &routeConfig{override: c}, nil
	}
	return nil, fmt.Errorf("override: one of disabled or buffer is required")
}

type config struct{ maxBytes int }

func (c *config) NewFilter(cb httpfilter.Callbacks) any {
	return &filter{conf: c, cb: cb}
}

type filter struct {
	httpfilter.PassThroughEncoder
	conf    *config
	cb      httpfilter.Callbacks
	headers *httpfilter.RequestHeaders
	off     bool
}

func (f *filter) DecodeHeaders(h *httpfilter.RequestHeaders, endStream bool) httpfilter.Status {
	if rc, ok := f.cb.PerRouteConfig().(*routeConfig); ok {
		if rc.disabled {
			f.off = true
			return httpfilter.Continue
		}
		if rc.override != nil {
			f.conf = rc.override
		}
	}
	if endStream {
		return httpfilter.Continue
	}
	// As Envoy's: the stream may hold what the filter allows.
	f.cb.SetDecoderBufferLimit(f.conf.maxBytes)
	f.headers = h
	return httpfilter.StopIteration
}

func (f *filter) DecodeData(data []byte, endStream bool) httpfilter.Status {
	if f.off {
		return httpfilter.Continue
	}
	if len(data) > f.conf.maxBytes {
		f.cb.SendLocalReply(http.StatusRequestEntityTooLarge, "Payload Too Large", nil, "request_payload_too_large")
		return httpfilter.StopIterationNoBuffer
	}
	if !endStream {
		return httpfilter.StopIterationAndBuffer
	}
	// The whole body is here: like Envoy, give it a length if the client
	// streamed it without one.
	if f.headers.Header.Get("Content-Length") == "" {
		f.headers.Header.Set("Content-Length", strconv.Itoa(len(data)))
	}
	return httpfilter.Continue
}

func (f *filter) DecodeTrailers(http.Header) httpfilter.Status { return httpfilter.Continue }
