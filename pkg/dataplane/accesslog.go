package dataplane

import (
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// accessLogger writes one JSON object per request. Lines are built in a
// pooled buffer and written with a single Write under a mutex, so a shared
// writer never interleaves lines.
type accessLogger struct {
	mu sync.Mutex
	w  io.Writer
}

var logBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func (a *accessLogger) log(s *stream, d time.Duration) {
	bp := logBufPool.Get().(*[]byte)
	b := (*bp)[:0]
	r := s.r
	b = append(b, `{"start_time":"`...)
	b = s.start.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = append(b, `","listener":`...)
	b = appendJSONString(b, s.conf.name)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, r.Method)
	b = append(b, `,"authority":`...)
	b = appendJSONString(b, r.Host)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, r.URL.RequestURI())
	b = append(b, `,"protocol":`...)
	b = appendJSONString(b, r.Proto)
	b = append(b, `,"code":`...)
	b = strconv.AppendInt(b, int64(s.code), 10)
	b = append(b, `,"flags":`...)
	b = appendJSONString(b, s.flags)
	b = append(b, `,"bytes_received":`...)
	b = strconv.AppendInt(b, s.bytesIn.Load(), 10)
	b = append(b, `,"bytes_sent":`...)
	b = strconv.AppendInt(b, s.bytesOut.Load(), 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(d.Microseconds())/1000, 'f', 3, 64)
	b = append(b, `,"upstream_cluster":`...)
	if s.cluster != nil {
		b = appendJSONString(b, s.cluster.name)
	} else {
		b = append(b, `""`...)
	}
	b = append(b, `,"upstream_host":`...)
	if s.endpoint != nil {
		b = appendJSONString(b, s.endpoint.addr)
	} else {
		b = append(b, `""`...)
	}
	b = append(b, `,"x_forwarded_for":`...)
	b = appendJSONString(b, r.Header.Get("X-Forwarded-For"))
	b = append(b, `,"user_agent":`...)
	b = appendJSONString(b, r.Header.Get("User-Agent"))
	b = append(b, `,"remote_address":`...)
	b = appendJSONString(b, r.RemoteAddr)
	b = append(b, "}\n"...)
	a.mu.Lock()
	_, _ = a.w.Write(b)
	a.mu.Unlock()
	*bp = b
	logBufPool.Put(bp)
}

func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
