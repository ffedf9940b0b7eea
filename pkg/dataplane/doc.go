// Package dataplane is weir-proxy's proxy engine: it owns the listening
// sockets, the compiled (immutable) routing tables, the upstream connection
// pools and the request forwarding path.
//
// It consumes the same Envoy v3 resources that pkg/translate emits for Envoy
// (the subset documented in docs/xds-shape.md) and implements them with
// Envoy's documented semantics. Anything outside that subset is rejected by
// Apply with an error naming the resource and field, so that the xDS layer can
// NACK it instead of silently serving something different from Envoy.
//
// Apply compiles a complete resource set into a snapshot and swaps it in with
// atomic pointers: requests, websockets and gRPC streams that already started
// finish on the snapshot they started with. Listeners whose bind address does
// not change keep their socket across swaps.
package dataplane
