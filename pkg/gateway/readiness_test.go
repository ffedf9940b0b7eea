package gateway

import (
	"context"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

type stubProber struct {
	ready bool
	asked int
}

func (p *stubProber) IsReady(context.Context, *v1alpha1.Ingress) (bool, error) {
	p.asked++
	return p.ready, nil
}
func (p *stubProber) CancelIngressProbing(interface{}) {}

// TestAckReadiness: a KIngress is held back until the gateways acknowledge
// a sync that includes its fragment, then handed to the prober (or Ready
// without one); one held back for its patience is probed anyway.
func TestAckReadiness(t *testing.T) {
	for _, withProber := range []bool{false, true} {
		name := "alone"
		if withProber {
			name = "before-prober"
		}
		t.Run(name, func(t *testing.T) {
			s, _ := newSyncer(t)
			acked := false
			var enqueued []types.NamespacedName
			var after []time.Duration
			prober := &stubProber{ready: true}
			opts := AckReadinessOptions{Acked: func() bool { return acked },
				Enqueue: func(k types.NamespacedName) { enqueued = append(enqueued, k) }}
			if withProber {
				opts.Then, opts.Patience = prober, time.Hour
				opts.EnqueueAfter = func(_ types.NamespacedName, d time.Duration) { after = append(after, d) }
			}
			a := NewAckReadiness(s, opts)
			s.OnSynced(func(uint64) { a.Check() })
			ing := &v1alpha1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hello"}}
			key := types.NamespacedName{Namespace: "default", Name: "hello"}
			ready := func() bool {
				t.Helper()
				r, err := a.IsReady(context.Background(), ing)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}

			if ready() {
				t.Fatal("Ready before the model holds the KIngress")
			}
			if _, _, err := s.Model().Set(fragment("hello", 8080)); err != nil {
				t.Fatal(err)
			}
			if ready() {
				t.Fatal("Ready before any sync")
			}
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
			if ready() || len(enqueued) != 0 {
				t.Fatalf("Ready (or enqueued %v) before the gateways acknowledged", enqueued)
			}
			acked = true
			a.Check()
			if !slices.Equal(enqueued, []types.NamespacedName{key}) {
				t.Fatalf("after the ACK enqueued %v, want [%s]", enqueued, key)
			}
			if !ready() {
				t.Fatal("not Ready after the gateways acknowledged")
			}
			if withProber && prober.asked != 1 {
				t.Errorf("the prober was asked %d times, want once, after the ACK", prober.asked)
			}

			// A changed fragment waits again.
			if _, _, err := s.Model().Set(fragment("hello", 9090)); err != nil {
				t.Fatal(err)
			}
			acked = false
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
			if ready() {
				t.Fatal("a changed KIngress is Ready before its new fragment was acknowledged")
			}
			if withProber {
				if len(after) != 2 || after[1] != time.Hour {
					t.Errorf("patience re-enqueues = %v, want one per wait of 1h", after)
				}
				// Past its patience the prober decides, ACK or not.
				a.patience = 0
				asked := prober.asked
				if !ready() || prober.asked != asked+1 {
					t.Error("a KIngress past its patience was not handed to the prober")
				}
			}
		})
	}
}
