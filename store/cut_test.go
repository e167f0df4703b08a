package store

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestCutKeepsUTF8: a device-controlled string cut to fit a column never
// splits a character (PostgreSQL refuses invalid UTF-8, which let a
// device hide its own attestation mismatch behind a failing update).
func TestCutKeepsUTF8(t *testing.T) {
	for _, s := range []string{strings.Repeat("é", 300), "a" + strings.Repeat("€", 200), "\xff\xfe" + strings.Repeat("x", 600)} {
		for _, n := range []int{1, 2, 3, 63, 64, 499, 500} {
			got := cut(s, n)
			if len(got) > n || !utf8.ValidString(got) {
				t.Fatalf("cut(%q…, %d) = %d bytes, valid %v", s[:8], n, len(got), utf8.ValidString(got))
			}
		}
	}
}
