package dataplane

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"
)

// markFilter is a test filter configured by a Struct:
//   - name: appended to the request's and the response's X-Marks header, so
//     the order of the decoder and encoder callbacks shows;
//   - reply: a status code it answers every request with;
//   - upper: buffer the whole response body and upper-case it;
//   - replace5xx: a status code it answers with instead of an upstream 5xx;
//   - stallHeaders: stop on headers and never continue.
//
// Its per-route config is a StringValue appended to its mark.
type markFactory struct{}

func (markFactory) ConfigType() proto.Message      { return &structpb.Struct{} }
func (markFactory) RouteConfigType() proto.Message { return &wrapperspb.StringValue{} }

func (markFactory) NewConfig(m proto.Message, _ *httpfilter.Scope) (httpfilter.Config, error) {
	f := m.(*structpb.Struct).GetFields()
	c := &markConfig{name: f["name"].GetStringValue()}
	if c.name == "" {
		return nil, fmt.Errorf("name: required")
	}
	c.reply = int(f["reply"].GetNumberValue())
	c.upper = f["upper"].GetBoolValue()
	c.replace5xx = int(f["replace5xx"].GetNumberValue())
	c.stallHeaders = f["stallHeaders"].GetBoolValue()
	return c, nil
}

func (markFactory) NewRouteConfig(m proto.Message, _ *httpfilter.Scope) (any, error) {
	return m.(*wrapperspb.StringValue).GetValue(), nil
}

func init() { httpfilter.Register(markFactory{}) }

type markConfig struct {
	name         string
	reply        int
	upper        bool
	replace5xx   int
	stallHeaders bool
}

func (c *markConfig) NewFilter(cb httpfilter.Callbacks) any { return &markFilter{c: c, cb: cb} }

type markFilter struct {
	c    *markConfig
	cb   httpfilter.Callbacks
	resp *httpfilter.ResponseHeaders
}

func (f *markFilter) mark() string {
	if s, ok := f.cb.PerRouteConfig().(string); ok {
		return f.c.name + s
	}
	return f.c.name
}

func (f *markFilter) DecodeHeaders(h *httpfilter.RequestHeaders, endStream bool) httpfilter.Status {
	h.Header.Add("X-Marks", f.mark())
	if f.c.reply != 0 {
		f.cb.SendLocalReply(f.c.reply, "refused by "+f.c.name, http.Header{"X-Refused-By": {f.c.name}}, "test")
		return httpfilter.StopIteration
	}
	if f.c.stallHeaders {
		return httpfilter.StopIteration
	}
	return httpfilter.Continue
}
func (f *markFilter) DecodeData([]byte, bool) httpfilter.Status    { return httpfilter.Continue }
func (f *markFilter) DecodeTrailers(http.Header) httpfilter.Status { return httpfilter.Continue }

func (f *markFilter) EncodeHeaders(h *httpfilter.ResponseHeaders, endStream bool) httpfilter.Status {
	h.Header.Add("X-Marks", f.mark())
	if f.c.replace5xx != 0 && h.Status >= 500 {
		f.cb.SendLocalReply(f.c.replace5xx, "replaced by "+f.c.name, nil, "test")
		return httpfilter.StopIteration
	}
	if f.c.upper && !endStream {
		f.resp = h
		return httpfilter.StopIteration
	}
	return httpfilter.Continue
}

func (f *markFilter) EncodeData(data []byte, endStream bool) httpfilter.Status {
	if !f.c.upper {
		return httpfilter.Continue
	}
	if !endStream {
		return httpfilter.StopIterationAndBuffer
	}
	copy(data, bytes.ToUpper(data))
	f.resp.Header.Set("Content-Length", strconv.Itoa(len(data)))
	return httpfilter.Continue
}
func (f *markFilter) EncodeTrailers(http.Header) httpfilter.Status { return httpfilter.Continue }

func markHTTPFilter(t *testing.T, fields map[string]any, disabled bool) *hcmv3.HttpFilter {
	t.Helper()
	st, err := structpb.NewStruct(fields)
	if err != nil {
		t.Fatal(err)
	}
	return &hcmv3.HttpFilter{
		Name:       "mark-" + fields["name"].(string),
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(st)},
		Disabled:   disabled,
	}
}

func withFilters(fs ...*hcmv3.HttpFilter) func(*hcmv3.HttpConnectionManager) {
	return func(h *hcmv3.HttpConnectionManager) {
		h.HttpFilters = append(fs, h.HttpFilters...)
	}
}

