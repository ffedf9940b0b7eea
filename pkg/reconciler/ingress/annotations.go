package ingress

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	netv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/weir-dev/weir/pkg/ir"
)

// AnnotationPrefix starts every ingress-nginx annotation.
const AnnotationPrefix = "nginx.ingress.kubernetes.io/"

// Support is what Weir does with an ingress-nginx annotation.
type Support uint8

const (
	// Honoured: served with ingress-nginx's semantics.
	Honoured Support = iota + 1
	// HonouredWithDifference: served, with a documented difference.
	HonouredWithDifference
	// Ignored: not applied; the Ingress is served without it and warned
	// about.
	Ignored
	// Refused: the Ingress is not served (its last good version keeps
	// serving): the annotation injects raw config, or ignoring it would
	// weaken security.
	Refused
)

func (s Support) String() string {
	switch s {
	case Honoured:
		return "honoured"
	case HonouredWithDifference:
		return "honoured with a difference"
	case Ignored:
		return "ignored"
	case Refused:
		return "refused"
	}
	return "unknown"
}

// annotation is what Weir knows of one ingress-nginx key.
type annotation struct {
	support Support
	// note says what differs, or why it is not applied.
	note string
}

// failsClosed reports whether refusing a's key must stop the Ingress
// being served at all: its last good version lacks the access control
// the key asks for, so serving it would leave open what the operator
// meant to close.
func (a annotation) failsClosed() bool { return a.support == Refused && a.note == notYetSecurity }

const (
	// idleTimeout is how the read and send timeouts differ.
	idleTimeout = "Envoy has one idle timeout for both directions: the larger of proxy-read-timeout and proxy-send-timeout (60 s each by default) bounds the time without a byte either way, and its expiry answers 408 (nginx: 504) or closes a stream already answering"
	// peerAddress is how the source-range annotations differ.
	peerAddress = "the client address is the connection's peer, or, behind proxies that config-weir's xff-num-trusted-hops (weir run --xff-num-trusted-hops) trusts, the X-Forwarded-For entry that many from the right, as Envoy's xff_num_trusted_hops; ingress-nginx's use-forwarded-headers and proxy-real-ip-cidr are not read"
	notYet      = "not implemented by Weir yet"
	// stickyCookie is how cookie affinity differs.
	stickyCookie = "the cookie's value is hashed onto a consistent-hash ring of the endpoints (Envoy's ring hash): a client stays on its endpoint while the endpoints stay, and a change of endpoints moves few clients, as affinity-mode balanced does; persistent's pinning through scaling is not kept"
	// perRouteLimit is how the rate limits differ.
	perRouteLimit  = "each path of the Ingress has its own count per client (ingress-nginx shares one across the Ingress's paths), and so do a canary's header and cookie routes; as in ingress-nginx, each gateway replica counts on its own; Envoy starts the counts afresh whenever any route of the gateway changes (weir-proxy keeps them); each path remembers about 65,536 clients; the client address is taken as for the source ranges"
	notYetSecurity = "not implemented by Weir yet, and serving the Ingress without it would weaken its security"
)

