// Package ratelimit is Weir's global rate limiter: Envoy's rate limit
// service (envoy.service.ratelimit.v3.RateLimitService) counted with
// sentinel-golang, so that one limit holds however many gateways share it.
// Every gateway, Envoy or weir-proxy, asks it about each request that a
// limited route receives, with the descriptors translate configured.
//
// A descriptor names its limit with the entry LimitKey, whose value is a
// Limit's Name. A limit on the whole target counts every request with a
// Sentinel flow rule (reject, throttle, warm-up); a limit with a
// PartitionKey counts each value of that entry (a client's address, a
// header's value) on its own, with a Sentinel hotspot rule, and does not
// count a descriptor without the entry. A descriptor without LimitKey, or
// naming a limit this service does not have, is not limited: a gateway
// may know a limit a moment before the service does, or after.
package ratelimit

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sentinel "github.com/alibaba/sentinel-golang/api"
	"github.com/alibaba/sentinel-golang/core/base"
	sentinelconfig "github.com/alibaba/sentinel-golang/core/config"
	"github.com/alibaba/sentinel-golang/core/flow"
	"github.com/alibaba/sentinel-golang/core/hotspot"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weir-dev/weir/pkg/ir"
)

// Domain is the rate limit domain of Weir's descriptors.
const Domain = ir.RateLimitDomain

// LimitKey is the descriptor entry whose value names the Limit.
const LimitKey = ir.RateLimitNameKey

// maxPartitions bounds the values a partitioned limit counts on its own
// (Sentinel's hotspot LRU): an evicted value starts afresh.
const maxPartitions = 65536

// Limit is one global limit.
type Limit struct {
	// Name is the value of the descriptors' LimitKey entry.
	Name string
	// QPS is the number of requests admitted a second, over all gateways.
	// With a PartitionKey it is per value and must be whole.
	QPS float64
	// PartitionKey, when set, is the descriptor key whose value gets a
	// count of its own, such as "remote_address".
	PartitionKey string
	// Throttle makes a request over the limit wait for its turn, up to
	// MaxQueueing, instead of being refused at once.
	Throttle    bool
	MaxQueueing time.Duration
	// WarmUp, when set, starts the limit at QPS/ColdFactor and raises it
	// to QPS over WarmUp (Sentinel's warm-up, after Guava's). Only for a
	// limit on the whole target.
	WarmUp     time.Duration
	ColdFactor uint32
	// Block is what a refused request is answered with, besides the
	// status the gateway's filter sets.
	Block Block
}

// Block is the body and headers of a refused request's answer.
type Block struct {
	Body    string
	Headers []Header
}

// Header is one response header.
type Header struct{ Name, Value string }

// LimitOf is the service's limit for a route's ir.GlobalRateLimit.
func LimitOf(g *ir.GlobalRateLimit) Limit {
	l := Limit{
		Name: g.Name, QPS: g.QPS, PartitionKey: g.PartitionKey(),
		Throttle: g.Throttle, MaxQueueing: g.MaxQueueing, WarmUp: g.WarmUp, ColdFactor: g.ColdFactor,
		Block: Block{Body: g.Block.Body},
	}
	for _, h := range g.Block.Headers {
		l.Block.Headers = append(l.Block.Headers, Header{Name: h.Name, Value: h.Value})
	}
	return l
}

// Validate says what is wrong with l, naming the field.
func (l *Limit) Validate() error {
	if l.Name == "" || strings.Contains(l.Name, "%") {
		return fmt.Errorf("name: %q is empty or has a %%", l.Name)
	}
	g := ir.GlobalRateLimit{QPS: l.QPS, Throttle: l.Throttle, MaxQueueing: l.MaxQueueing, WarmUp: l.WarmUp, ColdFactor: l.ColdFactor}
	if l.PartitionKey != "" {
		g.PartitionBy = ir.PartitionHeader
	}
	if field, reason := g.Check(); field != "" {
		return fmt.Errorf("%s: %s", field, reason)
	}
	return nil
}

// Service serves Envoy's RateLimitService for a set of limits.
type Service struct {
	rlsv3.UnimplementedRateLimitServiceServer

	log *zap.SugaredLogger
	// prefix makes this service's Sentinel resources its own: Sentinel's
	// rules are the process's.
	prefix string

	mu     sync.RWMutex
	limits map[string]*Limit

	decisions *prometheus.CounterVec
}

var (
	services    atomic.Uint64
	initOnce    sync.Once
	errInitFail error
	// sentinelLog is where Sentinel's warnings go: Sentinel's logger is
	// the process's, so it follows the newest service's.
	sentinelLog atomic.Pointer[zap.SugaredLogger]
)