// bodyBackend answers with what it received: the marks, the body's
// length, the Content-Length header and the body itself. ?status=N sets
// the status code.
func bodyBackend(t *testing.T) (*backend, *[]string) {
	b := &backend{name: "body"}
	var seen []string
	b.addr = serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		seen = append(seen, strings.Join(r.Header.Values("X-Marks"), ","))
		w.Header().Set("X-Got-Content-Length", r.Header.Get("Content-Length"))
		w.Header().Set("X-Got-Marks", strings.Join(r.Header.Values("X-Marks"), ","))
		w.Header().Set("Content-Type", "text/plain")
		if s, err := strconv.Atoi(r.URL.Query().Get("status")); err == nil {
			w.WriteHeader(s)
		}
		fmt.Fprintf(w, "len=%d body=%s", len(body), body)
	}))
	return b, &seen
}

func filterResources(b *backend, rt *routev3.Route, mutate ...func(*hcmv3.HttpConnectionManager)) *Resources {
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l", mutate...)},
		Routes:    []*routev3.RouteConfiguration{routeConfig("l", virtualHost("vh", []string{"*"}, rt))},
	}
	addBackends(res, false, b)
	return res
}

func do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return resp, string(body)
}

func TestFilterChainOrder(t *testing.T) {
	b, _ := bodyBackend(t)
	p := newTestProxy(t, Options{})
	mustApply(t, p, filterResources(b, routeTo(prefixMatch("/"), b.name),
		withFilters(markHTTPFilter(t, map[string]any{"name": "a"}, false), markHTTPFilter(t, map[string]any{"name": "b"}, false))))

	req, _ := http.NewRequest("GET", proxyURL(t, p, "l")+"/", nil)
	resp, _ := do(t, req)
	if got := resp.Header.Get("X-Got-Marks"); got != "a,b" {
		t.Errorf("decoder filters ran as %q, want a,b (configuration order)", got)
	}
	// The upstream's own X-Marks is "" (it sends none): encoders add b, then a.
	if got := strings.Join(resp.Header.Values("X-Marks"), ","); got != "b,a" {
		t.Errorf("encoder filters ran as %q, want b,a (reverse order)", got)
	}
}

func TestFilterLocalReplyStopsTheChain(t *testing.T) {
	b, _ := bodyBackend(t)
	p := newTestProxy(t, Options{})
	mustApply(t, p, filterResources(b, routeTo(prefixMatch("/"), b.name),
		withFilters(markHTTPFilter(t, map[string]any{"name": "a"}, false),
			markHTTPFilter(t, map[string]any{"name": "b", "reply": 403}, false),
			markHTTPFilter(t, map[string]any{"name": "c"}, false))))

	req, _ := http.NewRequest("GET", proxyURL(t, p, "l")+"/", nil)
	resp, body := do(t, req)
	if resp.StatusCode != 403 || body != "refused by b" || resp.Header.Get("X-Refused-By") != "b" {
		t.Fatalf("got %d %q (X-Refused-By %q), want b's local reply 403 \"refused by b\"", resp.StatusCode, body, resp.Header.Get("X-Refused-By"))
	}
	if n := b.hits.Load(); n != 0 {
		t.Errorf("the upstream got %d requests; a local reply must stop the router", n)
	}
	// As in Envoy, a local reply goes through the encoder filters.
	if got := strings.Join(resp.Header.Values("X-Marks"), ","); got != "c,b,a" {
		t.Errorf("the local reply was encoded by %q, want c,b,a", got)
	}
}

