package ratelimit

import (
	"context"
	"net"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// serve starts s on a loopback socket and returns a client of it.
func serve(t *testing.T, limits ...Limit) (*Service, rlsv3.RateLimitServiceClient) {
	t.Helper()
	s, err := New(zap.NewNop().Sugar(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetLimits(limits); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return s, rlsv3.NewRateLimitServiceClient(conn)
}

func descriptor(kv ...string) *ratelimitv3.RateLimitDescriptor {
	d := &ratelimitv3.RateLimitDescriptor{}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

func ask(t *testing.T, c rlsv3.RateLimitServiceClient, ds ...*ratelimitv3.RateLimitDescriptor) *rlsv3.RateLimitResponse {
	t.Helper()
	resp, err := c.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: Domain, Descriptors: ds})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// admitted counts the OKs of n calls made as fast as they return.
func admitted(t *testing.T, c rlsv3.RateLimitServiceClient, n int, ds ...*ratelimitv3.RateLimitDescriptor) int {
	t.Helper()
	ok := 0
	for range n {
		if ask(t, c, ds...).GetOverallCode() == rlsv3.RateLimitResponse_OK {
			ok++
		}
	}
	return ok
}

// withinASecond fails the test unless the calls since start took less
// than a second, which exact counts of a limit a second need: slower than
// that, the window moved on. (Tens of loopback calls take milliseconds.)
func withinASecond(t *testing.T, start time.Time) {
	t.Helper()
	if d := time.Since(start); d >= 900*time.Millisecond {
		t.Fatalf("the calls took %v; exact counts of a limit a second need them within one", d)
	}
}

func TestRejectOverTheLimit(t *testing.T) {
	_, c := serve(t, Limit{Name: "default/api", QPS: 10, Block: Block{Body: "slow down", Headers: []Header{{"Retry-After", "1"}}}})
	limited := descriptor(LimitKey, "default/api")
	// A burst well within a second: the limit's 10, no more.
	defer withinASecond(t, time.Now())
	if got := admitted(t, c, 40, limited); got != 10 {
		t.Errorf("admitted %d of a burst of 40 at 10 QPS, want 10", got)
	}
	resp := ask(t, c, limited)
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("the 41st request: %v, want OVER_LIMIT", resp.GetOverallCode())
	}
	if string(resp.GetRawBody()) != "slow down" || len(resp.GetResponseHeadersToAdd()) != 1 || resp.GetResponseHeadersToAdd()[0].GetKey() != "Retry-After" {
		t.Errorf("a refusal carries body %q and headers %v, want the limit's block response", resp.GetRawBody(), resp.GetResponseHeadersToAdd())
	}
	if st := resp.GetStatuses(); len(st) != 1 || st[0].GetCurrentLimit().GetRequestsPerUnit() != 10 {
		t.Errorf("statuses %v, want one with the current limit of 10 a second", st)
	}
	// Descriptors that name no limit of this service are never limited.
	if got := admitted(t, c, 20, descriptor(LimitKey, "default/other"), descriptor("remote_address", "10.0.0.1")); got != 20 {
		t.Errorf("admitted %d of 20 requests naming no known limit", got)
	}
}

func TestPartitionsCountOnTheirOwn(t *testing.T) {
	_, c := serve(t, Limit{Name: "per-client", QPS: 5, PartitionKey: "remote_address"})
	defer withinASecond(t, time.Now())
	a := descriptor(LimitKey, "per-client", "remote_address", "10.0.0.1")
	b := descriptor(LimitKey, "per-client", "remote_address", "10.0.0.2")
	if got := admitted(t, c, 20, a); got != 5 {
		t.Errorf("client a: admitted %d of 20 at 5 QPS each, want 5", got)
	}
	if got := admitted(t, c, 20, b); got != 5 {
		t.Errorf("client b, after a spent its limit: admitted %d of 20, want 5", got)
	}
	// Without the partition's entry, the descriptor is not counted.
	if got := admitted(t, c, 20, descriptor(LimitKey, "per-client")); got != 20 {
		t.Errorf("admitted %d of 20 descriptors without remote_address, want all", got)
	}
}

func TestThrottleQueuesInsteadOfRefusing(t *testing.T) {
	_, c := serve(t, Limit{Name: "smooth", QPS: 20, Throttle: true, MaxQueueing: 500 * time.Millisecond})
	d := descriptor(LimitKey, "smooth")
	start := time.Now()
	if got := admitted(t, c, 10, d); got != 10 {
		t.Errorf("admitted %d of 10 that fit the queue, want all", got)
	}
	// Throttling spaces requests 1/QPS apart: 10 of them span at least
	// 9 × 50 ms.
	if elapsed := time.Since(start); elapsed < 450*time.Millisecond {
		t.Errorf("10 throttled requests at 20 QPS took %v, want at least 450ms", elapsed)
	}
}

func TestThrottleRefusesPastTheQueue(t *testing.T) {
	_, c := serve(t, Limit{Name: "short-queue", QPS: 2, Throttle: true, MaxQueueing: 100 * time.Millisecond})
	d := descriptor(LimitKey, "short-queue")
	// The first passes; the next would wait 500 ms, more than the queue
	// allows.
	if got := admitted(t, c, 3, d); got != 1 {
		t.Errorf("admitted %d of 3 at 2 QPS with 100 ms of queue, want 1", got)
	}
}

func TestWarmUpStartsCold(t *testing.T) {
	_, c := serve(t, Limit{Name: "warm", QPS: 100, WarmUp: 10 * time.Second, ColdFactor: 4})
	// Cold, the limit is about 100/4 a second.
	got := admitted(t, c, 200, descriptor(LimitKey, "warm"))
	if got < 15 || got > 40 {
		t.Errorf("a cold limit of 100 QPS with cold factor 4 admitted %d of a burst of 200, want about 25", got)
	}
}

func TestLimitsChangeInPlace(t *testing.T) {
	s, c := serve(t, Limit{Name: "l", QPS: 5})
	d := descriptor(LimitKey, "l")
	defer withinASecond(t, time.Now())
	if got := admitted(t, c, 10, d); got != 5 {
		t.Fatalf("admitted %d of 10 at 5 QPS", got)
	}
	// The count carries over a raised limit: 5 are already spent.
	if err := s.SetLimits([]Limit{{Name: "l", QPS: 8}}); err != nil {
		t.Fatal(err)
	}
	if got := admitted(t, c, 10, d); got != 3 {
		t.Errorf("admitted %d after raising the limit to 8, want 3", got)
	}
	for decision, want := range map[string]float64{"allowed": 8, "limited": 12} {
		if got := testutil.ToFloat64(s.decisions.WithLabelValues("l", decision)); got != want {
			t.Errorf("weir_ratelimit_decisions_total{limit=l,decision=%s} = %v, want %v", decision, got, want)
		}
	}
	// A removed limit limits nothing, and its metrics go.
	if err := s.SetLimits(nil); err != nil {
		t.Fatal(err)
	}
	if got := admitted(t, c, 10, d); got != 10 {
		t.Errorf("admitted %d of 10 after the limit was removed", got)
	}
	if n := testutil.CollectAndCount(s.decisions); n != 0 {
		t.Errorf("%d series left after the limits were removed", n)
	}
}

func TestInvalidLimitsAndRequests(t *testing.T) {
	s, c := serve(t)
	for _, l := range []Limit{
		{Name: "", QPS: 1},
		{Name: "zero", QPS: 0},
		{Name: "fraction", QPS: 2.5, PartitionKey: "remote_address"},
		{Name: "warm-partition", QPS: 2, PartitionKey: "x", WarmUp: time.Second, ColdFactor: 3},
		{Name: "throttle", QPS: 2, Throttle: true},
		{Name: "cold", QPS: 2, WarmUp: time.Second, ColdFactor: 1},
	} {
		if err := s.SetLimits([]Limit{l}); err == nil {
			t.Errorf("limit %+v accepted", l)
		}
	}
	if err := s.SetLimits([]Limit{{Name: "a", QPS: 1}, {Name: "a", QPS: 2}}); err == nil {
		t.Error("two limits with one name accepted")
	}
	_, err := c.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "other"})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("another domain: %v, want InvalidArgument", err)
	}
}
