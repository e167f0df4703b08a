// Package archtest keeps the dependency rule of DESIGN.md true: the domain
// packages never reach a transport, a store, the composition root or a key
// backend, directly or through another package.
package archtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/vestibule-mdm/vestibule"

// rules says, for each package (and its subpackages), what it must never
// reach, directly or through another package.
var rules = map[string][]string{
	// Domain packages declare interfaces instead.
	"enrollment": {"store", "server", "web", "vaultkey", "cmd", "auth", "mdm", "config"},
	"checkin":    {"store", "server", "web", "vaultkey", "cmd", "auth"},
	"scep":       {"store", "server", "web", "vaultkey", "cmd", "auth"},
	"depsync":    {"store", "server", "web", "vaultkey", "cmd", "auth"},
	"push":       {"store", "server", "web", "vaultkey", "cmd", "auth"},
	// Device trust (and its SSF transmitter under it) decides nothing the
	// enrollment does not: it publishes what the store recorded.
	"trust": {"store", "server", "web", "vaultkey", "cmd", "auth", "config", "checkin", "scep"},
	// ACME issues; the enrollment decides.
	"acme": {"store", "server", "web", "vaultkey", "cmd", "auth", "config", "checkin", "scep", "trust"},
	// Transports and auth reach storage only through the interfaces
	// they declare; the composition root hands them the store.
	"web":  {"store", "server", "cmd", "vaultkey"},
	"auth": {"store", "server", "web", "cmd"},
	// Attestation is pure verification.
	"attest": {"store", "server", "web", "vaultkey", "cmd", "auth", "config", "checkin", "enrollment", "scep"},
	// The store persists; it knows no transport and no configuration.
	"store": {"config", "checkin", "server", "web", "cmd"},
}

func TestDomainPackagesStayInward(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for pkg, forbidden := range rules {
		if _, err := os.Stat(filepath.Join(root, pkg)); err != nil {
			t.Errorf("rule for %s, which does not exist", pkg)
			continue
		}
		checked++
		cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "./"+pkg+"/...")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				if dep == module+"/"+f || strings.HasPrefix(dep, module+"/"+f+"/") {
					t.Errorf("%s depends on %s: it declares an interface instead", pkg, dep)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no domain package found: is the test running from its own directory?")
	}
}

// TestTheCheckSeesDependencies guards the test above against passing
// because go list printed nothing useful.
func TestTheCheckSeesDependencies(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "./cmd/vestibule")
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), module+"/store\n") {
		t.Fatalf("cmd/vestibule should depend on store; go list said:\n%s", out)
	}
}