func TestFilterPerRouteConfig(t *testing.T) {
	b, _ := bodyBackend(t)
	p := newTestProxy(t, Options{})
	disabled := mustAny(&routev3.FilterConfig{Disabled: true})
	enabled := mustAny(&routev3.FilterConfig{Config: mustAny(wrapperspb.String("-on"))})
	plain := routeTo(prefixMatch("/plain"), b.name)
	off := routeTo(prefixMatch("/off"), b.name)
	off.TypedPerFilterConfig = map[string]*anypb.Any{"mark-a": disabled}
	on := routeTo(prefixMatch("/on"), b.name)
	on.TypedPerFilterConfig = map[string]*anypb.Any{"mark-b": enabled}
	vh := virtualHost("vh", []string{"*"}, plain, off, on)
	vh.TypedPerFilterConfig = map[string]*anypb.Any{"mark-a": mustAny(wrapperspb.String("-vh"))}
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l", withFilters(
			markHTTPFilter(t, map[string]any{"name": "a"}, false),
			markHTTPFilter(t, map[string]any{"name": "b"}, true)))},
		Routes: []*routev3.RouteConfiguration{routeConfig("l", vh)},
	}
	addBackends(res, false, b)
	mustApply(t, p, res)

	for path, want := range map[string]string{
		"/plain": "a-vh",      // the virtual host's config; b is disabled by default
		"/off":   "",          // a disabled on the route
		"/on":    "a-vh,b-on", // b enabled on the route with its own config
	} {
		req, _ := http.NewRequest("GET", proxyURL(t, p, "l")+path, nil)
		resp, _ := do(t, req)
		if got := resp.Header.Get("X-Got-Marks"); got != want {
			t.Errorf("%s: filters ran as %q, want %q", path, got, want)
		}
	}
}

func TestFilterEncoderBuffersAndRewritesTheBody(t *testing.T) {
	b, _ := bodyBackend(t)
	p := newTestProxy(t, Options{})
	mustApply(t, p, filterResources(b, routeTo(prefixMatch("/"), b.name),
		withFilters(markHTTPFilter(t, map[string]any{"name": "u", "upper": true}, false))))

	req, _ := http.NewRequest("POST", proxyURL(t, p, "l")+"/", strings.NewReader(strings.Repeat("x", 100000)))
	resp, body := do(t, req)
	want := "LEN=100000 BODY=" + strings.Repeat("X", 100000)
	if body != want {
		t.Fatalf("body %.40q... (%d bytes), want the upper-cased echo (%d bytes)", body, len(body), len(want))
	}
	if resp.ContentLength != int64(len(want)) {
		t.Errorf("Content-Length %d, want %d as set by the filter", resp.ContentLength, len(want))
	}
}

func TestFilterEncoderReplacesTheResponse(t *testing.T) {
	b, _ := bodyBackend(t)
	p := newTestProxy(t, Options{})
	mustApply(t, p, filterResources(b, routeTo(prefixMatch("/"), b.name),
		withFilters(markHTTPFilter(t, map[string]any{"name": "a"}, false),
			markHTTPFilter(t, map[string]any{"name": "r", "replace5xx": 502}, false))))

	req, _ := http.NewRequest("GET", proxyURL(t, p, "l")+"/?status=500", nil)
	resp, body := do(t, req)
	if resp.StatusCode != 502 || body != "replaced by r" {
		t.Fatalf("got %d %q, want r's local reply 502", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Got-Marks") != "" {
		t.Errorf("the upstream's headers leaked into the local reply")
	}
	req, _ = http.NewRequest("GET", proxyURL(t, p, "l")+"/?status=201", nil)
	if resp, _ := do(t, req); resp.StatusCode != 201 {
		t.Errorf("a 201 was answered with %d; only 5xx are replaced", resp.StatusCode)
	}
}

func TestFilterStalledAtEndOfStream(t *testing.T) {
	b, _ := bodyBackend(t)
	p := newTestProxy(t, Options{})
	mustApply(t, p, filterResources(b, routeTo(prefixMatch("/"), b.name),
		withFilters(markHTTPFilter(t, map[string]any{"name": "s", "stallHeaders": true}, false))))

	req, _ := http.NewRequest("GET", proxyURL(t, p, "l")+"/", nil)
	resp, _ := do(t, req)
	if resp.StatusCode != 500 || b.hits.Load() != 0 {
		t.Fatalf("got %d with %d upstream requests; a filter that stops a bodyless request for good must end it with 500", resp.StatusCode, b.hits.Load())
	}
}

func bufferFilter(max uint32) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name:       "envoy.filters.http.buffer",
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(max)})},
	}
}

// chunked hides a reader's length, so the client streams it chunked.
type chunked struct{ io.Reader }

