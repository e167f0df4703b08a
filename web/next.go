package web

import (
	"net/url"
	"strings"
	"unicode"
)

// safeNext keeps a redirect after sign-in on this site: next must be a
// path of this site and nothing a browser could read as another host.
// Browsers drop tabs and line breaks from URLs and read a backslash as a
// slash, so "/\t/evil.example" and "/\evil.example" mean //evil.example to
// them; anything with a control character or a backslash is refused, and
// so is whatever parses with a scheme or a host, or whose path starts with
// two slashes once decoded.
func safeNext(next string) string {
	const home = "/console/pending"
	if !sitePath(next) {
		return home
	}
	return next
}

func sitePath(next string) bool {
	if len(next) > 2048 || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") {
		return false
	}
	if strings.ContainsFunc(next, badInNext) {
		return false
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return false
	}
	// The decoded path must pass too: "/%2F/evil.example" is a site path
	// to Go but becomes "//evil.example" for whoever decodes it once more.
	return !strings.HasPrefix(u.Path, "//") && !strings.ContainsFunc(u.Path, badInNext)
}

func badInNext(r rune) bool {
	return r == '\\' || unicode.IsControl(r) || r == unicode.ReplacementChar ||
		unicode.Is(unicode.Zs, r) && r != ' ' || r == '\u2028' || r == '\u2029'
}
