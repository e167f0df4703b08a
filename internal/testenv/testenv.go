// Package testenv decides what a test does when a service it needs
// (PostgreSQL, Vault, a browser, a SCEP client, openssl, nginx) is missing: skip
// with a message on a laptop, fail where VESTIBULE_TEST_REQUIRE names the
// service, as CI does.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// RequireEnv lists the services whose absence is a failure.
const RequireEnv = "VESTIBULE_TEST_REQUIRE"

// Known lists the services RequireEnv may name ("all" names every one).
var Known = []string{"postgres", "vault", "browser", "scepclient", "openssl", "nginx", "systemd", "podman"}

// Unknown returns the names in RequireEnv that are not services the suite
// knows: a typo there would otherwise turn a required service into a
// silent skip.
func Unknown() []string {
	var bad []string
	for s := range strings.SplitSeq(os.Getenv(RequireEnv), ",") {
		if s = strings.TrimSpace(s); s != "" && s != "all" && !slices.Contains(Known, s) {
			bad = append(bad, s)
		}
	}
	return bad
}

// Required reports whether RequireEnv (a comma-separated list) names
// service.
func Required(service string) bool {
	for s := range strings.SplitSeq(os.Getenv(RequireEnv), ",") {
		if strings.TrimSpace(s) == service || strings.TrimSpace(s) == "all" {
			return true
		}
	}
	return false
}

// Missing ends the test because service is not available: a failure when it
// is required (or when RequireEnv names a service that does not exist), a
// skip saying how to provide it otherwise.
func Missing(t testing.TB, service, how string) {
	t.Helper()
	if !slices.Contains(Known, service) {
		t.Fatalf("testenv: %q is not a known service; add it to testenv.Known", service)
	}
	if bad := Unknown(); len(bad) > 0 {
		t.Fatalf("%s=%s names unknown services %v; known: %s", RequireEnv, os.Getenv(RequireEnv), bad, strings.Join(Known, ", "))
	}
	if Required(service) {
		t.Fatalf("%s is required (%s=%s) but missing: %s", service, RequireEnv, os.Getenv(RequireEnv), how)
	}
	t.Skipf("skipping: %s is not available (%s)", service, how)
}

// LookPath finds a command a test drives, or ends the test as Missing does.
func LookPath(t testing.TB, service, command, how string) string {
	t.Helper()
	p, err := exec.LookPath(command)
	if err != nil {
		Missing(t, service, fmt.Sprintf("%s: %s", how, err))
	}
	return p
}
