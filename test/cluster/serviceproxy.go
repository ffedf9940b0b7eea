package cluster

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// serviceProxy is the cluster's kube-proxy, in user space: it listens on
// every Service's ClusterIP:port (the service range is a local route on
// the host, so pods reach it through the bridge) and on 127.0.0.1:nodePort
// for NodePort and LoadBalancer Services, and forwards each TCP connection
// to a ready endpoint from the Service's EndpointSlices. Forwarding bytes
// keeps HTTP/2, TLS and websockets intact.
type serviceProxy struct {
	c    *Cluster
	kick chan struct{}
	rr   atomic.Uint64

	mu        sync.Mutex
	listeners map[string]*proxyListener // by listen address
	closed    bool
}

type proxyListener struct {
	l      net.Listener
	target proxyTarget
}

// proxyTarget is a Service port: connections go to its endpoints.
type proxyTarget struct {
	svc      types.NamespacedName
	portName string
}

func newServiceProxy(c *Cluster) *serviceProxy {
	p := &serviceProxy{c: c, kick: make(chan struct{}, 1), listeners: map[string]*proxyListener{}}
	kick := func(any) {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	_, _ = c.informers.Core().V1().Services().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    kick,
		UpdateFunc: func(_, o any) { kick(o) },
		DeleteFunc: kick,
	})
	// Registered before the factory starts, so listers are ready in run.
	c.informers.Discovery().V1().EndpointSlices().Informer()
	return p
}

func (p *serviceProxy) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
			p.sync()
		}
	}
}

func (p *serviceProxy) sync() {
	svcs, err := p.c.informers.Core().V1().Services().Lister().List(labels.Everything())
	if err != nil {
		return
	}
	want := map[string]proxyTarget{}
	for _, s := range svcs {
		if s.Spec.ClusterIP == "" || s.Spec.ClusterIP == corev1.ClusterIPNone {
			continue
		}
		for _, sp := range s.Spec.Ports {
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				continue
			}
			t := proxyTarget{svc: types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, portName: sp.Name}
			want[net.JoinHostPort(s.Spec.ClusterIP, strconv.Itoa(int(sp.Port)))] = t
			if sp.NodePort != 0 && (s.Spec.Type == corev1.ServiceTypeNodePort || s.Spec.Type == corev1.ServiceTypeLoadBalancer) {
				want[net.JoinHostPort(p.c.NodeAddress, strconv.Itoa(int(sp.NodePort)))] = t
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	for addr, pl := range p.listeners {
		if t, ok := want[addr]; !ok || t != pl.target {
			pl.l.Close()
			delete(p.listeners, addr)
		}
	}
	for addr, t := range want {
		if _, ok := p.listeners[addr]; ok {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			p.c.logf("service proxy: cannot listen on %s for %s: %v", addr, t.svc, err)
			continue
		}
		pl := &proxyListener{l: l, target: t}
		p.listeners[addr] = pl
		go p.serve(pl)
	}
}

func (p *serviceProxy) serve(pl *proxyListener) {
	for {
		conn, err := pl.l.Accept()
		if err != nil {
			return
		}
		go p.forward(conn, pl.target)
	}
}

// endpoints lists the ready addresses of a Service port.
func (p *serviceProxy) endpoints(t proxyTarget) []string {
	if t.svc == (types.NamespacedName{Namespace: "default", Name: "kubernetes"}) {
		// Its endpoint is the advertise address; the apiserver listens on
		// loopback only.
		return []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(p.c.apiPort))}
	}
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: t.svc.Name})
	slices, err := p.c.informers.Discovery().V1().EndpointSlices().Lister().EndpointSlices(t.svc.Namespace).List(sel)
	if err != nil {
		return nil
	}
	var out []string
	for _, sl := range slices {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		for _, port := range sl.Ports {
			name := ""
			if port.Name != nil {
				name = *port.Name
			}
			if name != t.portName || port.Port == nil {
				continue
			}
			for _, ep := range sl.Endpoints {
				if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
					continue
				}
				for _, a := range ep.Addresses {
					out = append(out, net.JoinHostPort(a, strconv.Itoa(int(*port.Port))))
				}
			}
		}
	}
	return out
}

func (p *serviceProxy) forward(in net.Conn, t proxyTarget) {
	defer in.Close()
	eps := p.endpoints(t)
	if len(eps) == 0 {
		return // like kube-proxy's reject: nobody is serving
	}
	addr := eps[int(p.rr.Add(1)%uint64(len(eps)))]
	out, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return
	}
	defer out.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done
	<-done
}

func (p *serviceProxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for addr, pl := range p.listeners {
		pl.l.Close()
		delete(p.listeners, addr)
	}
}
