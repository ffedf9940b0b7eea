package kingress

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/networking/pkg/status"

	"github.com/weir-dev/weir/pkg/config"
)

// gatewayPortName is the name of the plain HTTP port on the gateway
// Services; its EndpointSlice port is the pod port the prober dials.
const gatewayPortName = "http"

// ProbeTargets lists the gateway pods that must serve a KIngress before it
// is Ready: the ready endpoints of the external gateway Service for public
// rules and of the internal one for cluster-local rules.
type ProbeTargets struct {
	EndpointSlices SlicesOfService
}

var _ status.ProbeTargetLister = (*ProbeTargets)(nil)

// ListProbeTargets implements status.ProbeTargetLister.
func (p *ProbeTargets) ListProbeTargets(ctx context.Context, ing *v1alpha1.Ingress) ([]status.ProbeTarget, error) {
	cfg := config.FromContext(ctx).Weir
	var targets []status.ProbeTarget
	for _, group := range []struct {
		visibility v1alpha1.IngressVisibility
		service    types.NamespacedName
	}{
		{v1alpha1.IngressVisibilityExternalIP, cfg.ExternalService},
		{v1alpha1.IngressVisibilityClusterLocal, cfg.InternalService},
	} {
		urls := probeURLs(ing, group.visibility)
		if len(urls) == 0 {
			continue
		}
		ips, port, err := p.gatewayPods(group.service)
		if err != nil {
			return nil, err
		}
		targets = append(targets, status.ProbeTarget{
			PodIPs:  ips,
			PodPort: strconv.Itoa(int(port)),
			Port:    "80",
			URLs:    urls,
		})
	}
	return targets, nil
}

func (p *ProbeTargets) gatewayPods(svc types.NamespacedName) (sets.Set[string], int32, error) {
	slices, err := p.EndpointSlices(svc.Namespace, svc.Name)
	if err != nil {
		return nil, 0, fmt.Errorf("listing the EndpointSlices of gateway Service %s: %w", svc, err)
	}
	ips := sets.New[string]()
	var port int32
	for _, s := range slices {
		var slicePort int32
		for _, sp := range s.Ports {
			if sp.Name != nil && *sp.Name == gatewayPortName && sp.Port != nil {
				slicePort = *sp.Port
			}
		}
		if slicePort == 0 {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			if len(ep.Addresses) > 0 {
				ips.Insert(ep.Addresses[0])
				port = slicePort
			}
		}
	}
	if ips.Len() == 0 {
		return nil, 0, &NoGatewayPodsError{Service: svc}
	}
	return ips, port, nil
}

// NoGatewayPodsError says a gateway Service has no ready pod to probe. It
// is a wait, not a failure: the KIngress is probed again when the
// Service's EndpointSlices change (GatewayWaiters).
type NoGatewayPodsError struct {
	Service types.NamespacedName
}

func (e *NoGatewayPodsError) Error() string {
	return fmt.Sprintf("no ready gateway pods behind Service %s (port %q); check that the gateway Deployment is running and ready", e.Service, gatewayPortName)
}

// GatewayWaiters holds the KIngresses that found no ready gateway pod, and
// enqueues them when a gateway Service's EndpointSlices change. Returning
// an error instead would send every KIngress through the workqueue's
// shared retry limit (10 a second) and write a Warning Event for each:
// at a controller start with 10,000 KIngresses, before the gateways were
// ready, that took 16 minutes.
type GatewayWaiters struct {
	mu      sync.Mutex
	changes uint64 // gateway EndpointSlice changes seen
	waiting map[types.NamespacedName]struct{}
}

// Changes returns a token to pass to Wait: read it before the probe.
func (g *GatewayWaiters) Changes() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.changes
}

// Wait holds key until the next gateway EndpointSlice change. If one came
// since token was read, it enqueues key at once instead.
func (g *GatewayWaiters) Wait(key types.NamespacedName, token uint64, enqueue func(types.NamespacedName)) {
	g.mu.Lock()
	if g.changes != token {
		g.mu.Unlock()
		enqueue(key)
		return
	}
	if g.waiting == nil {
		g.waiting = map[types.NamespacedName]struct{}{}
	}
	g.waiting[key] = struct{}{}
	g.mu.Unlock()
}

// Forget drops key, e.g. when its KIngress is deleted.
func (g *GatewayWaiters) Forget(key types.NamespacedName) {
	g.mu.Lock()
	delete(g.waiting, key)
	g.mu.Unlock()
}

// GatewaysChanged enqueues every waiting KIngress.
func (g *GatewayWaiters) GatewaysChanged(enqueue func(types.NamespacedName)) {
	g.mu.Lock()
	g.changes++
	waiting := g.waiting
	g.waiting = nil
	g.mu.Unlock()
	for key := range waiting {
		enqueue(key)
	}
}

// probeURLs returns one URL per rule with the given visibility. Each rule
// is one virtual host that holds all of the rule's hosts (expanded as
// Knative expands cluster-local names), and a KIngress is served whole or
// not at all, so one host proves the rule is served with the spec's hash;
// probing every expanded host quadrupled the probes, which Knative's
// prober runs 15 at a time. The prober appends /healthz to the URL's path,
// so the path is a prefix the rule routes without header conditions;
// otherwise the probe would miss every route and never succeed.
func probeURLs(ing *v1alpha1.Ingress, visibility v1alpha1.IngressVisibility) []*url.URL {
	var urls []*url.URL
	seen := sets.New[string]()
	for _, rule := range ing.Spec.Rules {
		if rule.Visibility != visibility || rule.HTTP == nil || len(rule.Hosts) == 0 {
			continue
		}
		host := sets.List(sets.New(rule.Hosts...))[0]
		if seen.Has(host) {
			continue
		}
		seen.Insert(host)
		urls = append(urls, &url.URL{Scheme: "http", Host: host, Path: probePrefix(rule.HTTP.Paths)})
	}
	sort.Slice(urls, func(i, j int) bool { return urls[i].Host < urls[j].Host })
	return urls
}

func probePrefix(paths []v1alpha1.HTTPIngressPath) string {
	best := ""
	found := false
	for _, p := range paths {
		if len(p.Headers) > 0 {
			continue
		}
		if !found || len(p.Path) < len(best) {
			best, found = p.Path, true
		}
	}
	if !found && len(paths) > 0 {
		best = paths[0].Path
	}
	if best == "" {
		return "/"
	}
	return best
}
