package httpfilter

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// Fraction is a RuntimeFractionalPercent's default: weir-proxy has no
// runtime, so the default is the value.
type Fraction struct{ num, den uint32 }

// All is the fraction that samples every request.
var All = Fraction{num: 1, den: 1}

// Sample reports whether this request is in the fraction.
func (f Fraction) Sample() bool {
	switch {
	case f.num == 0:
		return false
	case f.num >= f.den:
		return true
	}
	return rand.Uint32N(f.den) < f.num
}

// CompileFraction compiles p; unset is unset, which the caller's filter
// gives its own meaning (local_ratelimit: off; ratelimit: on).
func CompileFraction(p *corev3.RuntimeFractionalPercent, unset Fraction, path string) (Fraction, error) {
	if p == nil {
		return unset, nil
	}
	if bad := UnsupportedField(p, "default_value", "runtime_key"); bad != "" {
		return Fraction{}, fmt.Errorf("%s.%s: not supported by weir-proxy", path, bad)
	}
	d := p.GetDefaultValue()
	den := map[typev3.FractionalPercent_DenominatorType]uint32{
		typev3.FractionalPercent_HUNDRED: 100, typev3.FractionalPercent_TEN_THOUSAND: 10_000, typev3.FractionalPercent_MILLION: 1_000_000,
	}[d.GetDenominator()]
	if den == 0 {
		return Fraction{}, fmt.Errorf("%s.default_value.denominator: %v is not supported", path, d.GetDenominator())
	}
	return Fraction{num: d.GetNumerator(), den: den}, nil
}

// RateLimitActions are a compiled route RateLimit: the actions that make
// one rate limit descriptor of a request, shared by the local and the
// global rate limit filters.
type RateLimitActions []rateLimitAction

// rateLimitAction produces one descriptor entry, or skip when the action
// leaves none (request_headers' skip_if_absent), or ok false when the
// descriptor must be dropped.
type rateLimitAction func(client netip.Addr, h *RequestHeaders) (key, value string, skip, ok bool)

// CompileRateLimit compiles rl's actions: generic_key, remote_address,
// masked_remote_address and request_headers. Any other is refused.
func CompileRateLimit(rl *routev3.RateLimit, path string) (RateLimitActions, error) {
	if bad := UnsupportedField(rl, "actions"); bad != "" {
		return nil, fmt.Errorf("%s.%s: not supported by weir-proxy", path, bad)
	}
	var out RateLimitActions
	for j, a := range rl.GetActions() {
		ap := fmt.Sprintf("%s.actions[%d]", path, j)
		switch s := a.GetActionSpecifier().(type) {
		case *routev3.RateLimit_Action_GenericKey_:
			if bad := UnsupportedField(s.GenericKey, "descriptor_key", "descriptor_value"); bad != "" {
				return nil, fmt.Errorf("%s.generic_key.%s: not supported by weir-proxy", ap, bad)
			}
			if strings.Contains(s.GenericKey.GetDescriptorValue(), "%") {
				return nil, fmt.Errorf("%s.generic_key.descriptor_value: format specifiers are not supported by weir-proxy", ap)
			}
			key := cmp.Or(s.GenericKey.GetDescriptorKey(), "generic_key")
			value := s.GenericKey.GetDescriptorValue()
			out = append(out, func(netip.Addr, *RequestHeaders) (string, string, bool, bool) { return key, value, false, true })
		case *routev3.RateLimit_Action_RemoteAddress_:
			out = append(out, func(client netip.Addr, _ *RequestHeaders) (string, string, bool, bool) {
				return "remote_address", client.String(), false, client.IsValid()
			})
		case *routev3.RateLimit_Action_MaskedRemoteAddress_:
			m := s.MaskedRemoteAddress
			v4, v6 := 32, 128
			if m.GetV4PrefixMaskLen() != nil {
				v4 = int(m.GetV4PrefixMaskLen().GetValue())
			}
			if m.GetV6PrefixMaskLen() != nil {
				v6 = int(m.GetV6PrefixMaskLen().GetValue())
			}
			if v4 > 32 || v6 > 128 {
				return nil, fmt.Errorf("%s.masked_remote_address: a prefix length longer than the address", ap)
			}
			out = append(out, func(client netip.Addr, _ *RequestHeaders) (string, string, bool, bool) {
				if !client.IsValid() {
					return "", "", false, false
				}
				bits := v6
				if client.Is4() {
					bits = v4
				}
				p, _ := client.Prefix(bits)
				return "masked_remote_address", p.String(), false, true
			})
		case *routev3.RateLimit_Action_RequestHeaders_:
			rh := s.RequestHeaders
			if bad := UnsupportedField(rh, "header_name", "descriptor_key", "skip_if_absent"); bad != "" {
				return nil, fmt.Errorf("%s.request_headers.%s: not supported by weir-proxy", ap, bad)
			}
			name, key, skipIfAbsent := strings.ToLower(rh.GetHeaderName()), rh.GetDescriptorKey(), rh.GetSkipIfAbsent()

			if name == "" || key == "" {
				return nil, fmt.Errorf("%s.request_headers: header_name and descriptor_key are required", ap)
			}
			out = append(out, func(_ netip.Addr, h *RequestHeaders) (string, string, bool, bool) {
				v, ok := requestHeader(h, name)
				if !ok {
					return "", "", skipIfAbsent, skipIfAbsent
				}
				return key, v, false, true
			})
		default:
			return nil, fmt.Errorf("%s: only generic_key, remote_address, masked_remote_address and request_headers are supported by weir-proxy", ap)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s.actions: at least one is required", path)
	}
	return out, nil
}

// Descriptor returns the entries the actions make for a request, or ok
// false when one of them has no value: Envoy then drops the descriptor.
func (a RateLimitActions) Descriptor(client netip.Addr, h *RequestHeaders) (keys, values []string, ok bool) {
	for _, act := range a {
		k, v, skip, ok := act(client, h)
		if !ok {
			return nil, nil, false
		}
		if skip {
			continue
		}
		keys, values = append(keys, k), append(values, v)
	}
	return keys, values, len(keys) > 0
}
