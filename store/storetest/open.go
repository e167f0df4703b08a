// Package storetest opens real stores for tests, on SQLite in a temporary
// directory and on PostgreSQL in a schema of its own, and holds the
// conformance suite every backend passes.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver for schema set-up

	"github.com/vestibule-mdm/vestibule/internal/testenv"
	"github.com/vestibule-mdm/vestibule/store"
)

// PostgresEnv names the variable holding the PostgreSQL DSN tests use.
const PostgresEnv = "VESTIBULE_TEST_POSTGRES"

// Dialects lists the backends a test should run on.
var Dialects = []string{store.SQLite, store.Postgres}

// DSN returns a DSN for a fresh, empty database of the given dialect that is
// removed when the test ends.
func DSN(t testing.TB, dialect string) string {
	t.Helper()
	switch dialect {
	case store.SQLite:
		return "sqlite:" + filepath.Join(t.TempDir(), "vestibule.db")
	case store.Postgres:
		return postgresSchema(t)
	}
	t.Fatalf("unknown dialect %q", dialect)
	return ""
}

// Open returns a migrated store of the given dialect, closed at cleanup.
func Open(t testing.TB, dialect string) *store.Store {
	t.Helper()
	return OpenDSN(t, DSN(t, dialect), store.Options{})
}

// OpenDSN opens and migrates a store at dsn.
func OpenDSN(t testing.TB, dsn string, opts store.Options) *store.Store {
	t.Helper()
	ctx := context.Background()
	s, err := store.Open(ctx, dsn, opts)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return s
}

// postgresSchema creates a schema of its own for one test and returns a DSN
// whose search_path points at it.
func postgresSchema(t testing.TB) string {
	t.Helper()
	base := os.Getenv(PostgresEnv)
	if base == "" {
		testenv.Missing(t, "postgres", "set "+PostgresEnv+"=postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		testenv.Missing(t, "postgres", fmt.Sprintf("%s is set but the server does not answer: %v", PostgresEnv, err))
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "vtest_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", base)
		if err != nil {
			t.Errorf("drop schema: %v", err)
			return
		}
		defer db.Close()
		if _, err := db.Exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", PostgresEnv, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// ForEachDialect runs fn as a subtest on every backend.
func ForEachDialect(t *testing.T, fn func(t *testing.T, dialect string)) {
	for _, d := range Dialects {
		t.Run(d, func(t *testing.T) { fn(t, d) })
	}
}
