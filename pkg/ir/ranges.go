package ir

import "net/netip"

// MaxLimitedRanges bounds LimitedRanges for one rate limit: each range is
// a descriptor Envoy compares every request with.
const MaxLimitedRanges = 64

// LimitedRanges covers the client addresses outside exempt with disjoint
// prefixes, per family; a family without exempt ranges is one prefix of
// length 0, and one wholly exempt has none. IPv4-mapped IPv6 ranges count
// as IPv4, as clients are compared unmapped.
func LimitedRanges(exempt []netip.Prefix) (v4, v6 []netip.Prefix) {
	var holes4, holes6 []netip.Prefix
	for _, p := range exempt {
		if !p.IsValid() {
			continue
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				// Wider than the mapped space: it holds every IPv4 address
				// and part of IPv6.
				holes4 = append(holes4, netip.MustParsePrefix("0.0.0.0/0"))
				holes6 = append(holes6, p.Masked())
				continue
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p = p.Masked(); p.Addr().Is4() {
			holes4 = append(holes4, p)
		} else {
			holes6 = append(holes6, p)
		}
	}
	return complement(netip.MustParsePrefix("0.0.0.0/0"), holes4), complement(netip.MustParsePrefix("::/0"), holes6)
}

// complement returns disjoint prefixes covering what of space no prefix
// in holes covers.
func complement(space netip.Prefix, holes []netip.Prefix) []netip.Prefix {
	inside := false
	for _, h := range holes {
		if h.Bits() <= space.Bits() && h.Contains(space.Addr()) {
			return nil // space is wholly a hole
		}
		inside = inside || space.Contains(h.Addr())
	}
	if !inside {
		return []netip.Prefix{space}
	}
	lo, hi := halves(space)
	return append(complement(lo, holes), complement(hi, holes)...)
}

// halves splits p into its two prefixes one bit longer.
func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits() + 1
	lo := netip.PrefixFrom(p.Addr(), bits)
	b := p.Addr().As16()
	i := p.Bits()
	if p.Addr().Is4() {
		i += 96
	}
	b[i/8] |= 0x80 >> (i % 8)
	hi := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		hi = hi.Unmap()
	}
	return lo, netip.PrefixFrom(hi, bits)
}
