package ingress

import (
	"encoding/base64"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"

	"github.com/weir-dev/weir/pkg/ir"
)

// basicAuthField is the annotation a basic auth problem is reported on.
const basicAuthField = "metadata.annotations[" + AnnotationPrefix + "auth-secret]"

// withBasicAuth puts e's users in front of r. When they cannot be served,
// r answers 503 rather than serve unchecked, and withBasicAuth reports
// false.
func (hb *hostBuilder) withBasicAuth(e *entry, r *ir.Route) bool {
	c := e.cfg.basicAuth
	if c == nil {
		return true
	}
	users, reason, problem := hb.basicAuthUsers(e.ing.Namespace, c)
	if problem != "" {
		hb.problem(e, basicAuthField, reason, "%s; the path answers 503 until it is fixed", problem)
		r.Backends = []ir.WeightedBackend{{BackendName: e.ref.String() + "/auth-secret", Weight: 100, Unresolved: true}}
		r.Mirrors, r.HashPolicy = nil, nil
		return false
	}
	if len(users) == 0 {
		// As nginx: no one is admitted.
		hb.problem(e, basicAuthField, "AuthSecretEmpty", "Secret %s/%s of auth-secret has no users; every request is answered 401", e.ing.Namespace, c.secret)
	}
	r.Filters = append(r.Filters, &ir.BasicAuth{Users: users})
	return true
}

// basicAuthUsers reads c's Secret. Neither its lines nor its hashes go in
// a problem: problems become Events, which more people read than the
// Secret's readers.
// The reason is AuthSecretNotFound for a Secret that does not exist.
func (hb *hostBuilder) basicAuthUsers(ns string, c *basicAuthConfig) (users []ir.HtpasswdUser, reason, problem string) {
	name := ns + "/" + c.secret
	s, missing, problem := hb.annotationSecret(ns, c.secret, "auth-secret")
	switch {
	case missing:
		return nil, "AuthSecretNotFound", problem
	case problem != "":
		return nil, "AuthSecretNotServed", problem
	}
	users, problem = htpasswdUsers(s, c.perUser)
	if problem != "" {
		return nil, "AuthSecretNotServed", fmt.Sprintf("Secret %s of auth-secret %s", name, problem)
	}
	return users, "", ""
}

// htpasswdUsers reads a Secret's users as ingress-nginx does: from the
// htpasswd file under the key "auth" (the first line of a user wins), or
// with perUser (auth-map) from one key per user whose value is the hash.
// Only {SHA} hashes can be served; any other makes the whole list
// unservable, so that no user is locked out without a word.
func htpasswdUsers(s *corev1.Secret, perUser bool) ([]ir.HtpasswdUser, string) {
	var users []ir.HtpasswdUser
	if perUser {
		for _, name := range slices.Sorted(maps.Keys(s.Data)) {
			users = append(users, ir.HtpasswdUser{Name: name, Hash: strings.TrimSpace(string(s.Data[name]))})
		}
	} else {
		file, ok := s.Data["auth"]
		if !ok {
			return nil, "has no key \"auth\", the htpasswd file auth-secret-type auth-file reads"
		}
		seen := map[string]bool{}
		for i, line := range strings.Split(string(file), "\n") {
			line = strings.TrimSuffix(line, "\r")
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			// As nginx: user:hash[:comment], and a line without a
			// colon is no user.
			name, hash, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			hash, _, _ = strings.Cut(hash, ":")
			if name == "" {
				return nil, fmt.Sprintf("has a line (%d) without a user name", i+1)
			}
			if seen[name] {
				continue
			}
			seen[name] = true
			users = append(users, ir.HtpasswdUser{Name: name, Hash: hash})
		}
	}
	unservable := map[string]int{}
	for _, u := range users {
		if !utf8.ValidString(u.Name) {
			return nil, "has a user name that is not UTF-8"
		}
		if kind := hashKind(u.Hash); kind != "" {
			unservable[kind]++
		}
	}
	if len(unservable) > 0 {
		var kinds []string
		n := 0
		for _, kind := range slices.Sorted(maps.Keys(unservable)) {
			kinds = append(kinds, kind)
			n += unservable[kind]
		}
		return nil, fmt.Sprintf("has %d of %d users whose passwords are hashed with %s; Envoy's basic_auth verifies only SHA-1 ({SHA}) hashes: write them with htpasswd -s (for example htpasswd -bs auth USER PASSWORD)",
			n, len(users), strings.Join(kinds, " and "))
	}
	return users, ""
}

// hashKind names the scheme of an htpasswd hash Weir cannot serve, or is
// "" for a {SHA} hash.
func hashKind(hash string) string {
	switch {
	case strings.HasPrefix(hash, "{SHA}"):
		raw, err := base64.StdEncoding.DecodeString(hash[len("{SHA}"):])
		if err != nil || len(raw) != 20 {
			return "a malformed {SHA}"
		}
		return ""
	case strings.HasPrefix(hash, "$apr1$"):
		return "apr1-MD5 (htpasswd's default)"
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		return "bcrypt"
	case strings.HasPrefix(hash, "$5$"), strings.HasPrefix(hash, "$6$"):
		return "SHA-crypt"
	case strings.HasPrefix(hash, "$1$"):
		return "MD5-crypt"
	case strings.HasPrefix(hash, "{SSHA}"):
		return "salted SHA"
	case strings.HasPrefix(hash, "{PLAIN}"):
		return "nothing (plain text)"
	}
	return "crypt(3) or an unknown scheme"
}

// annotationSecret reads the Secret name of namespace ns that annotation
// names, from the Secrets Weir watches for annotations. missing is set
// when it does not exist; problem says why it cannot be read.
func (hb *hostBuilder) annotationSecret(ns, name, annotation string) (s *corev1.Secret, missing bool, problem string) {
	var err error = apierrs.NewNotFound(corev1.Resource("secrets"), name)
	if hb.listers.AuthSecrets != nil {
		s, err = hb.listers.AuthSecrets.Secrets(ns).Get(name)
	}
	switch {
	case apierrs.IsNotFound(err):
		return nil, true, fmt.Sprintf("Secret %s/%s of %s does not exist", ns, name, annotation)
	case err != nil:
		return nil, false, fmt.Sprintf("Secret %s/%s of %s: %v", ns, name, annotation, err)
	}
	return s, false, ""
}