// annotations lists every ingress-nginx key Weir knows, by the name after
// AnnotationPrefix. A key ending in "-snippet" is refused whether listed
// or not.
var annotations = map[string]annotation{
	// Routing and rewrites.
	"rewrite-target":     {Honoured, ""},
	"use-regex":          {HonouredWithDifference, "regular expressions are RE2 (no look-around or back-references) and, as in ingress-nginx, apply to every path of the host"},
	"app-root":           {Honoured, ""},
	"upstream-vhost":     {Honoured, ""},
	"x-forwarded-prefix": {Honoured, ""},
	// Redirects.
	"ssl-redirect":            {Honoured, ""},
	"force-ssl-redirect":      {Honoured, ""},
	"permanent-redirect":      {HonouredWithDifference, "of nginx variables only a trailing $request_uri is understood"},
	"permanent-redirect-code": {Honoured, ""},
	"temporal-redirect":       {HonouredWithDifference, "of nginx variables only a trailing $request_uri is understood"},
	"temporal-redirect-code":  {Honoured, ""},
	"from-to-www-redirect":    {HonouredWithDifference, "the other name is redirected over plain HTTP only; over HTTPS it has no certificate of its own"},
	// CORS.
	"enable-cors":            {HonouredWithDifference, "an allowed origin is echoed back instead of \"*\"; with \"*\" credentials are never allowed, as browsers enforce for nginx's \"*\""},
	"cors-allow-origin":      {Honoured, ""},
	"cors-allow-methods":     {Honoured, ""},
	"cors-allow-headers":     {Honoured, ""},
	"cors-expose-headers":    {Honoured, ""},
	"cors-allow-credentials": {Honoured, ""},
	"cors-max-age":           {Honoured, ""},
	// Canary.
	"canary":                   {Honoured, ""},
	"canary-by-header":         {Honoured, ""},
	"canary-by-header-value":   {Honoured, ""},
	"canary-by-header-pattern": {HonouredWithDifference, "the pattern is RE2 and must match the whole header value"},
	"canary-by-cookie":         {Honoured, ""},
	"canary-weight":            {Honoured, ""},
	"canary-weight-total":      {Honoured, ""},
	// Backends.
	"backend-protocol":                         {HonouredWithDifference, "HTTP, HTTPS, GRPC, GRPCS and H2C are served; AUTO_HTTP and FCGI are refused"},
	"service-upstream":                         {Ignored, "Weir always balances over the Service's ready endpoints"},
	"proxy-ssl-secret":                         {HonouredWithDifference, "the Secret must be in the Ingress's own namespace (Weir reads no other) and of type kubernetes.io/tls, with ca.crt beside the pair as cert-manager writes it"},
	"proxy-ssl-verify":                         {HonouredWithDifference, "without proxy-ssl-name only the chain is verified (nginx checks the name of its upstream block, which no certificate carries)"},
	"proxy-ssl-name":                           {Honoured, ""},
	"proxy-ssl-server-name":                    {HonouredWithDifference, "the SNI sent is proxy-ssl-name; without it none is sent (nginx sends the name of its upstream block)"},
	"proxy-ssl-verify-depth":                   {Ignored, "Envoy verifies chains to its own depth limit"},
	"proxy-ssl-ciphers":                        {Ignored, "Envoy's default TLS versions and ciphers are used"},
	"proxy-ssl-protocols":                      {Ignored, "Envoy's default TLS versions and ciphers are used"},
	"load-balance":                             {HonouredWithDifference, "round_robin is served as written; ewma is served as Envoy's least request (the less busy of two endpoints picked at random)"},
	"upstream-hash-by":                         {HonouredWithDifference, "the key may be made of $remote_addr, $binary_remote_addr, $request_uri, $host, $http_*, $cookie_* and $arg_*; the endpoint is chosen on a consistent-hash ring (Envoy's ring hash), so a change of endpoints moves few keys"},
	"affinity":                                 {HonouredWithDifference, stickyCookie},
	"affinity-mode":                            {HonouredWithDifference, stickyCookie},
	"session-cookie-name":                      {Honoured, ""},
	"session-cookie-path":                      {Honoured, ""},
	"session-cookie-expires":                   {HonouredWithDifference, "sent as Max-Age, not Expires; session-cookie-max-age wins"},
	"session-cookie-max-age":                   {Honoured, ""},
	"session-cookie-samesite":                  {Honoured, ""},
	"session-cookie-secure":                    {HonouredWithDifference, "Secure is set only with session-cookie-secure (ingress-nginx also sets it on any HTTPS request)"},
	"session-cookie-change-on-failure":         {Ignored, "the cookie keeps its value; a request whose endpoint refuses the connection is retried on the next endpoint of the ring, and the cookie's requests return to their endpoint once it answers again"},
	"session-cookie-conditional-samesite-none": {Ignored, "SameSite=None is sent to every browser"},
	"upstream-hash-by-subset":                  {Ignored, "Envoy has no hash subsets; the key chooses one endpoint"},
	"upstream-hash-by-subset-size":             {Ignored, "Envoy has no hash subsets; the key chooses one endpoint"},
	// Proxy behaviour.
	"proxy-connect-timeout":       {Honoured, ""},
	"proxy-read-timeout":          {HonouredWithDifference, idleTimeout},
	"proxy-send-timeout":          {HonouredWithDifference, idleTimeout},
	"proxy-body-size":             {HonouredWithDifference, "the request is held in memory until its body is whole (Envoy's buffer filter; nginx spools large bodies to disk), the limit is at most 4 GiB, and gRPC backends have none, since their streams cannot be held"},
	"proxy-next-upstream":         {HonouredWithDifference, "error and timeout retry a refused or timed-out connection (Envoy's connect-failure) and, with another condition, a request that failed before its answer (reset); invalid_header is reset; http_NNN are Envoy's retriable status codes; each try goes to an endpoint not tried yet where there is one; with a condition beyond error and timeout, POST, LOCK and PATCH are not retried at all unless non_idempotent is listed (nginx still retries them when the connection was refused)"},
	"proxy-next-upstream-tries":   {HonouredWithDifference, "0 (nginx: no limit) is 10 tries, and more than 100 is 100"},
	"proxy-next-upstream-timeout": {Ignored, "Envoy bounds retries by the route's timeouts only"},
	"proxy-buffering":             {Ignored, "weir-proxy and Envoy stream bodies; there is no buffering to switch"},
	"proxy-request-buffering":     {Ignored, "weir-proxy and Envoy stream bodies; there is no buffering to switch"},
	"proxy-buffer-size":           {Ignored, "weir-proxy and Envoy size their buffers themselves"},
	"proxy-http-version":          {Ignored, notYet},
	// Access control: refused until enforced.
	"whitelist-source-range":                {HonouredWithDifference, peerAddress},
	"allowlist-source-range":                {HonouredWithDifference, peerAddress},
	"denylist-source-range":                 {HonouredWithDifference, peerAddress},
	"auth-type":                             {HonouredWithDifference, "basic only: the passwords must be hashed with SHA-1 ({SHA}, htpasswd -s), the only hash Envoy's basic_auth verifies; a Secret with apr1 (htpasswd's default) or bcrypt hashes makes its paths answer 503, and digest is refused"},
	"auth-secret":                           {HonouredWithDifference, "the Secret must be in the Ingress's own namespace (Weir reads no other); Weir watches only the Secrets that auth-secret names"},
	"auth-secret-type":                      {Honoured, ""},
	"auth-realm":                            {Ignored, "the challenge's realm is the request's URL, as Envoy's basic_auth sends it"},
	"auth-url":                              {HonouredWithDifference, "the URL must name a Service of the cluster (http[s]://service.namespace.svc[.cluster.local][:port]/path), with no nginx variables, in the Ingress's namespace or one the gateway's operator allows; the check is Envoy's ext_authz: it carries the request's headers and method, with X-Original-URL, X-Original-Method and X-Auth-Request-Redirect, its Host is the request's, X-Real-IP is the client address, only a 200 admits (nginx: any 2xx; oauth2-proxy's /oauth2/auth answers 202, so with oauth2-proxy run --upstream=static://200 and point auth-url at its /, whose 302 to the sign-in page reaches the browser), any other answer below 500 goes back to the client as it is, and no answer within 10 s, or a 5xx, is answered 500; over https the service's certificate is not verified, as nginx does not by default"},
	"auth-signin":                           {Ignored, "a refused request gets the authorization service's own answer (status, headers and body), not a redirect to auth-signin: have the service answer with the redirect itself"},
	"auth-method":                           {Ignored, "the check uses the request's own method, as Envoy's ext_authz does"},
	"auth-response-headers":                 {Honoured, ""},
	"auth-request-redirect":                 {Honoured, ""},
	"auth-cache-key":                        {Ignored, "checks are never cached; each request asks the service"},
	"auth-cache-duration":                   {Ignored, "checks are never cached; each request asks the service"},
	"auth-keepalive":                        {Ignored, "the gateway keeps its own pool of connections to the service"},
	"auth-keepalive-requests":               {Ignored, "the gateway keeps its own pool of connections to the service"},
	"auth-keepalive-timeout":                {Ignored, "the gateway keeps its own pool of connections to the service"},
	"auth-keepalive-share-vars":             {Ignored, "the gateway keeps its own pool of connections to the service"},
	"auth-proxy-set-headers":                {Ignored, "a ConfigMap of headers for the check is not read"},
	"auth-always-set-cookie":                {Ignored, "Set-Cookie from an admitting answer is not passed to the client"},
	"enable-global-auth":                    {Ignored, "Weir has no global auth-url"},
	"auth-tls-secret":                       {HonouredWithDifference, "the Secret (with ca.crt) must be in the Ingress's own namespace; the host's TLS filter chain checks clients (Envoy's validation_context), as nginx's server does, with the settings of the host's oldest Ingress that has auth-tls-secret; its HTTPS paths answer 421, as nginx does, to a request that came over a connection another filter chain took, such as one opened for another server name (a route match on the connection's filter state); a ca.crl is not applied, so a Secret with one makes the paths answer 503; Weir watches only the Secrets that auth-tls-secret names"},
	"auth-tls-verify-client":                {HonouredWithDifference, "a client whose certificate is missing (on) or does not verify (on, optional) fails the TLS handshake instead of getting nginx's 400; optional_no_ca takes any certificate"},
	"auth-tls-verify-depth":                 {HonouredWithDifference, "as nginx counts it, the intermediate CAs allowed (0 is 1); Envoy's max_verify_depth is one more"},
	"auth-tls-pass-certificate-to-upstream": {Ignored, "the client's certificate is not passed to the backend, and neither are nginx's ssl-client-* headers"},
	"auth-tls-error-page":                   {Ignored, "a client without a valid certificate fails the TLS handshake, which has no page to redirect to"},
	"auth-tls-match-cn":                     {Refused, notYetSecurity},
	"satisfy":                               {Refused, notYetSecurity},
	"enable-modsecurity":                    {Refused, notYetSecurity},
	"enable-owasp-core-rules":               {Refused, notYetSecurity},
	"modsecurity-transaction-id":            {Refused, notYetSecurity},
	// Rate limits, per gateway as in nginx.
	"limit-rps":              {HonouredWithDifference, perRouteLimit},
	"limit-rpm":              {HonouredWithDifference, perRouteLimit},
	"limit-connections":      {Ignored, "Envoy has no limit on one client's concurrent connections; use limit-rps"},
	"limit-burst-multiplier": {Honoured, ""},
	"limit-whitelist":        {Honoured, ""},
	"limit-rate":             {Ignored, notYet},
	"limit-rate-after":       {Ignored, notYet},
	// Mirroring and errors.
	"mirror-target":       {HonouredWithDifference, "only to a host the operator allows (MIRROR_TARGET_HOSTS, weir run's --mirror-target-host), since a target is any address the gateway reaches, its own admin port included; only as scheme://host[:port]$request_uri; the copy's Host is the request's with \"-shadow\" appended"},
	"mirror-host":         {Ignored, "Envoy sends a copy with the request's own host, \"-shadow\" appended"},
	"mirror-request-body": {HonouredWithDifference, "Envoy always copies the body; \"off\" is not honoured"},
	"custom-http-errors":  {HonouredWithDifference, "with default-backend only (Weir has no global default backend): an answer with one of the codes, the backend's or the gateway's own (such as 503 without endpoints, 403 from an allow-list), is replaced by default-backend's answer to a GET for \"/\" with the request's query and ingress-nginx's X-Code, X-Format, X-Original-URI, X-Namespace, X-Ingress-Name, X-Service-Name and X-Service-Port headers (Envoy's custom_response filter, which redirects internally); the default backend's virtual host takes only the gateway's own redirects (each carries a token of its host's, which the backend never sees); unlike nginx the method is always GET, the Host is an internal name, X-Original-URI is the normalized path, and a request whose body had not all arrived when the answer came keeps that answer"},
	"default-backend":     {HonouredWithDifference, "the Service, in the Ingress's namespace, answers (on its first port, over HTTP/1.1) the paths whose Service has no ready endpoints, and the codes of custom-http-errors"},
}

