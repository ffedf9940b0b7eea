//go:build tools

// Package hack pins build-time dependencies so go.mod records them.
package hack

import (
	// Knative's ingress conformance test images; test/cluster builds them
	// as local binaries and runs them as pods.
	_ "knative.dev/networking/test/test_images/grpc-ping"
	_ "knative.dev/networking/test/test_images/httpproxy"
	_ "knative.dev/networking/test/test_images/retry"
	_ "knative.dev/networking/test/test_images/runtime"
	_ "knative.dev/networking/test/test_images/timeout"
	_ "knative.dev/networking/test/test_images/wsserver"

	// The Gateway API conformance suite's backend.
	_ "sigs.k8s.io/gateway-api/conformance/echo-basic"
)
