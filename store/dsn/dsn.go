// Package dsn reads Vestibule's database addresses: postgres://... for
// PostgreSQL, sqlite:PATH for the embedded database. It imports nothing of
// Vestibule's, so configuration can check a DSN without the store.
package dsn

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Split tells the database kind of a DSN and returns what its driver
// takes: "postgres" with the URL unchanged, or "sqlite" with a file path.
func Split(dsn string) (kind, rest string, err error) {
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return "postgres", dsn, nil
	case strings.HasPrefix(dsn, "sqlite:"):
		p := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "//")
		if p == "" {
			return "", "", errors.New("sqlite: needs a file path, e.g. sqlite:data/vestibule.db")
		}
		return "sqlite", p, nil
	default:
		return "", "", fmt.Errorf("%q: use postgres://... or sqlite:PATH", Redact(dsn))
	}
}

// Redact keeps passwords out of error messages and logs.
func Redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	return u.Redacted()
}