// Finding is what Weir does with one annotation of one Ingress.
type Finding struct {
	// Key is the full annotation name.
	Key     string
	Value   string
	Support Support
	// Message says why, for anything but Honoured.
	Message string
	// FailsClosed: refused for access control Weir cannot enforce, so
	// no version of the Ingress is served, not even its last good one.
	FailsClosed bool
}

// config is an Ingress's annotations, parsed.
type config struct {
	useRegex      bool
	rewriteTarget string
	appRoot       string
	upstreamVhost string
	forwardPrefix string
	// fromToWWW redirects www.host to host, or host to www.host.
	fromToWWW bool
	// sslRedirect is nil when unset: on for hosts with TLS.
	sslRedirect      *bool
	forceSSLRedirect bool
	redirect         *externalRedirect
	cors             *corsConfig
	canary           *canaryConfig
	// protocol is "" for the Service port's own.
	protocol string
	// mirror is mirror-target's scheme and host[:port], or nil.
	mirror *url.URL
	// bodyLimit is proxy-body-size in bytes; 0 is no limit.
	bodyLimit uint32
	// allow and deny are the source ranges; nil is unset.
	allow, deny []netip.Prefix
	// upstreamTLS is the proxy-ssl-* annotations, for HTTPS and GRPCS
	// backends.
	upstreamTLS upstreamTLSConfig
	// lb is how a backend's endpoint is chosen; hashBy and affinity are
	// what a consistent-hash backend hashes (affinity wins).
	lb       ir.LoadBalancer
	hashBy   []ir.HashPolicy
	affinity *ir.HashPolicy
	// auth is auth-url and its companions, or nil.
	auth *authConfig
	// basicAuth is auth-type basic's Secret, or nil.
	basicAuth *basicAuthConfig
	// clientTLS is auth-tls-secret and its companions, or nil.
	clientTLS *clientTLSConfig
	// rateLimit is limit-rps and limit-rpm, or nil.
	rateLimit *ir.RateLimit
	// defaultBackend is default-backend: a Service of the Ingress's
	// namespace that answers when a path's Service has no ready
	// endpoints.
	defaultBackend string
	// customErrors are custom-http-errors' status codes, which
	// defaultBackend answers instead.
	customErrors []int
	// retry is proxy-next-upstream and -tries; nil retries nothing.
	retry *ir.RetryPolicy
	// connectTimeout is 0 for the gateway's default, which is
	// ingress-nginx's 5 s; idle is the read and send timeouts' larger.
	connectTimeout, idle time.Duration
}

// defaultProxyTimeout is ingress-nginx's proxy-read-timeout and
// proxy-send-timeout.
const defaultProxyTimeout = 60 * time.Second

// accessControl are the keys that restrict who reaches the backend: an
// invalid value refuses the Ingress closed, since its last good version
// would not restrict as the operator asked.
var accessControl = map[string]bool{"whitelist-source-range": true, "allowlist-source-range": true, "denylist-source-range": true,
	"auth-url": true, "auth-response-headers": true, "auth-request-redirect": true,
	"auth-type": true, "auth-secret": true, "auth-secret-type": true,
	"auth-tls-secret": true, "auth-tls-verify-client": true, "auth-tls-verify-depth": true}

// defaultBodyLimit is ingress-nginx's proxy-body-size default, 1m.
const defaultBodyLimit = 1 << 20

// externalRedirect answers every request of a path with a redirect to URL.
type externalRedirect struct {
	url  *url.URL
	code int
	// keepURI appends the request's path and query ($request_uri).
	keepURI bool
}

type corsConfig struct {
	origins, methods, headers, expose []string
	credentials                       bool
	maxAge                            int32
}

type canaryConfig struct {
	header, headerValue, headerPattern, cookie string
	weight, weightTotal                        uint32
}

// ingress-nginx's defaults for CORS.
const (
	defaultCORSMethods = "GET, PUT, POST, DELETE, PATCH, OPTIONS"
	defaultCORSHeaders = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization"
	defaultCORSMaxAge  = 1728000
)