// New returns a service with no limits. reg, when set, gets its metrics.
func New(log *zap.SugaredLogger, reg prometheus.Registerer) (*Service, error) {
	sentinelLog.Store(log.Named("sentinel"))
	initOnce.Do(func() { errInitFail = initSentinel() })
	if errInitFail != nil {
		return nil, fmt.Errorf("starting Sentinel: %w", errInitFail)
	}
	s := &Service{
		log:    log,
		prefix: fmt.Sprintf("weir-rls-%d/", services.Add(1)),
		limits: map[string]*Limit{},
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_ratelimit_decisions_total",
			Help: "Descriptors the global rate limit service judged, by limit (namespace/policy#kind/target) and decision (allowed, limited).",
		}, []string{"limit", "decision"}),
	}
	if reg != nil {
		if err := reg.Register(s.decisions); err != nil {
			return nil, fmt.Errorf("registering the rate limit metrics: %w", err)
		}
	}
	return s, nil
}

// initSentinel starts Sentinel without its files and background
// collectors: no metric log, no system statistics, logs to log.
func initSentinel() error {
	conf := sentinelconfig.NewDefaultConfig()
	conf.Sentinel.App.Name = "weir"
	conf.Sentinel.Log.Logger = sentinelLogger{}
	conf.Sentinel.Log.Metric.FlushIntervalSec = 0
	// 100 ms buckets: a second's count slides in tenths, so admissions
	// do not come in half-second bursts (Sentinel's default is 2 buckets).
	conf.Sentinel.Stat.GlobalStatisticSampleCountTotal = 100
	conf.Sentinel.Stat.MetricStatisticSampleCount = 10
	conf.Sentinel.Stat.System.CollectIntervalMs = 0
	conf.Sentinel.Stat.System.CollectLoadIntervalMs = 0
	conf.Sentinel.Stat.System.CollectCpuIntervalMs = 0
	conf.Sentinel.Stat.System.CollectMemoryIntervalMs = 0
	return sentinel.InitWithConfig(conf)
}

// Register serves the service on s.
func (s *Service) Register(g *grpc.Server) { rlsv3.RegisterRateLimitServiceServer(g, s) }

