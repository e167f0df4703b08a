package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vestibule-mdm/vestibule/server"
)

// TestSeedRefusesADatabaseWithEnrollments: a second run on the same
// database, as a run pointed at a real one would be, is refused unless
// -append says it is meant.
func TestSeedRefusesADatabaseWithEnrollments(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := server.InitCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key"), "Seed Test", 2048); err != nil {
		t.Fatal(err)
	}
	o := options{dataDir: dir, out: filepath.Join(dir, "seed.json"), devices: 2, pending: 1, users: 1, keys: 1, workers: 1, export: 1}
	ctx := context.Background()
	if err := run(ctx, o); err != nil {
		t.Fatalf("first run, empty database: %v", err)
	}
	if err := run(ctx, o); err == nil || !strings.Contains(err.Error(), "already holds 2 enrollments") {
		t.Fatalf("second run: %v; want a refusal naming the enrollments", err)
	}
	o.appendTo = true
	if err := run(ctx, o); err != nil {
		t.Fatalf("second run with -append: %v", err)
	}
}
