package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/internal/testenv"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

// TestSoak is the short soak CI runs: two replicas on one PostgreSQL
// database, 100 devices through the whole ceremony, a replica killed with
// SIGKILL every second or two, a command to the whole fleet at the end,
// and every invariant checked.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak takes a minute; -short skips it")
	}
	pg := os.Getenv(storetest.PostgresEnv)
	if pg == "" {
		testenv.Missing(t, "postgres", "set "+storetest.PostgresEnv+"=postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	}
	bin := filepath.Join(t.TempDir(), "vestibule")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "github.com/vestibule-mdm/vestibule/cmd/vestibule")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	var report bytes.Buffer
	err := run(options{bin: bin, pg: pg, replicas: 2, devices: 100, workers: 8, duration: 10 * time.Second,
		killMin: time.Second, killMax: 2 * time.Second, maxDevice: 3 * time.Minute, out: &report, burst: true, pushRate: 200})
	t.Log("\n" + report.String())
	if err != nil {
		t.Fatal(err)
	}
}
