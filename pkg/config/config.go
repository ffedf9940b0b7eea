// Package config owns Weir's own ConfigMap, config-weir: its keys, their
// defaults and validation, and the Knative-style store that puts the current
// value (and config-network's) into each reconcile's context.
package config

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	netcfg "knative.dev/networking/pkg/config"
	"knative.dev/pkg/configmap"
)

// ConfigMapName is the name of Weir's ConfigMap, in the controller's namespace.
const ConfigMapName = "config-weir"

// Weir is the parsed config-weir.
type Weir struct {
	// StreamIdleTimeout closes streams with no activity; 0, the default,
	// disables it. It is 0 or at least MinStreamIdleTimeout: Knative's
	// revision timeouts, and the queue-proxy that enforces them, decide
	// how long a response may take, not the gateway.
	StreamIdleTimeout time.Duration
	// TLSSecretNamespaces may hold TLS Secrets for KIngresses of any
	// namespace. A KIngress may always use Secrets in its own namespace.
	TLSSecretNamespaces sets.Set[string]
	// ExternalService and InternalService are the gateway Services. Their
	// names make the KIngress load balancer status, and their ready
	// endpoints are the gateway pods the readiness prober checks.
	ExternalService types.NamespacedName
	InternalService types.NamespacedName
	// ListenAddress is where the gateway listeners bind: "::" (both IPv4
	// and IPv6, the default) or "0.0.0.0" (IPv4, for a kernel without IPv6).
	ListenAddress string
	// XffNumTrustedHops is how many proxies in front of the gateway append
	// to X-Forwarded-For and are trusted (Envoy's xff_num_trusted_hops).
	XffNumTrustedHops uint32
}

// maxTrustedHops bounds xff-num-trusted-hops: no real chain of proxies is
// longer, and a typo should not be served.
const maxTrustedHops = 10

// MinStreamIdleTimeout is Knative's default max-revision-timeout-seconds
// (config-defaults): no revision may take longer to respond.
const MinStreamIdleTimeout = 600 * time.Second

// Default returns config-weir's defaults.
func Default() *Weir {
	return &Weir{
		StreamIdleTimeout:   0,
		TLSSecretNamespaces: sets.New[string](),
		ExternalService:     types.NamespacedName{Namespace: "weir-system", Name: "weir"},
		InternalService:     types.NamespacedName{Namespace: "weir-system", Name: "weir-internal"},
		ListenAddress:       "::",
	}
}

// FromMap parses config-weir's data. Unknown keys are errors, so a typo is
// caught instead of silently ignored.
func FromMap(data map[string]string) (*Weir, error) {
	w := Default()
	for k, v := range data {
		var err error
		switch k {
		case "_example":
		case "stream-idle-timeout":
			w.StreamIdleTimeout, err = time.ParseDuration(v)
			if err == nil && (w.StreamIdleTimeout < 0 || w.StreamIdleTimeout > 0 && w.StreamIdleTimeout < MinStreamIdleTimeout) {
				err = fmt.Errorf("must be 0 (no limit) or at least %v, Knative's default max-revision-timeout-seconds; a shorter one would cut a slow revision's response at the gateway", MinStreamIdleTimeout)
			}
		case "tls-secret-namespaces":
			for _, ns := range strings.Split(v, ",") {
				if ns = strings.TrimSpace(ns); ns != "" {
					w.TLSSecretNamespaces.Insert(ns)
				}
			}
		case "external-service":
			w.ExternalService, err = parseNamespacedName(v)
		case "internal-service":
			w.InternalService, err = parseNamespacedName(v)
		case "xff-num-trusted-hops":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 32)
			if err == nil && n > maxTrustedHops {
				err = fmt.Errorf("at most %d", maxTrustedHops)
			}
			w.XffNumTrustedHops = uint32(n) //nolint:gosec // checked above
		case "listen-address":
			if v != "::" && v != "0.0.0.0" {
				err = fmt.Errorf(`must be "::" (IPv4 and IPv6) or "0.0.0.0" (IPv4 only)`)
			}
			w.ListenAddress = v
		default:
			err = fmt.Errorf("unknown key; valid keys are stream-idle-timeout, tls-secret-namespaces, external-service, internal-service, listen-address, xff-num-trusted-hops")
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s=%q: %w", ConfigMapName, k, v, err)
		}
	}
	return w, nil
}

func parseNamespacedName(v string) (types.NamespacedName, error) {
	ns, name, ok := strings.Cut(v, "/")
	if !ok || ns == "" || name == "" {
		return types.NamespacedName{}, fmt.Errorf("want namespace/name")
	}
	return types.NamespacedName{Namespace: ns, Name: name}, nil
}

// FromConfigMap parses a config-weir ConfigMap.
func FromConfigMap(cm *corev1.ConfigMap) (*Weir, error) { return FromMap(cm.Data) }

// Config is everything a reconcile reads from ConfigMaps.
type Config struct {
	Weir    *Weir
	Network *netcfg.Config
}

type cfgKey struct{}

// ToContext stores c in ctx.
func ToContext(ctx context.Context, c *Config) context.Context {
	return context.WithValue(ctx, cfgKey{}, c)
}

// FromContext returns the Config in ctx, or defaults if there is none.
func FromContext(ctx context.Context) *Config {
	if c, ok := ctx.Value(cfgKey{}).(*Config); ok {
		return c
	}
	net, _ := netcfg.NewConfigFromMap(nil)
	return &Config{Weir: Default(), Network: net}
}

// Store keeps the latest config-weir and config-network.
type Store struct {
	*configmap.UntypedStore
}

// NewStore returns a store that calls onAfterStore after each change.
func NewStore(logger configmap.Logger, onAfterStore ...func(name string, value any)) *Store {
	return &Store{UntypedStore: configmap.NewUntypedStore("weir", logger, configmap.Constructors{
		ConfigMapName:        FromConfigMap,
		netcfg.ConfigMapName: netcfg.NewConfigFromConfigMap,
	}, onAfterStore...)}
}

// ToContext attaches the current config to ctx.
func (s *Store) ToContext(ctx context.Context) context.Context {
	return ToContext(ctx, s.Load())
}

// Load returns the current config.
func (s *Store) Load() *Config {
	c := &Config{Weir: Default()}
	if w, ok := s.UntypedLoad(ConfigMapName).(*Weir); ok && w != nil {
		c.Weir = w
	}
	if n, ok := s.UntypedLoad(netcfg.ConfigMapName).(*netcfg.Config); ok && n != nil {
		c.Network = n
	} else {
		c.Network, _ = netcfg.NewConfigFromMap(nil)
	}
	return c
}
