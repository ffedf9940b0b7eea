package dataplane

import "strings"

// normalizePath applies the HCM's normalize_path (RFC 3986 normalization:
// percent-decoding of unreserved characters, backslashes as slashes, and
// removal of dot segments) and merge_slashes. The common case of a path that
// needs nothing returns the input without allocating.
func normalizePath(p string, normalize, merge bool) string {
	if normalize && needsNormalize(p) {
		p = removeDotSegments(decodeUnreserved(strings.ReplaceAll(p, "\\", "/")))
	}
	if merge && strings.Contains(p, "//") {
		var b strings.Builder
		b.Grow(len(p))
		for i := 0; i < len(p); i++ {
			if p[i] == '/' && i > 0 && p[i-1] == '/' {
				continue
			}
			b.WriteByte(p[i])
		}
		p = b.String()
	}
	return p
}

func needsNormalize(p string) bool {
	return strings.Contains(p, "/.") || strings.IndexByte(p, '%') >= 0 || strings.IndexByte(p, '\\') >= 0
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// decodeUnreserved decodes %XX escapes of unreserved characters and upper
// cases the hex digits of the escapes it keeps (RFC 3986 6.2.2).
func decodeUnreserved(p string) string {
	if strings.IndexByte(p, '%') < 0 {
		return p
	}
	const upper = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			h, ok1 := unhex(p[i+1])
			l, ok2 := unhex(p[i+2])
			if ok1 && ok2 {
				c := h<<4 | l
				if isUnreserved(c) {
					b.WriteByte(c)
				} else {
					b.WriteByte('%')
					b.WriteByte(upper[h])
					b.WriteByte(upper[l])
				}
				i += 2
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// removeDotSegments is RFC 3986 section 5.2.4 for absolute paths.
func removeDotSegments(p string) string {
	if !strings.HasPrefix(p, "/") {
		return p
	}
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}