// parseAnnotations reads ing's ingress-nginx annotations. findings has one
// entry per ingress-nginx annotation; unservable is set when the Ingress
// must not be served: a refused key or a value that cannot be parsed.
func parseAnnotations(ing *netv1.Ingress) (cfg config, findings []Finding, unservable bool) {
	// notes replace the table's entry for a key whose value Weir
	// serves differently (a redirect code it cannot send).
	notes := map[string]annotation{}
	keys := make([]string, 0, len(ing.Annotations))
	for k := range ing.Annotations {
		if strings.HasPrefix(k, AnnotationPrefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	get := func(name string) (string, bool) {
		v, ok := ing.Annotations[AnnotationPrefix+name]
		return strings.TrimSpace(v), ok
	}
	bad := map[string]string{}
	invalid := func(name, format string, args ...any) {
		if _, ok := bad[name]; !ok {
			bad[name] = fmt.Sprintf(format, args...)
		}
	}
	boolOf := func(name string) (value, set bool) {
		v, ok := get(name)
		if !ok {
			return false, false
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			invalid(name, "%q is not true or false", v)
			return false, false
		}
		return b, true
	}

	cfg.useRegex, _ = boolOf("use-regex")
	cfg.rewriteTarget, _ = get("rewrite-target")
	if v, ok := get("app-root"); ok {
		if !strings.HasPrefix(v, "/") {
			invalid("app-root", "%q is not a path starting with \"/\"", v)
		} else {
			cfg.appRoot = v
		}
	}
	if v, ok := get("upstream-vhost"); ok {
		if !validHost(v) {
			invalid("upstream-vhost", "%q is not a host name", v)
		} else {
			cfg.upstreamVhost = v
		}
	}
	if v, ok := get("x-forwarded-prefix"); ok {
		if strings.ContainsAny(v, "\r\n\x00") {
			invalid("x-forwarded-prefix", "the value holds a control character")
		} else {
			cfg.forwardPrefix = v
		}
	}
	if b, ok := boolOf("ssl-redirect"); ok {
		cfg.sslRedirect = &b
	}
	cfg.forceSSLRedirect, _ = boolOf("force-ssl-redirect")
	cfg.fromToWWW, _ = boolOf("from-to-www-redirect")
	cfg.redirect = parseRedirect(get, invalid, notes)

	if on, _ := boolOf("enable-cors"); on {
		cfg.cors = parseCORS(get, boolOf, invalid)
	}
	if on, _ := boolOf("canary"); on {
		cfg.canary = parseCanary(get, invalid)
	}
	if v, ok := get("backend-protocol"); ok {
		switch p := strings.ToUpper(v); p {
		case "HTTP", "GRPC", "H2C", "HTTPS", "GRPCS":
			cfg.protocol = p
		case "AUTO_HTTP", "FCGI":
			invalid("backend-protocol", "%s backends are not served by Weir; HTTP, HTTPS, GRPC, GRPCS and H2C are", p)
		default:
			invalid("backend-protocol", "%q is not one of HTTP, HTTPS, GRPC, GRPCS, H2C, AUTO_HTTP or FCGI", v)
		}
	}
	ranges := func(name string) []netip.Prefix {
		v, ok := get(name)
		if !ok {
			return nil
		}
		var out []netip.Prefix
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			p, err := netip.ParsePrefix(s)
			if err != nil {
				a, aerr := netip.ParseAddr(s)
				if aerr != nil || a.Zone() != "" {
					invalid(name, "%q is not an IP address or CIDR range", s)
					return nil
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			out = append(out, p.Masked())
		}
		if len(out) == 0 {
			invalid(name, "no range is listed")
		}
		return out
	}
	// ingress-nginx reads the newer name first.
	cfg.allow = ranges("allowlist-source-range")
	if cfg.allow == nil {
		cfg.allow = ranges("whitelist-source-range")
	}
	cfg.deny = ranges("denylist-source-range")
	cfg.rateLimit = parseRateLimit(get, invalid, ranges)
	cfg.upstreamTLS = parseUpstreamTLS(ing.Namespace, get, invalid)
	cfg.auth = parseAuth(get, invalid)
	cfg.basicAuth = parseBasicAuth(ing.Namespace, get, invalid, notes)
	cfg.retry = parseNextUpstream(get, invalid)
	if v, ok := get("default-backend"); ok {
		if errs := validation.IsDNS1035Label(v); len(errs) > 0 {
			invalid("default-backend", "%q is not the name of a Service of the Ingress's namespace: %s", v, strings.Join(errs, "; "))
		} else {
			cfg.defaultBackend = v
		}
	}
	cfg.customErrors = parseCustomErrors(get, invalid)
	if cfg.customErrors != nil && cfg.defaultBackend == "" {
		notes["custom-http-errors"] = annotation{Ignored, "without default-backend: Weir has no global default backend to send the errors to"}
	}
	cfg.clientTLS = parseClientTLS(ing.Namespace, get, invalid, notes)
	parseLoadBalancing(&cfg, get, invalid, notes)
	seconds := func(name string, def time.Duration) time.Duration {
		v, ok := get(name)
		if !ok {
			return def
		}
		n, err := strconv.ParseUint(v, 10, 31)
		if err != nil {
			invalid(name, "%q is not a whole number of seconds", v)
			return def
		}
		return time.Duration(n) * time.Second
	}
	if d := seconds("proxy-connect-timeout", 0); d != 5*time.Second {
		cfg.connectTimeout = d
	}
	cfg.idle = max(seconds("proxy-read-timeout", defaultProxyTimeout), seconds("proxy-send-timeout", defaultProxyTimeout))
	if v, ok := get("mirror-target"); ok && v != "" {
		raw, keep := strings.CutSuffix(v, "$request_uri")
		u, err := url.Parse(raw)
		switch {
		case !keep:
			invalid("mirror-target", "%q must end in $request_uri: Envoy copies a request with its own path", v)
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") || strings.Contains(raw, "$"):
			invalid("mirror-target", "%q is not scheme://host[:port]$request_uri", v)
		case !validHost(u.Host) || u.Port() != "" && !validPort(u.Port()):
			invalid("mirror-target", "%q: %q is not a host name or address with a port from 1 to 65535", v, u.Host)
		case u.Scheme == "https" && net.ParseIP(u.Hostname()) != nil:
			invalid("mirror-target", "%q: an https target needs a host name to verify its certificate against", v)
		default:
			cfg.mirror = &url.URL{Scheme: u.Scheme, Host: u.Host}
		}
	}
	cfg.bodyLimit = defaultBodyLimit
	if v, ok := get("proxy-body-size"); ok {
		n, err := nginxSize(v)
		switch {
		case err != nil:
			invalid("proxy-body-size", "%q is not a size (a number of bytes, or with k, m or g)", v)
		case n > 1<<32-1:
			// Envoy's limit is 32 bits; nginx's is larger.
			cfg.bodyLimit = 1<<32 - 1
		default:
			cfg.bodyLimit = uint32(n)
		}
	}
	if cfg.rewriteTarget != "" && (!strings.HasPrefix(cfg.rewriteTarget, "/") && !strings.HasPrefix(cfg.rewriteTarget, "$") || strings.ContainsAny(cfg.rewriteTarget, "\r\n\x00 ")) {
		invalid("rewrite-target", "%q is not a path: it must start with \"/\" or a capture group", cfg.rewriteTarget)
	}

	for _, k := range keys {
		name := strings.TrimPrefix(k, AnnotationPrefix)
		f := Finding{Key: k, Value: ing.Annotations[k]}
		a, known := annotations[name]
		switch {
		case strings.HasSuffix(name, "-snippet"):
			f.Support, f.Message = Refused, "snippets inject raw proxy configuration, which Weir never applies"
		case !known:
			f.Support, f.Message = Ignored, "not an annotation Weir knows"
		case bad[name] != "":
			f.Support, f.Message, f.FailsClosed = Refused, "invalid value: "+bad[name], accessControl[name]
		case notes[name] != annotation{}:
			f.Support, f.Message = notes[name].support, notes[name].note
		default:
			f.Support, f.Message, f.FailsClosed = a.support, a.note, a.failsClosed()
		}
		if f.Support == Refused {
			unservable = true
		}
		findings = append(findings, f)
	}
	return cfg, findings, unservable
}

// ownSecret reads a Secret annotation's value, "name" or "namespace/name",
// which must name a Secret of the Ingress's own namespace ns: Weir reads no
// other. ok is false, with a reason, when it does not.
func ownSecret(ns, v string) (name, why string, ok bool) {
	secretNS, name, qualified := strings.Cut(v, "/")
	if !qualified {
		secretNS, name = ns, v
	}
	switch {
	case secretNS != ns:
		return "", fmt.Sprintf("%q is in namespace %s; Weir reads only Secrets in the Ingress's own namespace, %s", v, secretNS, ns), false
	case name == "" || strings.ContainsAny(name, "/ \t"):
		return "", fmt.Sprintf("%q is not namespace/name", v), false
	}
	return name, "", true
}

// basicAuthConfig is where auth-type basic's users are: a Secret of the
// Ingress's namespace, as one htpasswd file under the key "auth"
// (auth-file) or one key per user (auth-map).
type basicAuthConfig struct {
	secret  string
	perUser bool
}

// parseBasicAuth reads auth-type, auth-secret and auth-secret-type. As in
// ingress-nginx, the other two mean nothing without auth-type.
func parseBasicAuth(ns string, get func(string) (string, bool), invalid func(string, string, ...any), notes map[string]annotation) *basicAuthConfig {
	kind, ok := get("auth-type")
	if !ok {
		for _, name := range []string{"auth-secret", "auth-secret-type", "auth-realm"} {
			if _, set := get(name); set {
				notes[name] = annotation{Ignored, "has no effect without auth-type, as in ingress-nginx"}
			}
		}
		return nil
	}
	switch kind {
	case "basic":
	case "digest":
		invalid("auth-type", "digest authentication is not served: Envoy has none; use basic, with {SHA} hashes")
		return nil
	default:
		invalid("auth-type", "%q is not basic or digest", kind)
		return nil
	}
	c := &basicAuthConfig{}
	switch t, _ := get("auth-secret-type"); t {
	case "", "auth-file":
	case "auth-map":
		c.perUser = true
	default:
		invalid("auth-secret-type", "%q is not auth-file or auth-map", t)
	}
	v, _ := get("auth-secret")
	if v == "" {
		invalid("auth-type", "basic needs auth-secret, the Secret that holds the users")
		return nil
	}
	name, why, ok := ownSecret(ns, v)
	if !ok {
		invalid("auth-secret", "%s", why)
		return nil
	}
	c.secret = name
	return c
}

// nonIdempotent are the methods nginx does not pass to the next server
// once the request was sent, unless proxy-next-upstream has
// non_idempotent.
var nonIdempotent = []string{"POST", "LOCK", "PATCH"}

// parseNextUpstream reads proxy-next-upstream and -tries, with
// ingress-nginx's defaults ("error timeout", 3 tries). A connection that
// was refused or timed out is retried for every method, as nginx does;
// conditions after the request was sent are Envoy's reset and status
// codes, which Envoy cannot apply to some methods only, so with them the
// non-idempotent methods are not retried at all unless non_idempotent is
// set.
func parseNextUpstream(get func(string) (string, bool), invalid func(string, string, ...any)) *ir.RetryPolicy {
	conditions := "error timeout"
	if v, ok := get("proxy-next-upstream"); ok && v != "" {
		conditions = v
	}
	tries := uint64(3)
	if v, ok := get("proxy-next-upstream-tries"); ok {
		n, err := strconv.ParseUint(v, 10, 32)
		switch {
		case err != nil:
			invalid("proxy-next-upstream-tries", "%q is not a whole number", v)
		case n == 0:
			tries = 10
		default:
			tries = min(n, 100)
		}
	}
	rp := &ir.RetryPolicy{Attempts: uint32(tries - 1), OtherEndpoints: true} //nolint:gosec // 1..100
	var afterSent, nonIdempotentToo bool
	on := map[string]bool{}
	for _, c := range strings.Fields(conditions) {
		switch c {
		case "off":
			return nil
		case "error", "timeout":
			on["connect-failure"] = true
		case "invalid_header":
			on["reset"], afterSent = true, true
		case "non_idempotent":
			nonIdempotentToo = true
		case "http_500", "http_502", "http_503", "http_504", "http_403", "http_404", "http_429":
			code, _ := strconv.ParseUint(strings.TrimPrefix(c, "http_"), 10, 32)
			rp.StatusCodes = append(rp.StatusCodes, uint32(code)) //nolint:gosec // a listed code
			afterSent = true
		default:
			invalid("proxy-next-upstream", "%q is not one of error, timeout, invalid_header, http_500, http_502, http_503, http_504, http_403, http_404, http_429, non_idempotent and off", c)
			return nil
		}
	}
	if afterSent && on["connect-failure"] {
		// nginx's error and timeout also cover a failure while the
		// answer's head was read.
		on["reset"] = true
	}
	for _, c := range []string{"connect-failure", "reset"} {
		if on[c] {
			rp.On = append(rp.On, c)
		}
	}
	if len(rp.On) == 0 && len(rp.StatusCodes) == 0 || rp.Attempts == 0 {
		return nil
	}
	if afterSent && !nonIdempotentToo {
		rp.NotForMethods = nonIdempotent
	}
	return rp
}

// clientTLSConfig is how the host's TLS connections check client
// certificates: against the ca.crt of a Secret of the Ingress's
// namespace.
type clientTLSConfig struct {
	secret string
	// verify is ingress-nginx's auth-tls-verify-client: on, optional or
	// optional_no_ca.
	verify string
	depth  uint32
}

// parseClientTLS reads auth-tls-secret, auth-tls-verify-client and
// auth-tls-verify-depth, with ingress-nginx's defaults (on, 1). Without
// auth-tls-secret, or with verify off, clients are not asked.
func parseClientTLS(ns string, get func(string) (string, bool), invalid func(string, string, ...any), notes map[string]annotation) *clientTLSConfig {
	v, ok := get("auth-tls-secret")
	if !ok {
		for _, name := range []string{"auth-tls-verify-client", "auth-tls-verify-depth"} {
			if _, set := get(name); set {
				notes[name] = annotation{Ignored, "has no effect without auth-tls-secret, as in ingress-nginx"}
			}
		}
		return nil
	}
	name, why, ok := ownSecret(ns, v)
	if !ok {
		invalid("auth-tls-secret", "%s", why)
		return nil
	}
	c := &clientTLSConfig{secret: name, verify: "on", depth: 1}
	if v, ok := get("auth-tls-verify-client"); ok {
		switch v {
		case "on", "optional", "optional_no_ca":
			c.verify = v
		case "off":
			return nil
		default:
			invalid("auth-tls-verify-client", "%q is not on, off, optional or optional_no_ca", v)
			return nil
		}
	}
	if v, ok := get("auth-tls-verify-depth"); ok {
		d, err := strconv.ParseUint(v, 10, 32)
		if err != nil || d > 100 {
			invalid("auth-tls-verify-depth", "%q is not a whole number from 0 to 100", v)
			return nil
		}
		c.depth = uint32(d)
	}
	return c
}

// authConfig is an external authorization service: a Service of the
// cluster, reached at path.
type authConfig struct {
	namespace, service string
	port               int32
	https              bool
	path               string
	responseHeaders    []string
	redirect           string // X-Auth-Request-Redirect's value
}

// authServiceHost is a Service's cluster DNS name: service.namespace.svc,
// with or without the cluster domain.
var authServiceHost = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.svc(\.[a-z0-9.-]+)?$`)

// parseAuth reads auth-url and its companions.
func parseAuth(get func(string) (string, bool), invalid func(string, string, ...any)) *authConfig {
	v, ok := get("auth-url")
	if !ok || v == "" {
		return nil
	}
	if strings.Contains(v, "$") {
		invalid("auth-url", "%q holds an nginx variable; Weir sends every check to one fixed URL", v)
		return nil
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || u.Fragment != "" || u.Host == "" {
		invalid("auth-url", "%q is not an absolute http or https URL", v)
		return nil
	}
	m := authServiceHost.FindStringSubmatch(strings.ToLower(u.Hostname()))
	if m == nil {
		invalid("auth-url", "%q: the host must be a Service of the cluster, service.namespace.svc[.cluster.local]; Weir sends checks to no other address, since a check carries the request's credentials", v)
		return nil
	}
	a := &authConfig{service: m[1], namespace: m[3], https: u.Scheme == "https", port: 80, path: u.EscapedPath()}
	if a.https {
		a.port = 443
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			invalid("auth-url", "%q has an invalid port", v)
			return nil
		}
		a.port = int32(n) //nolint:gosec // 1..65535
	}
	if a.path == "" {
		a.path = "/"
	}
	if u.RawQuery != "" {
		a.path += "?" + u.RawQuery
	}
	if !httpguts.ValidHeaderFieldValue(a.path) || strings.ContainsAny(a.path, " \t") {
		invalid("auth-url", "%q: the path and query hold a space or a control character", v)
		return nil
	}
	if v, ok := get("auth-response-headers"); ok {
		for _, h := range strings.Split(v, ",") {
			if h = strings.TrimSpace(h); h == "" {
				continue
			}
			if !token(h) {
				invalid("auth-response-headers", "%q is not a header name", h)
				return nil
			}
			a.responseHeaders = append(a.responseHeaders, h)
		}
	}
	a.redirect = "%REQ(:path)%"
	if v, ok := get("auth-request-redirect"); ok && v != "" {
		if !httpguts.ValidHeaderFieldValue(v) || strings.ContainsAny(v, "%$") {
			invalid("auth-request-redirect", "%q holds a control character, \"%%\" or an nginx variable", v)
			return nil
		}
		a.redirect = v
	}
	return a
}

// ingress-nginx's sticky cookie name.
const defaultAffinityCookie = "INGRESSCOOKIE"

// parseLoadBalancing reads affinity, upstream-hash-by and load-balance,
// which ingress-nginx's balancer applies in that order of precedence.
func parseLoadBalancing(cfg *config, get func(string) (string, bool), invalid func(string, string, ...any), notes map[string]annotation) {
	if v, ok := get("load-balance"); ok {
		switch v {
		case "round_robin":
		case "ewma":
			cfg.lb = ir.LBLeastRequest
		default:
			notes["load-balance"] = annotation{Ignored, fmt.Sprintf("%q is not round_robin or ewma; round_robin is used", v)}
		}
	}
	if v, ok := get("upstream-hash-by"); ok && v != "" {
		if hp, bad := hashByOf(v); bad != "" {
			notes["upstream-hash-by"] = annotation{Ignored, fmt.Sprintf("%q: %s; the backend is balanced without it", v, bad)}
		} else {
			cfg.hashBy, cfg.lb = hp, ir.LBConsistentHash
		}
	}
	if v, ok := get("affinity"); ok {
		if v != "cookie" {
			invalid("affinity", "%q is not cookie, the only affinity ingress-nginx has", v)
			return
		}
		if m, ok := get("affinity-mode"); ok && m != "balanced" && m != "persistent" {
			invalid("affinity-mode", "%q is not balanced or persistent", m)
		}
		hp := &ir.HashPolicy{Kind: ir.HashCookie, Name: defaultAffinityCookie}
		if n, ok := get("session-cookie-name"); ok && n != "" {
			if !token(n) || strings.ContainsAny(n, "=") {
				invalid("session-cookie-name", "%q is not a cookie name", n)
			}
			hp.Name = n
		}
		if p, ok := get("session-cookie-path"); ok && p != "" {
			if !strings.HasPrefix(p, "/") || !ir.ValidCookiePath(p) {
				invalid("session-cookie-path", "%q is not a cookie path", p)
			}
			hp.CookiePath = p
		}
		ttl := time.Duration(0)
		for _, name := range []string{"session-cookie-expires", "session-cookie-max-age"} {
			if v, ok := get(name); ok && v != "" {
				n, err := strconv.ParseUint(v, 10, 31)
				if err != nil {
					invalid(name, "%q is not a whole number of seconds", v)
					continue
				}
				ttl = time.Duration(n) * time.Second
			}
		}
		hp.CookieTTL = &ttl
		if v, ok := get("session-cookie-samesite"); ok && v != "" {
			switch strings.ToLower(v) {
			case "none", "lax", "strict":
				hp.CookieAttributes = append(hp.CookieAttributes, ir.CookieAttribute{Name: "SameSite", Value: strings.ToUpper(v[:1]) + strings.ToLower(v[1:])})
			default:
				invalid("session-cookie-samesite", "%q is not None, Lax or Strict", v)
			}
		}
		if v, ok := get("session-cookie-secure"); ok {
			secure, err := strconv.ParseBool(v)
			if err != nil {
				invalid("session-cookie-secure", "%q is not true or false", v)
			} else if secure {
				hp.CookieAttributes = append(hp.CookieAttributes, ir.CookieAttribute{Name: "Secure"})
			}
		}
		cfg.affinity, cfg.lb = hp, ir.LBConsistentHash
	}
}

// hashVariable is an nginx variable upstream-hash-by may use.
var hashVariable = regexp.MustCompile(`^\$(remote_addr|binary_remote_addr|request_uri|host|http_host|http_[a-z0-9_]+|cookie_[A-Za-z0-9_]+|arg_[A-Za-z0-9_]+)`)

// hashByOf maps an upstream-hash-by expression, a run of nginx
// variables, onto hash policies; bad says what it cannot map.
func hashByOf(expr string) (out []ir.HashPolicy, bad string) {
	rest := expr
	for rest != "" {
		m := hashVariable.FindStringSubmatch(rest)
		if m == nil {
			return nil, "only a run of $remote_addr, $binary_remote_addr, $request_uri, $host, $http_*, $cookie_* and $arg_* is understood"
		}
		rest = rest[len(m[0]):]
		v := m[1]
		switch {
		case v == "remote_addr" || v == "binary_remote_addr":
			out = append(out, ir.HashPolicy{Kind: ir.HashSourceIP})
		case v == "request_uri":
			out = append(out, ir.HashPolicy{Kind: ir.HashHeader, Name: ":path"})
		case v == "host" || v == "http_host":
			out = append(out, ir.HashPolicy{Kind: ir.HashHeader, Name: ":authority"})
		case strings.HasPrefix(v, "http_"):
			out = append(out, ir.HashPolicy{Kind: ir.HashHeader, Name: strings.ReplaceAll(strings.TrimPrefix(v, "http_"), "_", "-")})
		case strings.HasPrefix(v, "cookie_"):
			out = append(out, ir.HashPolicy{Kind: ir.HashCookie, Name: strings.TrimPrefix(v, "cookie_")})
		default:
			out = append(out, ir.HashPolicy{Kind: ir.HashQueryParameter, Name: strings.TrimPrefix(v, "arg_")})
		}
	}
	return out, ""
}

// upstreamTLSConfig is how the gateway connects to an HTTPS or GRPCS
// backend. ingress-nginx's defaults verify nothing and send no SNI.
type upstreamTLSConfig struct {
	// secret is proxy-ssl-secret's name, in the Ingress's namespace.
	secret string
	verify bool
	// name is what the certificate must carry, and the SNI when sni.
	name string
	sni  bool
}

// parseUpstreamTLS reads the proxy-ssl-* annotations of an Ingress in ns.
func parseUpstreamTLS(ns string, get func(string) (string, bool), invalid func(string, string, ...any)) upstreamTLSConfig {
	var c upstreamTLSConfig
	onOff := func(name string) bool {
		v, ok := get(name)
		switch {
		case !ok:
			return false
		case v == "on":
			return true
		case v != "off":
			invalid(name, "%q is not on or off", v)
		}
		return false
	}
	c.verify, c.sni = onOff("proxy-ssl-verify"), onOff("proxy-ssl-server-name")
	if v, ok := get("proxy-ssl-secret"); ok {
		if name, why, ok := ownSecret(ns, v); ok {
			c.secret = name
		} else {
			invalid("proxy-ssl-secret", "%s", why)
		}
	}
	if v, ok := get("proxy-ssl-name"); ok {
		if !validHost(v) || strings.Contains(v, ":") {
			invalid("proxy-ssl-name", "%q is not a host name", v)
		} else {
			c.name = v
		}
	}
	if c.verify && c.secret == "" {
		invalid("proxy-ssl-verify", "on needs proxy-ssl-secret, whose ca.crt the backend's certificate is verified against")
	}
	return c
}

// ingress-nginx's rate limit defaults: limit-burst-multiplier, and the
// status of a limited request (its limit-req-status-code).
const (
	defaultBurstMultiplier = 5
	limitedStatus          = 503
)

// parseRateLimit reads limit-rps and limit-rpm as nginx's limit_req with
// nodelay: each client gets the rate, and may go over it at once by the
// rate times limit-burst-multiplier. nginx takes burst+1 requests at once,
// so that is the bucket's size.
func parseRateLimit(get func(string) (string, bool), invalid func(string, string, ...any), ranges func(string) []netip.Prefix) *ir.RateLimit {
	mult := uint64(defaultBurstMultiplier)
	if v, ok := get("limit-burst-multiplier"); ok {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			invalid("limit-burst-multiplier", "%q is not a whole number from 1 to 65535", v)
		} else {
			mult = n
		}
	}
	rl := &ir.RateLimit{PerClient: true, Status: limitedStatus}
	for _, l := range []struct {
		name     string
		interval time.Duration
	}{{"limit-rps", time.Second}, {"limit-rpm", time.Minute}} {
		v, ok := get(l.name)
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			invalid(l.name, "%q is not a whole number of requests", v)
			continue
		}
		if n == 0 {
			continue // ingress-nginx: no limit
		}
		burst := n*mult + 1
		if burst > 1<<32-1 {
			invalid(l.name, "%q times limit-burst-multiplier %d is more than 4294967294 requests", v, mult)
			continue
		}
		rl.Buckets = append(rl.Buckets, ir.TokenBucket{Requests: uint32(n), Interval: l.interval, Burst: uint32(burst)})
	}
	rl.Exempt = ranges("limit-whitelist")
	if v4, v6 := ir.LimitedRanges(rl.Exempt); len(v4)+len(v6) > ir.MaxLimitedRanges {
		v, _ := get("limit-whitelist")
		invalid("limit-whitelist", "%q leaves %d ranges of clients to limit; Envoy compares each request with every one, so Weir takes at most %d: list fewer or wider ranges (a single IPv6 address alone leaves 129)", v, len(v4)+len(v6), ir.MaxLimitedRanges)
		return nil
	}
	if len(rl.Buckets) == 0 {
		return nil
	}
	return rl
}

// parseRedirect reads temporal-redirect, which wins as in ingress-nginx,
// or permanent-redirect.
func parseRedirect(get func(string) (string, bool), invalid func(string, string, ...any), notes map[string]annotation) *externalRedirect {
	for _, kind := range []struct {
		name string
		code int
		// valid are the codes ingress-nginx takes; it uses the default
		// for any other.
		valid func(int) bool
	}{
		{"temporal-redirect", 302, func(n int) bool { return n >= 300 && n <= 307 }},
		{"permanent-redirect", 301, func(n int) bool { return n >= 300 && n <= 308 }},
	} {
		v, ok := get(kind.name)
		if !ok || v == "" {
			continue
		}
		r := &externalRedirect{code: kind.code}
		if c, ok := get(kind.name + "-code"); ok {
			n, err := strconv.Atoi(c)
			switch {
			case err != nil || !kind.valid(n):
				notes[kind.name+"-code"] = annotation{HonouredWithDifference, fmt.Sprintf("%q is not a valid code here; the default %d is used, as in ingress-nginx", c, kind.code)}
			case !slices.Contains([]int{301, 302, 303, 307, 308}, n):
				notes[kind.name+"-code"] = annotation{HonouredWithDifference, fmt.Sprintf("Envoy cannot send %d; the default %d is used", n, kind.code)}
			default:
				r.code = n
			}
		}
		raw, keep := strings.CutSuffix(v, "$request_uri")
		if strings.Contains(raw, "$") {
			invalid(kind.name, "%q holds an nginx variable other than a trailing $request_uri", v)
			return nil
		}
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Fragment != "" {
			invalid(kind.name, "%q is not an absolute http or https URL", v)
			return nil
		}
		if keep && (u.Path != "" && u.Path != "/" || u.RawQuery != "") {
			invalid(kind.name, "%q: $request_uri must follow the host directly", v)
			return nil
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				invalid(kind.name, "%q has an invalid port", v)
				return nil
			}
		}
		r.url, r.keepURI = u, keep
		return r
	}
	return nil
}

func parseCORS(get func(string) (string, bool), boolOf func(string) (bool, bool), invalid func(string, string, ...any)) *corsConfig {
	list := func(name, def string) []string {
		v, ok := get(name)
		if !ok || v == "" {
			v = def
		}
		var out []string
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	c := &corsConfig{
		origins: list("cors-allow-origin", "*"),
		methods: list("cors-allow-methods", defaultCORSMethods),
		headers: list("cors-allow-headers", defaultCORSHeaders),
		expose:  list("cors-expose-headers", ""),
		maxAge:  defaultCORSMaxAge,
	}
	for _, o := range c.origins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			invalid("cors-allow-origin", "%q is not an origin (scheme://host[:port])", o)
			return nil
		}
		// As ingress-nginx: "*" only as the leftmost label of a name
		// with two more, so no origin pattern matches every site.
		host, wildcard := strings.CutPrefix(u.Hostname(), "*.")
		if strings.Contains(host, "*") || wildcard && !strings.Contains(host, ".") || !validHost(host) {
			invalid("cors-allow-origin", "%q is not an origin: a host may start with \"*.\" and have no other \"*\", and a wildcard needs two labels after it", o)
			return nil
		}
	}
	for _, m := range c.methods {
		if !token(m) {
			invalid("cors-allow-methods", "%q is not a method", m)
			return nil
		}
	}
	for _, h := range append(slices.Clone(c.headers), c.expose...) {
		if h != "*" && !token(h) {
			invalid("cors-allow-headers", "%q is not a header name", h)
			return nil
		}
	}
	c.credentials = true
	if b, ok := boolOf("cors-allow-credentials"); ok {
		c.credentials = b
	}
	if v, ok := get("cors-max-age"); ok {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 0 {
			invalid("cors-max-age", "%q is not a number of seconds", v)
			return nil
		}
		c.maxAge = int32(n)
	}
	return c
}

func parseCanary(get func(string) (string, bool), invalid func(string, string, ...any)) *canaryConfig {
	c := &canaryConfig{weightTotal: 100}
	c.header, _ = get("canary-by-header")
	c.headerValue, _ = get("canary-by-header-value")
	c.headerPattern, _ = get("canary-by-header-pattern")
	c.cookie, _ = get("canary-by-cookie")
	if c.header != "" && !token(c.header) {
		invalid("canary-by-header", "%q is not a header name", c.header)
	}
	if c.cookie != "" && !token(c.cookie) {
		invalid("canary-by-cookie", "%q is not a cookie name", c.cookie)
	}
	if strings.ContainsAny(c.headerValue, "\r\n\x00") {
		invalid("canary-by-header-value", "the value holds a control character")
	}
	if c.headerPattern != "" {
		if _, err := regexp.Compile(c.headerPattern); err != nil {
			invalid("canary-by-header-pattern", "%q is not an RE2 regular expression: %v", c.headerPattern, err)
		}
	}
	if v, ok := get("canary-weight-total"); ok {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			invalid("canary-weight-total", "%q is not a positive integer", v)
		} else {
			c.weightTotal = uint32(n)
		}
	}
	if v, ok := get("canary-weight"); ok {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || uint32(n) > c.weightTotal {
			invalid("canary-weight", "%q is not an integer from 0 to %d (canary-weight-total)", v, c.weightTotal)
		} else {
			c.weight = uint32(n)
		}
	}
	return c
}

// nginxSize parses an nginx size: bytes, or a number with k, m or g
// (either case) for KiB, MiB and GiB. 0 means no limit.
func nginxSize(v string) (uint64, error) {
	mult := uint64(1)
	switch {
	case strings.HasSuffix(v, "k"), strings.HasSuffix(v, "K"):
		mult = 1 << 10
	case strings.HasSuffix(v, "m"), strings.HasSuffix(v, "M"):
		mult = 1 << 20
	case strings.HasSuffix(v, "g"), strings.HasSuffix(v, "G"):
		mult = 1 << 30
	}
	if mult > 1 {
		v = v[:len(v)-1]
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, err
	}
	if n > (1<<64-1)/mult {
		return 0, fmt.Errorf("too large")
	}
	return n * mult, nil
}

// token reports whether s is an HTTP token (RFC 9110), as header names
// and methods are.
func token(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

var hostRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]{1,5})?$`)

func validHost(s string) bool { return len(s) <= 253 && hostRE.MatchString(s) }

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// parseCustomErrors reads custom-http-errors: status codes from 200 to
// 599, separated by commas, as ingress-nginx's validation admits them.
func parseCustomErrors(get func(string) (string, bool), invalid func(string, string, ...any)) []int {
	v, ok := get("custom-http-errors")
	if !ok {
		return nil
	}
	var codes []int
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		n, err := strconv.Atoi(s)
		if err != nil || n < 200 || n > 599 || len(s) != 3 {
			invalid("custom-http-errors", "%q is not a status code from 200 to 599", s)
			return nil
		}
		if !slices.Contains(codes, n) {
			codes = append(codes, n)
		}
	}
	return codes
}
