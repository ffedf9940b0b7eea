package cluster

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// The cluster network. Pods need addresses of their own: the test images
// listen on ":"+PORT, so two pods with the same port would collide in one
// network namespace, and EndpointSlices reject loopback addresses. So each
// pod gets a network namespace with a veth pair on a per-cluster bridge:
//
//	pods       10.244.<index>.2-254/24, the host is 10.244.<index>.1
//	services   10.96.<index>.0/24, a "local" route on the host (the kernel
//	           accepts every address in it) where the service proxy listens
//	node ports 30000+100*index .. +99, served on 127.0.0.1
//
// Pods have no default route: they reach each other, the host and the
// service range, nothing else. "unreachable" routes for 10.244/16 and
// 10.96/16 stay on the host while any cluster runs, so traffic to a pod
// that is gone never leaves the machine. index is unique among the clusters running on this host
// (a flock in /run/weir-cluster), so several can run at once.
type network struct {
	index   int
	lock    *os.File
	bridge  string
	gateway net.IP // the host's address on the bridge
	podNet  *net.IPNet
	svcNet  *net.IPNet

	mu   sync.Mutex
	used [256]bool
	next int // round robin, so a freed address is not reused at once
	seq  int
}

const maxClusters = 64

// netnsEtc is where `ip netns exec` finds per-namespace /etc files.
const netnsEtc = "/etc/netns"

func newNetwork() (*network, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("test/cluster needs root: pods run in network namespaces of their own")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("test/cluster needs iproute2's ip command")
	}
	if err := os.MkdirAll("/run/weir-cluster", 0o755); err != nil {
		return nil, err
	}
	for i := 0; i < maxClusters; i++ {
		f, err := os.OpenFile(lockPath(i), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		n := &network{
			index:   i,
			lock:    f,
			bridge:  fmt.Sprintf("weirbr%d", i),
			gateway: net.IPv4(10, 244, byte(i), 1).To4(),
			podNet:  &net.IPNet{IP: net.IPv4(10, 244, byte(i), 0).To4(), Mask: net.CIDRMask(24, 32)},
			svcNet:  &net.IPNet{IP: net.IPv4(10, 96, byte(i), 0).To4(), Mask: net.CIDRMask(24, 32)},
			next:    2,
		}
		if err := n.setup(); err != nil {
			n.teardown()
			return nil, err
		}
		return n, nil
	}
	return nil, fmt.Errorf("all %d cluster slots in /run/weir-cluster are taken", maxClusters)
}

func (n *network) nsPrefix() string   { return fmt.Sprintf("weir%d-", n.index) }
func (n *network) vethPrefix() string { return fmt.Sprintf("wv%d-", n.index) }

// NodePortBase is the first node port of this cluster's range of 100.
func (n *network) nodePortBase() int { return 30000 + 100*n.index }

// guardRanges hold every cluster's pods and Services.
var guardRanges = []string{"10.244.0.0/16", "10.96.0.0/16"}

// checkHostRanges refuses to run on a host that itself uses the pod or
// Service ranges (its own address or its DNS server): the guard routes
// would cut the host off from them.
func checkHostRanges() error {
	var ips []net.IP
	if b, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "nameserver" {
				ips = append(ips, net.ParseIP(f[1]))
			}
		}
	}
	if ifaces, err := net.Interfaces(); err == nil {
		for _, ifc := range ifaces {
			if strings.HasPrefix(ifc.Name, "weirbr") {
				continue
			}
			addrs, _ := ifc.Addrs()
			for _, a := range addrs {
				if ipn, ok := a.(*net.IPNet); ok {
					ips = append(ips, ipn.IP)
				}
			}
		}
	}
	for _, r := range guardRanges {
		_, cidr, _ := net.ParseCIDR(r)
		for _, ip := range ips {
			if ip != nil && cidr.Contains(ip) {
				return fmt.Errorf("this host uses %s (%s), which test/cluster routes to its pods and Services; run it on a host outside %s", ip, r, strings.Join(guardRanges, " and "))
			}
		}
	}
	return nil
}

