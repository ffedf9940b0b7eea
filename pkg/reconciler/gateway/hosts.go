package gateway

import "strings"

// hostMatches reports whether a listener hostname (exact, "*.suffix" or
// "" for any) takes the host h, which may itself be a wildcard.
func hostMatches(listener, h string) bool {
	switch {
	case listener == "":
		return true
	case strings.HasPrefix(listener, "*."):
		suffix := listener[1:] // ".example.com"
		if strings.HasPrefix(h, "*.") {
			return strings.HasSuffix(h[1:], suffix)
		}
		return strings.HasSuffix(h, suffix) && len(h) > len(suffix)
	}
	return listener == h
}

// intersectHosts returns the hosts a route serves on a listener: the
// route's hostnames that the listener takes, narrowed to the listener's
// own when the route's wildcard is broader. A route without hostnames
// takes the listener's; "*" stands for any host.
func intersectHosts(listener string, route []string) []string {
	if len(route) == 0 {
		if listener == "" {
			return []string{"*"}
		}
		return []string{listener}
	}
	var out []string
	add := func(h string) {
		for _, o := range out {
			if o == h {
				return
			}
		}
		out = append(out, h)
	}
	for _, h := range route {
		h = strings.ToLower(h)
		switch {
		case hostMatches(listener, h):
			add(h)
		case strings.HasPrefix(h, "*.") && listener != "" && hostMatches(h, listener):
			// The route's wildcard is broader than the listener's hostname.
			add(listener)
		}
	}
	return out
}

// specificity orders listener hostnames for a host: an exact name beats a
// wildcard, a longer wildcard a shorter one, and any of them "".
func specificity(listener string) int {
	switch {
	case listener == "":
		return 0
	case strings.HasPrefix(listener, "*."):
		return 1 + len(listener)
	}
	return 1 << 20
}

// hostsOverlap reports whether some request host is served by both of two
// hosts of intersectHosts ("*" is any).
func hostsOverlap(a, c string) bool {
	switch {
	case a == "*" || c == "*" || a == c:
		return true
	case strings.HasPrefix(a, "*.") && hostMatches(a, c):
		return true
	case strings.HasPrefix(c, "*.") && hostMatches(c, a):
		return true
	}
	return false
}
