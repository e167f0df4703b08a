// Package testenv decides what a test does when a service it needs
// (PostgreSQL, Vault, a browser, a SCEP client) is missing: skip with a
// message on a laptop, fail where VESTIBULE_TEST_REQUIRE names the service,
// as CI does.
package testenv

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// Required reports whether VESTIBULE_TEST_REQUIRE (a comma-separated list)
// names service.
func Required(service string) bool {
	for s := range strings.SplitSeq(os.Getenv("VESTIBULE_TEST_REQUIRE"), ",") {
		if strings.TrimSpace(s) == service || strings.TrimSpace(s) == "all" {
			return true
		}
	}
	return false
}

// Missing ends the test because service is not available: a failure when it
// is required, a skip saying how to provide it otherwise.
func Missing(t testing.TB, service, how string) {
	t.Helper()
	if Required(service) {
		t.Fatalf("%s is required (VESTIBULE_TEST_REQUIRE=%s) but missing: %s", service, os.Getenv("VESTIBULE_TEST_REQUIRE"), how)
	}
	t.Skipf("skipping: %s is not available (%s)", service, how)
}

// Known lists the services VESTIBULE_TEST_REQUIRE may name.
var Known = []string{"postgres", "vault", "browser", "scepclient"}

// IsKnown reports whether name is a service the suite knows.
func IsKnown(name string) bool { return slices.Contains(Known, name) || name == "all" }
