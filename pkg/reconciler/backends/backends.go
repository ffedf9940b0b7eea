// Package backends owns what every front end needs to turn a Service port
// into an ir.Backend: the port, its protocol, whether an ExternalName
// Service speaks TLS, and the ready endpoints behind it.
package backends

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weir-dev/weir/pkg/ir"
)

// ServicePort finds the port of svc that port names, by number or name.
func ServicePort(svc *corev1.Service, port intstr.IntOrString) (corev1.ServicePort, bool) {
	for _, sp := range svc.Spec.Ports {
		if (port.Type == intstr.Int && sp.Port == port.IntVal) || (port.Type == intstr.String && sp.Name == port.StrVal) {
			return sp, true
		}
	}
	return corev1.ServicePort{}, false
}

// SpeaksTLS reports whether an ExternalName Service port is HTTPS: port
// 443, or named or with appProtocol "https".
func SpeaksTLS(sp corev1.ServicePort) bool {
	return sp.Port == 443 || sp.Name == "https" || sp.AppProtocol != nil && (*sp.AppProtocol == "https" || *sp.AppProtocol == "kubernetes.io/https")
}

// ProtocolOf is the upstream protocol a Service port declares by
// appProtocol or name.
func ProtocolOf(sp corev1.ServicePort) ir.Protocol {
	if sp.AppProtocol != nil {
		switch *sp.AppProtocol {
		case "kubernetes.io/h2c", "h2c":
			return ir.H2C
		case "grpc":
			return ir.GRPC
		}
	}
	switch sp.Name {
	case "http2", "h2c":
		return ir.H2C
	case "grpc":
		return ir.GRPC
	}
	return ir.HTTP1
}

// Endpoints lists the ready addresses of slices behind a Service port,
// sorted. The target port comes from the EndpointSlice port with the
// Service port's name, which is how named target ports resolve per pod.
func Endpoints(slices []*discoveryv1.EndpointSlice, sp corev1.ServicePort) []ir.Endpoint {
	seen := map[ir.Endpoint]bool{}
	var out []ir.Endpoint
	for _, s := range slices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		port, ok := slicePort(s, sp)
		if !ok {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, addr := range ep.Addresses {
				e := ir.Endpoint{Address: addr, Port: port}
				if !seen[e] {
					seen[e] = true
					out = append(out, e)
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Address != out[j].Address {
			return out[i].Address < out[j].Address
		}
		return out[i].Port < out[j].Port
	})
	return out
}

func slicePort(s *discoveryv1.EndpointSlice, sp corev1.ServicePort) (uint32, bool) {
	for _, p := range s.Ports {
		if p.Port == nil {
			continue
		}
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		if name == sp.Name {
			return uint32(*p.Port), true //nolint:gosec // ports are 1..65535
		}
	}
	return 0, false
}
