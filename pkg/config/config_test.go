package config

import (
	"strings"
	"testing"
	"time"
)

func TestFromMapDefaults(t *testing.T) {
	w, err := FromMap(nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.StreamIdleTimeout != 0 || w.ExternalService.String() != "weir-system/weir" || w.InternalService.String() != "weir-system/weir-internal" {
		t.Errorf("defaults = %+v", w)
	}
}

func TestFromMapValues(t *testing.T) {
	w, err := FromMap(map[string]string{
		"stream-idle-timeout":   "15m",
		"tls-secret-namespaces": "knative-serving, certs ,",
		"external-service":      "gw/public",
		"xff-num-trusted-hops":  "2",
	})
	if err != nil {
		t.Fatal(err)
	}
	if w.StreamIdleTimeout != 15*time.Minute {
		t.Errorf("StreamIdleTimeout = %v", w.StreamIdleTimeout)
	}
	if !w.TLSSecretNamespaces.Has("certs") || !w.TLSSecretNamespaces.Has("knative-serving") || w.TLSSecretNamespaces.Len() != 2 {
		t.Errorf("TLSSecretNamespaces = %v", w.TLSSecretNamespaces)
	}
	if w.ExternalService.String() != "gw/public" {
		t.Errorf("ExternalService = %v", w.ExternalService)
	}
	if w.XffNumTrustedHops != 2 {
		t.Errorf("XffNumTrustedHops = %d", w.XffNumTrustedHops)
	}
}

func TestFromMapErrorsNameKey(t *testing.T) {
	for _, tc := range []struct{ key, value string }{
		{"stream-idle-timeout", "soon"},
		{"stream-idle-timeout", "-1s"},
		{"stream-idle-timeout", "5m"}, // below Knative's maximum revision timeout
		{"external-service", "no-slash"},
		{"listen-address", "10.0.0.1"},
		{"xff-num-trusted-hops", "-1"},
		{"xff-num-trusted-hops", "11"},
		{"stream-idle-timout", "1s"},
	} {
		_, err := FromMap(map[string]string{tc.key: tc.value})
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("FromMap(%s=%s) error = %v, want one naming the key", tc.key, tc.value, err)
		}
	}
}