func (n *network) setup() error {
	if err := checkHostRanges(); err != nil {
		return err
	}
	n.cleanStale()
	for _, guard := range guardRanges {
		if err := run("ip", "route", "replace", "unreachable", guard); err != nil {
			return err
		}
	}
	cidr := fmt.Sprintf("%s/24", n.gateway)
	for _, argv := range [][]string{
		// A fixed address: a bridge otherwise takes the lowest MAC of its
		// ports and changes it as pods come and go, and every pod's ARP
		// entry for the host goes stale, stalling pod-to-host traffic
		// (xDS, the apiserver) for seconds at a time.
		{"ip", "link", "add", n.bridge, "address", fmt.Sprintf("02:77:65:69:72:%02x", n.index), "type", "bridge"},
		{"ip", "addr", "add", cidr, "dev", n.bridge},
		{"ip", "link", "set", n.bridge, "up"},
		{"ip", "route", "replace", "local", n.svcNet.String(), "dev", "lo", "table", "local"},
	} {
		if err := run(argv...); err != nil {
			return err
		}
	}
	return nil
}

// cleanStale removes what a previous holder of this index left behind
// when it was killed before it could clean up.
func (n *network) cleanStale() {
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], n.nsPrefix()) {
				_ = run("ip", "netns", "del", f[0])
			}
		}
	}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if strings.HasPrefix(name, n.vethPrefix()) || name == n.bridge {
				_ = run("ip", "link", "del", name)
			}
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(netnsEtc, n.nsPrefix()+"*"))
	for _, d := range dirs {
		_ = os.RemoveAll(d)
	}
	_ = run("ip", "route", "del", "local", n.svcNet.String(), "dev", "lo", "table", "local")
}

// teardown removes the bridge, every pod namespace and the service route,
// frees the index and, if no other cluster runs, the guard routes.
func (n *network) teardown() {
	n.cleanStale()
	if n.lock != nil {
		n.lock.Close()
		n.lock = nil
	}
	dropGuardsIfLast()
}

// dropGuardsIfLast removes the guard routes unless another cluster holds
// an index.
func dropGuardsIfLast() {
	for i := 0; i < maxClusters; i++ {
		f, err := os.OpenFile(lockPath(i), os.O_RDWR, 0)
		if err != nil {
			continue
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		f.Close()
		if err != nil {
			return // held by a running cluster
		}
	}
	for _, guard := range guardRanges {
		_ = run("ip", "route", "del", "unreachable", guard)
	}
}

func lockPath(index int) string { return fmt.Sprintf("/run/weir-cluster/%d.lock", index) }

// podNS is one pod's network namespace.
type podNS struct {
	name string // the netns name; also the /etc/netns directory
	ip   net.IP
}

// addPod creates a network namespace with an address on the bridge.
func (n *network) addPod() (*podNS, error) {
	n.mu.Lock()
	var ip net.IP
	for i := 0; i < 253; i++ {
		host := 2 + (n.next-2+i)%253
		if !n.used[host] {
			n.used[host] = true
			n.next = 2 + (host-2+1)%253
			ip = net.IPv4(10, 244, byte(n.index), byte(host)).To4()
			break
		}
	}
	n.seq++
	seq := n.seq
	n.mu.Unlock()
	if ip == nil {
		return nil, errors.New("the pod network is full (253 pods)")
	}
	ns := &podNS{name: fmt.Sprintf("%s%d", n.nsPrefix(), seq), ip: ip}
	veth := fmt.Sprintf("%s%d", n.vethPrefix(), seq)
	for _, argv := range [][]string{
		{"ip", "netns", "add", ns.name},
		{"ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns.name},
		{"ip", "link", "set", veth, "master", n.bridge, "up"},
		{"ip", "-n", ns.name, "addr", "add", ip.String() + "/24", "dev", "eth0"},
		{"ip", "-n", ns.name, "link", "set", "eth0", "up"},
		{"ip", "-n", ns.name, "link", "set", "lo", "up"},
		{"ip", "-n", ns.name, "route", "add", n.svcNet.String(), "via", n.gateway.String()},
	} {
		if err := run(argv...); err != nil {
			n.removePod(ns)
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Join(netnsEtc, ns.name), 0o755); err != nil {
		n.removePod(ns)
		return nil, err
	}
	// No DNS server: names resolve from the hosts file only, and a lookup
	// of anything else fails fast instead of leaving the namespace.
	if err := os.WriteFile(filepath.Join(netnsEtc, ns.name, "resolv.conf"), []byte("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"), 0o644); err != nil {
		n.removePod(ns)
		return nil, err
	}
	return ns, nil
}

// removePod deletes the namespace (and with it the veth pair). The pod's
// processes must be gone.
func (n *network) removePod(ns *podNS) {
	_ = run("ip", "netns", "del", ns.name)
	_ = os.RemoveAll(filepath.Join(netnsEtc, ns.name))
	n.mu.Lock()
	n.used[ns.ip[3]] = false
	n.mu.Unlock()
}