func TestBufferFilter(t *testing.T) {
	b, _ := bodyBackend(t)
	p := newTestProxy(t, Options{})
	streaming := routeTo(prefixMatch("/stream"), b.name)
	streaming.TypedPerFilterConfig = map[string]*anypb.Any{
		"envoy.filters.http.buffer": mustAny(&bufferv3.BufferPerRoute{Override: &bufferv3.BufferPerRoute_Disabled{Disabled: true}}),
	}
	res := &Resources{
		Listeners: []*listenerv3.Listener{plainListener("l", withFilters(bufferFilter(1000)))},
		Routes:    []*routev3.RouteConfiguration{routeConfig("l", virtualHost("vh", []string{"*"}, streaming, routeTo(prefixMatch("/"), b.name)))},
	}
	addBackends(res, false, b)
	mustApply(t, p, res)
	url := proxyURL(t, p, "l")

	req, _ := http.NewRequest("POST", url+"/", chunked{strings.NewReader(strings.Repeat("a", 999))})
	resp, body := do(t, req)
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "len=999 ") {
		t.Fatalf("a 999-byte body: %d %.30q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Got-Content-Length"); got != "999" {
		t.Errorf("the buffered request reached the upstream with Content-Length %q, want 999", got)
	}

	before := b.hits.Load()
	req, _ = http.NewRequest("POST", url+"/", chunked{strings.NewReader(strings.Repeat("a", 5000))})
	resp, body = do(t, req)
	if resp.StatusCode != 413 || body != "Payload Too Large" {
		t.Errorf("a 5000-byte body over a 1000-byte limit: %d %q, want 413", resp.StatusCode, body)
	}
	if !resp.Close {
		t.Errorf("a response sent before the request body was read must close the connection, and say so")
	}
	if b.hits.Load() != before {
		t.Errorf("the upstream saw the oversized request")
	}

	req, _ = http.NewRequest("POST", url+"/stream", chunked{strings.NewReader(strings.Repeat("a", 5000))})
	resp, body = do(t, req)
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "len=5000 ") || resp.Header.Get("X-Got-Content-Length") != "" {
		t.Errorf("with the buffer disabled on the route: %d %.30q, Content-Length %q; want the body streamed as sent",
			resp.StatusCode, body, resp.Header.Get("X-Got-Content-Length"))
	}
}

