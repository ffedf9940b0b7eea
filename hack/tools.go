//go:build tools

// Package hack pins build-time dependencies so go.mod records them.
package hack
