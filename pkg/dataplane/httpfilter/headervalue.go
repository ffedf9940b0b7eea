package httpfilter

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
)

// HeaderValue is a header value in Envoy's substitution format, of the
// part weir-proxy knows: literals, "%%", %REQ(name)% and %REQ(name?alt)%
// (a request header or pseudo header, or alt when name is absent) and
// %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%.
type HeaderValue []headerValuePart

// headerValuePart is a literal, a request header to copy (or its
// alternative), or the client address.
type headerValuePart struct {
	literal     string
	header, alt string
	client      bool
}

var reqCommand = regexp.MustCompile(`^%REQ\(([^)?]+)(?:\?([^)?]+))?\)%`)

// headerName is what %REQ may name: a header field name, or a pseudo
// header.
var headerName = regexp.MustCompile("^:?[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$")

// clientCommand is Envoy's downstream (client) address, after
// X-Forwarded-For as the connection manager trusts it.
const clientCommand = "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"

// CompileHeaderValue parses v, refusing any command weir-proxy does not
// implement.
func CompileHeaderValue(v string) (HeaderValue, error) {
	var out HeaderValue
	var lit strings.Builder
	for i := 0; i < len(v); {
		if v[i] != '%' {
			lit.WriteByte(v[i])
			i++
			continue
		}
		if strings.HasPrefix(v[i:], "%%") {
			lit.WriteByte('%')
			i += 2
			continue
		}
		if lit.Len() > 0 {
			out = append(out, headerValuePart{literal: lit.String()})
			lit.Reset()
		}
		if strings.HasPrefix(v[i:], clientCommand) {
			out = append(out, headerValuePart{client: true})
			i += len(clientCommand)
			continue
		}
		m := reqCommand.FindStringSubmatch(v[i:])
		if m == nil || !headerName.MatchString(m[1]) || m[2] != "" && !headerName.MatchString(m[2]) {
			return nil, fmt.Errorf("%q: only %%REQ(name)%%, %%REQ(name?other)%% and %s are supported by weir-proxy", v, clientCommand)
		}
		out = append(out, headerValuePart{header: strings.ToLower(m[1]), alt: strings.ToLower(m[2])})
		i += len(m[0])
	}
	if lit.Len() > 0 {
		out = append(out, headerValuePart{literal: lit.String()})
	}
	return out, nil
}

// Render is the value for the request r of the stream cb.
func (v HeaderValue) Render(r *RequestHeaders, cb Callbacks) string {
	var b strings.Builder
	for _, p := range v {
		switch {
		case p.client:
			if a := cb.ClientAddr(); a.IsValid() {
				b.WriteString(a.String())
			}
		case p.header == "":
			b.WriteString(p.literal)
		default:
			value, ok := requestHeader(r, p.header)
			if !ok && p.alt != "" {
				value, _ = requestHeader(r, p.alt)
			}
			b.WriteString(value)
		}
	}
	return b.String()
}

// requestHeader is a header or pseudo header of r, and whether r has it.
func requestHeader(r *RequestHeaders, name string) (string, bool) {
	switch name {
	case ":path":
		return r.Path, true
	case ":authority", "host":
		return r.Authority, true
	case ":method":
		return r.Method, true
	case ":scheme":
		return r.Scheme, true
	}
	vv, ok := r.Header[http.CanonicalHeaderKey(name)]
	if !ok || len(vv) == 0 {
		return "", false
	}
	return vv[0], true
}