// SetLimits replaces the service's limits. Counts of limits that keep
// their name and partitioning carry over.
func (s *Service) SetLimits(limits []Limit) error {
	next := make(map[string]*Limit, len(limits))
	for i := range limits {
		l := limits[i]
		if err := l.Validate(); err != nil {
			return fmt.Errorf("limit %q: %w", l.Name, err)
		}
		if next[l.Name] != nil {
			return fmt.Errorf("limit %q: two limits with one name", l.Name)
		}
		next[l.Name] = &l
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// A limit that changes kind (partitioned or not) loses its old rule
	// first, so that one resource never has both.
	for name, old := range s.limits {
		if l := next[name]; l != nil && (l.PartitionKey == "") != (old.PartitionKey == "") {
			s.clear(old)
		}
	}
	for _, l := range next {
		if err := s.load(l); err != nil {
			// Validate accepted it, so this is Sentinel's refusal: keep
			// serving what loaded, which is what s.limits says.
			return fmt.Errorf("limit %q: %w", l.Name, err)
		}
		s.limits[l.Name] = l
	}
	for name, old := range s.limits {
		if next[name] == nil {
			s.clear(old)
			delete(s.limits, name)
			s.decisions.DeletePartialMatch(prometheus.Labels{"limit": name})
		}
	}
	return nil
}

func (s *Service) resource(l *Limit) string { return s.prefix + l.Name }

func (s *Service) clear(l *Limit) {
	if l.PartitionKey == "" {
		_ = flow.ClearRulesOfResource(s.resource(l))
	} else {
		_ = hotspot.ClearRulesOfResource(s.resource(l))
	}
}

// load gives Sentinel the rule that counts l.
func (s *Service) load(l *Limit) error {
	res := s.resource(l)
	if l.PartitionKey != "" {
		r := &hotspot.Rule{
			Resource: res, MetricType: hotspot.QPS, ControlBehavior: hotspot.Reject,
			ParamIndex: 0, Threshold: int64(l.QPS), DurationInSec: 1, ParamsMaxCapacity: maxPartitions,
		}
		if l.Throttle {
			r.ControlBehavior, r.MaxQueueingTimeMs = hotspot.Throttling, l.MaxQueueing.Milliseconds()
		}
		_, err := hotspot.LoadRulesOfResource(res, []*hotspot.Rule{r})
		return err
	}
	r := &flow.Rule{
		Resource: res, TokenCalculateStrategy: flow.Direct, ControlBehavior: flow.Reject,
		Threshold: l.QPS, StatIntervalInMs: 1000,
	}
	if l.Throttle {
		r.ControlBehavior, r.MaxQueueingTimeMs = flow.Throttling, uint32(min(l.MaxQueueing.Milliseconds(), math.MaxUint32)) //nolint:gosec // bounded
	}
	if l.WarmUp > 0 {
		r.TokenCalculateStrategy = flow.WarmUp
		r.WarmUpPeriodSec = uint32(min(l.WarmUp/time.Second, math.MaxUint32)) //nolint:gosec // bounded
		r.WarmUpColdFactor = l.ColdFactor
	}
	_, err := flow.LoadRulesOfResource(res, []*flow.Rule{r})
	return err
}

// ShouldRateLimit implements the rate limit service: every descriptor
// naming a limit takes hits_addend requests (1 when 0) from it, and the
// request is over the limit when one of them refuses.
func (s *Service) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	if req.GetDomain() != Domain {
		return nil, status.Errorf(codes.InvalidArgument, "domain %q: this service limits only %q", req.GetDomain(), Domain)
	}
	hits := max(req.GetHitsAddend(), 1)
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}
	var refusedBy *Limit
	// The limits are found under the lock and counted outside it: a
	// throttled request sleeps in Sentinel, and must not hold up a
	// change of the limits (nor, behind it, every other request).
	limits := make([]*Limit, len(req.GetDescriptors()))
	s.mu.RLock()
	for i, d := range req.GetDescriptors() {
		for _, e := range d.GetEntries() {
			if e.GetKey() == LimitKey {
				limits[i] = s.limits[e.GetValue()]
			}
		}
	}
	s.mu.RUnlock()
	for i, d := range req.GetDescriptors() {
		st := &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
		resp.Statuses = append(resp.Statuses, st)
		limit := limits[i]
		var partition string
		hasPartition := false
		if limit == nil {
			continue
		}
		if limit.PartitionKey != "" {
			for _, e := range d.GetEntries() {
				if e.GetKey() == limit.PartitionKey {
					partition, hasPartition = e.GetValue(), true
				}
			}
			if !hasPartition {
				continue
			}
		}
		st.CurrentLimit = &rlsv3.RateLimitResponse_RateLimit{
			Name: limit.Name, RequestsPerUnit: uint32(min(math.Ceil(limit.QPS), math.MaxUint32)), Unit: rlsv3.RateLimitResponse_RateLimit_SECOND,
		}
		opts := []sentinel.EntryOption{sentinel.WithTrafficType(base.Inbound), sentinel.WithBatchCount(hits)}
		if hasPartition {
			opts = append(opts, sentinel.WithArgs(partition))
		}
		if err := ctx.Err(); err != nil {
			return nil, status.FromContextError(err).Err()
		}
		entry, blocked := sentinel.Entry(s.resource(limit), opts...)
		if blocked != nil {
			s.decisions.WithLabelValues(limit.Name, "limited").Inc()
			st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
			resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
			if refusedBy == nil {
				refusedBy = limit
			}
			continue
		}
		s.decisions.WithLabelValues(limit.Name, "allowed").Inc()
		entry.Exit()
	}
	if refusedBy == nil {
		return resp, nil
	}
	if refusedBy.Block.Body != "" {
		resp.RawBody = []byte(refusedBy.Block.Body)
	}
	for _, h := range refusedBy.Block.Headers {
		resp.ResponseHeadersToAdd = append(resp.ResponseHeadersToAdd, &corev3.HeaderValue{Key: h.Name, Value: h.Value})
	}
	return resp, nil
}

// sentinelLogger sends Sentinel's warnings and errors to the newest
// service's logger; its info is about loading rules, which the service
// does on every change, so it is dropped.
type sentinelLogger struct{}

func (sentinelLogger) Debug(string, ...any)       {}
func (sentinelLogger) DebugEnabled() bool         { return false }
func (sentinelLogger) Info(string, ...any)        {}
func (sentinelLogger) InfoEnabled() bool          { return false }
func (sentinelLogger) Warn(msg string, kv ...any) { sentinelLog.Load().Warnw(msg, kv...) }
func (sentinelLogger) WarnEnabled() bool          { return true }
func (sentinelLogger) Error(err error, msg string, kv ...any) {
	sentinelLog.Load().Errorw(msg, append(kv, zap.Error(err))...)
}
func (sentinelLogger) ErrorEnabled() bool { return true }