func TestFilterConfigErrors(t *testing.T) {
	router := hcmFilter("l").GetTypedConfig()
	var hcm hcmv3.HttpConnectionManager
	if err := router.UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	routerFilter := hcm.HttpFilters[0]
	unknown := &hcmv3.HttpFilter{Name: "unknown", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(wrapperspb.Bool(true))}}
	optional := proto.Clone(unknown).(*hcmv3.HttpFilter)
	optional.IsOptional = true

	for name, tc := range map[string]struct {
		filters []*hcmv3.HttpFilter
		route   map[string]*anypb.Any
		want    string // "" means accepted
	}{
		"unknown filter":           {filters: []*hcmv3.HttpFilter{unknown, routerFilter}, want: `http_filters[0].typed_config: filter type "type.googleapis.com/google.protobuf.BoolValue" is not supported`},
		"optional unknown filter":  {filters: []*hcmv3.HttpFilter{optional, routerFilter}},
		"router not last":          {filters: []*hcmv3.HttpFilter{routerFilter, bufferFilter(10)}, want: "http_filters[0]: envoy.filters.http.router must be the last filter"},
		"no router":                {filters: []*hcmv3.HttpFilter{bufferFilter(10)}, want: "http_filters[0]: the last filter must be envoy.filters.http.router"},
		"bad filter config":        {filters: []*hcmv3.HttpFilter{{Name: "b", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&bufferv3.Buffer{})}}, routerFilter}, want: "http_filters[0].typed_config: "},
		"unknown per-route type":   {filters: []*hcmv3.HttpFilter{routerFilter}, route: map[string]*anypb.Any{"x": mustAny(wrapperspb.Bool(true))}, want: `routes[0].typed_per_filter_config["x"]: per-route config type`},
		"optional per-route type":  {filters: []*hcmv3.HttpFilter{routerFilter}, route: map[string]*anypb.Any{"x": mustAny(&routev3.FilterConfig{IsOptional: true, Config: mustAny(wrapperspb.Bool(true))})}},
		"bad per-route config":     {filters: []*hcmv3.HttpFilter{routerFilter}, route: map[string]*anypb.Any{"x": mustAny(&bufferv3.BufferPerRoute{})}, want: `routes[0].typed_per_filter_config["x"]: `},
		"duplicate filter name":    {filters: []*hcmv3.HttpFilter{bufferFilter(1), bufferFilter(2), routerFilter}, want: `http_filters[1].name: filter name "envoy.filters.http.buffer" is used twice`},
		"buffer with a route flag": {filters: []*hcmv3.HttpFilter{bufferFilter(1), routerFilter}, route: map[string]*anypb.Any{"envoy.filters.http.buffer": mustAny(&routev3.FilterConfig{Disabled: true})}},
	} {
		t.Run(name, func(t *testing.T) {
			b := &backend{name: "b", addr: "127.0.0.1:1"}
			rt := routeTo(prefixMatch("/"), b.name)
			rt.TypedPerFilterConfig = tc.route
			res := filterResources(b, rt, func(h *hcmv3.HttpConnectionManager) { h.HttpFilters = tc.filters })
			_, err := New(Options{ListenAddress: "127.0.0.1"}).compile(res)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestFilterDecodeWhileEncoding: a request body still streams through a
// decoder filter (on the transport's goroutine) when the upstream answers
// early and an encoder filter replaces that answer (on the stream's): the
// client gets the local reply, and nothing waits on the other side.
func TestFilterDecodeWhileEncoding(t *testing.T) {
	answered := make(chan struct{})
	var once sync.Once
	// A raw upstream: Go's server would wait for the body before it
	// answers.
	s := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
		once.Do(func() { close(answered) })
		io.Copy(io.Discard, req.Body)
	})
	b := &backend{name: "early", addr: s.addr}
	p := newTestProxy(t, Options{})
	mustApply(t, p, filterResources(b, routeTo(prefixMatch("/"), b.name),
		withFilters(markHTTPFilter(t, map[string]any{"name": "a"}, false),
			markHTTPFilter(t, map[string]any{"name": "r", "replace5xx": 503}, false))))

	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("first part"))
		<-answered
		for i := 0; i < 100; i++ {
			if _, err := pw.Write(bytes.Repeat([]byte("x"), 1000)); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", proxyURL(t, p, "l")+"/", pr)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	pw.CloseWithError(io.ErrClosedPipe)
	if resp.StatusCode != 503 || string(body) != "replaced by r" {
		t.Fatalf("got %d %q, want r's 503", resp.StatusCode, body)
	}
}

// TestBufferFilterBadChunk: a chunked body that breaks framing while a
// filter holds the request is a 400, as without filters.
func TestBufferFilterBadChunk(t *testing.T) {
	b, _ := bodyBackend(t)
	p := newTestProxy(t, Options{})
	mustApply(t, p, filterResources(b, routeTo(prefixMatch("/"), b.name), withFilters(bufferFilter(1000))))
	resp, body := sendRaw(t, p.ListenerAddr("l").String(),
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
	if resp.StatusCode != 400 || b.hits.Load() != 0 {
		t.Fatalf("got %d %q with %d upstream requests, want 400 and none", resp.StatusCode, body, b.hits.Load())
	}
}

// TestStalledBodyWhileBuffered: a client that stops sending its body
// while a filter holds the request is answered 408 "stream timeout" once
// the route's idle timeout passes, as Envoy's stream idle timer does; the
// upstream never sees it. Over HTTP/1.1 the connection is closed; over
// HTTP/2 only the stream ends.
func TestStalledBodyWhileBuffered(t *testing.T) {
	b, _ := bodyBackend(t)
	p := newTestProxy(t, Options{})
	rt := routeTo(prefixMatch("/"), b.name)
	rt.GetRoute().IdleTimeout = durationpb.New(300 * time.Millisecond)
	mustApply(t, p, filterResources(b, rt, withFilters(bufferFilter(1<<20))))
	addr := p.ListenerAddr("l").String()

	// HTTP/1.1: 10 of 100 bytes, then nothing.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 408 || string(body) != "stream timeout" || !resp.Close {
		t.Errorf("HTTP/1.1 stalled body: %d %q (close %v), want 408 stream timeout and the connection closed", resp.StatusCode, body, resp.Close)
	}

	// HTTP/2 (h2c): the body's writer never finishes.
	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &h2}, Timeout: 10 * time.Second}
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = pw.Write([]byte("0123456789")) }()
	req, _ := http.NewRequest("POST", "http://"+addr+"/", pr)
	req.ContentLength = 100
	resp, err = client.Do(req)
	if err != nil {
		t.Fatalf("HTTP/2 stalled body: %v", err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 408 || string(body) != "stream timeout" || resp.ProtoMajor != 2 {
		t.Errorf("HTTP/2 stalled body: %d %q over HTTP/%d, want 408 stream timeout over HTTP/2", resp.StatusCode, body, resp.ProtoMajor)
	}
	if b.hits.Load() != 0 {
		t.Errorf("the upstream saw %d stalled requests", b.hits.Load())
	}
}
