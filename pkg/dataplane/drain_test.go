package dataplane

import (
	"net/http"
	"net/http/httptrace"
	"testing"
)

// TestDrainAsksClientsToReconnect checks Envoy-style draining: after Drain
// the listener still serves, HTTP/1.1 responses close their connection and
// HTTP/2 connections are not reused after a response.
func TestDrainAsksClientsToReconnect(t *testing.T) {
	t.Parallel()
	a := startBackend(t, "a")
	res := singleRoute(routeTo(prefixMatch("/"), "a"))
	addBackends(res, false, a)
	p := newTestProxy(t, Options{})
	mustApply(t, p, res)
	url := proxyURL(t, p, listenerName) + "/drain"

	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	clients := map[string]*http.Client{
		"HTTP/1.1": {Transport: &http.Transport{}},
		"h2c":      {Transport: &http.Transport{Protocols: &h2}},
	}
	// reused reports whether the request went over an existing connection.
	get := func(c *http.Client) (reused bool, resp *http.Response) {
		req := mustReq("GET", url)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
		}))
		e, resp := getEcho(t, c, req)
		if e.Backend != "a" {
			t.Fatalf("backend = %q", e.Backend)
		}
		return reused, resp
	}
	for name, c := range clients {
		get(c)
		if reused, _ := get(c); !reused {
			t.Errorf("%s: keep-alive connection not reused before draining", name)
		}
	}

	p.Drain()
	if !p.Draining() {
		t.Fatal("Draining() = false after Drain")
	}
	for name, c := range clients {
		for i := 0; i < 3; i++ {
			reused, resp := get(c)
			if i > 0 && reused {
				t.Errorf("%s: request %d reused a connection while draining", name, i)
			}
			if resp.ProtoMajor == 1 && !resp.Close {
				t.Errorf("%s: response without Connection: close while draining", name)
			}
		}
	}
	// A listener created by an Apply during the drain drains too.
	res.Listeners = append(res.Listeners, plainListener("second"))
	res.Routes = append(res.Routes, routeConfig("second", virtualHost("all", []string{"*"}, routeTo(prefixMatch("/"), "a"))))
	mustApply(t, p, res)
	_, resp := getEcho(t, clients["HTTP/1.1"], mustReq("GET", proxyURL(t, p, "second")+"/"))
	if !resp.Close {
		t.Error("new listener: response without Connection: close while draining")
	}
}
