package httpfilter

import (
	"fmt"
	"regexp"
	"strings"
)

// HeaderValue is a header value in Envoy's substitution format, of the
// part weir-proxy knows: literals, "%%", %REQ(name)% (a request header or
// pseudo header) and %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%.
type HeaderValue []headerValuePart

// headerValuePart is a literal, a request header to copy, or the client
// address.
type headerValuePart struct {
	literal string
	header  string
	client  bool
}

var reqCommand = regexp.MustCompile(`^%REQ\(([^)]+)\)%`)

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
		if m == nil {
			return nil, fmt.Errorf("%q: only %%REQ(name)%% and %s are supported by weir-proxy", v, clientCommand)
		}
		out = append(out, headerValuePart{header: strings.ToLower(m[1])})
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
		switch p.header {
		case "":
			if p.client {
				if a := cb.ClientAddr(); a.IsValid() {
					b.WriteString(a.String())
				}
				continue
			}
			b.WriteString(p.literal)
		case ":path":
			b.WriteString(r.Path)
		case ":authority", "host":
			b.WriteString(r.Authority)
		case ":method":
			b.WriteString(r.Method)
		case ":scheme":
			b.WriteString(r.Scheme)
		default:
			b.WriteString(r.Header.Get(p.header))
		}
	}
	return b.String()
}
