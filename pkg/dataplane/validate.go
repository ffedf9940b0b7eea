package dataplane

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/weir-dev/weir/pkg/dataplane/httpfilter"
)

// ErrMissingResource marks Apply errors caused by a reference to a resource
// that is not in the set (an RDS route configuration or an SDS secret).
// Envoy keeps such a listener warming rather than rejecting it, so the xDS
// layer may prefer to wait for the resource instead of NACKing.
var ErrMissingResource = errors.New("referenced resource not found")

// unsupported reports a set field that weir-proxy does not implement.
func unsupported(path string) error {
	return fmt.Errorf("%s: not supported by weir-proxy", path)
}

func invalid(path, format string, args ...any) error {
	return fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
}

// sub joins a field path.
func sub(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func idx(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// onlyFields rejects m when it sets any field not in allowed. It is the
// "never silently ignore config" rule: every message we read is checked
// field by field, so a field added by the translator (or a newer Envoy API)
// becomes a NACK instead of a behaviour difference.
func onlyFields(m proto.Message, path string, allowed ...string) error {
	if bad := httpfilter.UnsupportedField(m, allowed...); bad != "" {
		return unsupported(sub(path, bad))
	}
	return nil
}

// pgv runs the protoc-gen-validate rules that Envoy also enforces.
func pgv(m interface{ Validate() error }, path string) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	return nil
}

// unpack decodes a typed_config into dst, checking the type URL.
func unpack(a *anypb.Any, dst proto.Message, path string) error {
	if a == nil {
		return invalid(path, "typed_config is required")
	}
	want := string(dst.ProtoReflect().Descriptor().FullName())
	got := strings.TrimPrefix(a.GetTypeUrl(), "type.googleapis.com/")
	if i := strings.LastIndexByte(got, '/'); i >= 0 {
		got = got[i+1:]
	}
	if got != want {
		return invalid(path, "typed_config type %q is not supported (want %s)", a.GetTypeUrl(), want)
	}
	if err := a.UnmarshalTo(dst); err != nil {
		return invalid(path, "cannot decode typed_config: %v", err)
	}
	return nil
}

// checkADS accepts only `ads {}` config sources, the only transport weir uses.
func checkADS(cs *corev3.ConfigSource, path string) error {
	if cs == nil {
		return invalid(path, "config_source is required")
	}
	if err := onlyFields(cs, path, "ads", "resource_api_version", "initial_fetch_timeout"); err != nil {
		return err
	}
	if cs.GetAds() == nil {
		return invalid(path, "only ads config sources are supported")
	}
	if err := onlyFields(cs.GetAds(), sub(path, "ads")); err != nil {
		return err
	}
	if cs.GetResourceApiVersion() != corev3.ApiVersion_AUTO && cs.GetResourceApiVersion() != corev3.ApiVersion_V3 {
		return invalid(sub(path, "resource_api_version"), "only V3 is supported")
	}
	return nil
}

// duration converts a proto Duration; ok is false when it is unset.
func duration(d *durationpb.Duration) (time.Duration, bool) {
	if d == nil {
		return 0, false
	}
	return d.AsDuration(), true
}
