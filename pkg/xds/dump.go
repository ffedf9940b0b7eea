package xds

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"
)

// dumpKeys names each served type in a dump, in dependency order.
var dumpKeys = []struct{ key, typeURL string }{
	{"listeners", resource.ListenerType},
	{"routes", resource.RouteType},
	{"clusters", resource.ClusterType},
	{"endpoints", resource.EndpointType},
	{"secrets", resource.SecretType},
}

// Dump renders resources as {"listeners":[…],"routes":[…],"clusters":[…],
// "endpoints":[…],"secrets":[…]}, each resource in protojson with its
// @type, in the order given. format is "json" or "yaml". Secrets and the
// password hashes of basic_auth are redacted: a dump is for people and
// logs, never for key material.
func Dump(byType map[string][]types.Resource, format string) ([]byte, error) {
	return dump(byType, format, false)
}

// DumpWithSecrets is Dump with private keys and password hashes left in, for a user who asks
// for them (weir translate --show-secrets).
func DumpWithSecrets(byType map[string][]types.Resource, format string) ([]byte, error) {
	return dump(byType, format, true)
}

func dump(byType map[string][]types.Resource, format string, showSecrets bool) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("{")
	for i, k := range dumpKeys {
		if i > 0 {
			buf.WriteString(",")
		}
		fmt.Fprintf(&buf, "%q:[", k.key)
		for j, r := range byType[k.typeURL] {
			if !showSecrets {
				switch k.typeURL {
				case resource.SecretType:
					r = redactSecret(r)
				case resource.RouteType:
					r = redactRoutes(r)
				}
			}
			a, err := anypb.New(r)
			if err != nil {
				return nil, err
			}
			b, err := protojson.Marshal(a)
			if err != nil {
				return nil, err
			}
			if j > 0 {
				buf.WriteString(",")
			}
			buf.Write(b)
		}
		buf.WriteString("]")
	}
	buf.WriteString("}")
	// protojson output is deliberately unstable in whitespace; re-indent
	// through encoding/json, which keeps key order within each object.
	var out bytes.Buffer
	if err := json.Indent(&out, buf.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	out.WriteString("\n")
	switch format {
	case "json", "":
		return out.Bytes(), nil
	case "yaml":
		return yaml.JSONToYAML(out.Bytes())
	}
	return nil, fmt.Errorf("unknown format %q: want json or yaml", format)
}
