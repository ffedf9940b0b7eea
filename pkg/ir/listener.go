package ir

import "fmt"

// ListenerProtocol is what a Listener accepts.
type ListenerProtocol uint8

const (
	// ProtocolHTTP serves plain-text HTTP/1.1 and h2c.
	ProtocolHTTP ListenerProtocol = iota + 1
	// ProtocolHTTPS terminates TLS with the listener's certificates.
	ProtocolHTTPS
	// ProtocolTLSPassthrough routes TLS connections by SNI without
	// terminating them.
	ProtocolTLSPassthrough
	// ProtocolTLSTerminate terminates TLS with the listener's certificates
	// and routes the bytes inside by SNI, as TCP.
	ProtocolTLSTerminate
)

func (p ListenerProtocol) String() string {
	switch p {
	case ProtocolHTTP:
		return "HTTP"
	case ProtocolHTTPS:
		return "HTTPS"
	case ProtocolTLSPassthrough:
		return "TLS"
	case ProtocolTLSTerminate:
		return "TLS (terminate)"
	}
	return fmt.Sprintf("protocol(%d)", uint8(p))
}

// Listener is a port a fragment listens on, as data: a Gateway's listener.
// Several Listeners of one fragment may share a port when their protocols
// agree; they are then told apart by Hostname (SNI for HTTPS and TLS, the
// Host header for HTTP through their virtual hosts).
type Listener struct {
	// Name is unique within the fragment; VirtualHost.Listener and
	// TLSRoute.Listener refer to it.
	Name     string
	Port     uint32
	Protocol ListenerProtocol
	// Hostname is "" for any host, an exact name, or "*.suffix".
	Hostname string
	// Certificates name the fragment's Certificates served on an HTTPS or
	// ProtocolTLSTerminate listener; more than one lets a client pick RSA
	// or ECDSA.
	Certificates []string
	// ClientValidation, on a listener that terminates TLS, asks clients
	// for a certificate; nil does not ask.
	ClientValidation *ClientValidation
	Provenance       Provenance
	// Field is where the front end found it, e.g. "spec.listeners[0]".
	Field string
}

// ClientValidation is mutual TLS on a listener.
type ClientValidation struct {
	// CACertificates is PEM: a client's certificate must chain to one.
	CACertificates []byte
	// AllowInsecureFallback takes a connection without a certificate, or
	// with one that does not verify (Gateway API's AllowInsecureFallback).
	// Otherwise a verified certificate is required.
	AllowInsecureFallback bool
	// Optional takes a connection without a certificate; one that is
	// presented must verify.
	Optional bool
	// MaxDepth, when set, bounds the chain's certificates after the
	// client's own, its trusted CA included (Envoy's max_verify_depth).
	MaxDepth *uint32
}

// TLSRoute sends TLS connections, by SNI, to backends: as they came on a
// passthrough listener, decrypted on a terminating one.
type TLSRoute struct {
	// Listener names the fragment's TLS listener (ProtocolTLSPassthrough
	// or ProtocolTLSTerminate).
	Listener string
	// ServerNames are exact names or "*.suffix"; empty means any.
	ServerNames []string
	Backends    []WeightedBackend
	Provenance  Provenance
	// Field is where the front end found it, e.g. "spec.rules[0]".
	Field string
}
