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

var (
	domain    = []string{"enrollment", "checkin", "scep", "depsync", "push"}
	forbidden = []string{"store", "server", "web", "vaultkey", "cmd", "auth"}
)

func TestDomainPackagesStayInward(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, pkg := range domain {
		if _, err := os.Stat(filepath.Join(root, pkg)); err != nil {
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
					t.Errorf("%s depends on %s: domain packages declare interfaces instead", pkg, dep)
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
