// Command echo is the example backend for `make run`: it answers every
// request with its name and the request it saw, as JSON. Like Knative's
// queue-proxy, it echoes the K-Network-Hash probe header, so Weir's
// readiness probe succeeds through it.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"sort"
	"time"
)

type reply struct {
	Name    string            `json:"name"`
	Method  string            `json:"method"`
	Host    string            `json:"host"`
	Path    string            `json:"path"`
	Proto   string            `json:"proto"`
	Headers map[string]string `json:"headers"`
}

func main() {
	name := flag.String("name", "echo", "the name this backend answers with")
	listen := flag.String("listen", "127.0.0.1:9001", "address to listen on")
	flag.Parse()

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := r.Header.Get("K-Network-Hash"); h != "" {
			w.Header().Set("K-Network-Hash", h)
		}
		headers := map[string]string{}
		keys := make([]string, 0, len(r.Header))
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			headers[k] = r.Header.Get(k)
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(reply{Name: *name, Method: r.Method, Host: r.Host, Path: r.URL.Path, Proto: r.Proto, Headers: headers})
	})
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Addr: *listen, Handler: handler, Protocols: &protocols, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("echo %q listening on %s", *name, *listen)
	log.Fatal(srv.ListenAndServe())
}
