package dataplane

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestHotSwapUnderLoad applies many configurations (splits, headers,
// endpoints) while keep-alive clients and websockets are running: nothing
// may fail and no websocket may drop.
func TestHotSwapUnderLoad(t *testing.T) {
	t.Parallel()
	var bs []*backend
	for i := 0; i < 4; i++ {
		bs = append(bs, startBackend(t, fmt.Sprintf("b%d", i)))
	}
	ws := startWSBackend(t, "ws")

	config := func(gen int) *Resources {
		w := uint32(gen%10) * 10
		res := singleRoute(
			routeTo(prefixMatch("/ws"), "ws"),
			routeSplit(prefixMatch("/"),
				split{cluster: "svc-a", weight: w, headers: map[string]string{"x-gen": strconv.Itoa(gen)}},
				split{cluster: "svc-b", weight: 100 - w, headers: map[string]string{"x-gen": strconv.Itoa(gen)}}),
		)
		res.Clusters = append(res.Clusters, edsCluster("svc-a", false), edsCluster("svc-b", false), edsCluster("ws", false))
		// Endpoints move between backends every generation.
		res.Endpoints = append(res.Endpoints,
			cla("svc-a", bs[gen%4].addr, bs[(gen+1)%4].addr),
			cla("svc-b", bs[(gen+2)%4].addr),
			cla("ws", ws.addr))
		return res
	}
	p := newTestProxy(t, Options{})
	mustApply(t, p, config(0))
	addr := p.ListenerAddr(listenerName).String()
	base := "http://" + addr

	stop := make(chan struct{})
	var requests, failures, wsMessages, wsFailures atomic.Int64
	var wg sync.WaitGroup
	client := keepAliveClient()
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(base + "/load")
				if err != nil {
					failures.Add(1)
					t.Errorf("request failed: %v", err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				requests.Add(1)
				if resp.StatusCode != 200 || resp.Header.Get("X-Backend") == "" {
					failures.Add(1)
					t.Errorf("got %d", resp.StatusCode)
				}
			}
		}()
	}
	for i := 0; i < 4; i++ {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				msg := fmt.Sprintf("ws%d-%d", i, j)
				if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
					wsFailures.Add(1)
					t.Errorf("websocket %d dropped: %v", i, err)
					return
				}
				if _, got, err := c.ReadMessage(); err != nil || string(got) != msg {
					wsFailures.Add(1)
					t.Errorf("websocket %d dropped: %q %v", i, got, err)
					return
				}
				wsMessages.Add(1)
			}
		}()
	}

	const applies = 60
	for gen := 1; gen <= applies; gen++ {
		time.Sleep(25 * time.Millisecond)
		mustApply(t, p, config(gen))
	}
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()

	if got := p.ListenerAddr(listenerName).String(); got != addr {
		t.Errorf("listener re-bound: %s -> %s", addr, got)
	}
	// The last config is in effect: its header is set on new requests.
	e, _ := getEcho(t, http.DefaultClient, mustReq("GET", base+"/check"))
	if g := e.Headers["X-Gen"]; len(g) != 1 || g[0] != strconv.Itoa(applies) {
		t.Errorf("x-gen = %v, want %d", g, applies)
	}
	t.Logf("%d requests, %d failures, %d websocket messages, %d websocket drops over %d applies",
		requests.Load(), failures.Load(), wsMessages.Load(), wsFailures.Load(), applies)
	if failures.Load() != 0 || wsFailures.Load() != 0 || requests.Load() < 100 || wsMessages.Load() < 40 {
		t.Fatalf("hot swap was not seamless")
	}
}
