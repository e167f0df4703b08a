package store

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestSQLiteConnectionsKeepStatements: a statement run again on a
// connection is not parsed again; a second query with the same text while
// the first's rows are open gets a statement of its own; scripts of
// several statements still run whole; the kept statements are bounded,
// the newest kept in place of another past the bound; and the connection
// closes cleanly with them.
func TestSQLiteConnectionsKeepStatements(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "v.db"), Options{MaxOpenConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	db := s.DB()
	kept := func() int {
		var n int
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Raw(func(dc any) error { n = len(dc.(*stmtConn).stmts); return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.GetContext(ctx, &n, `SELECT COUNT(*) FROM t`); err != nil || n != 2 {
		t.Fatalf("the script ran partly: %d rows (%v)", n, err)
	}
	before := kept()
	for range 3 {
		if _, err := db.ExecContext(ctx, `INSERT INTO t VALUES (?)`, 3); err != nil {
			t.Fatal(err)
		}
	}
	if got := kept(); got != before+1 {
		t.Fatalf("%d statements kept after one statement ran three times, want %d", got, before+1)
	}

	// The same query twice at once in a transaction, the first still open.
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	const q = `SELECT x FROM t WHERE x < ? ORDER BY x`
	outer, err := tx.QueryContext(ctx, q, 3)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for outer.Next() {
		var x int
		if err := outer.Scan(&x); err != nil {
			t.Fatal(err)
		}
		var inner []int
		if err := tx.SelectContext(ctx, &inner, q, 10); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprint(x, inner))
	}
	if err := outer.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[1 [1 2 3 3 3] 2 [1 2 3 3 3]]" {
		t.Fatalf("nested queries read %v", got)
	}

	// Bounded: many distinct statements, and every one still answers.
	for i := range maxConnStmts + 20 {
		var v int
		if err := db.GetContext(ctx, &v, fmt.Sprintf(`SELECT %d`, i)); err != nil || v != i {
			t.Fatalf("statement %d: %d (%v)", i, v, err)
		}
	}
	if got := kept(); got != maxConnStmts {
		t.Fatalf("%d statements kept, want the bound %d", got, maxConnStmts)
	}
	// Past the bound, what runs now is kept in place of another.
	last := fmt.Sprintf(`SELECT %d`, maxConnStmts+19)
	lc, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = lc.Raw(func(dc any) error {
		if _, ok := dc.(*stmtConn).stmts[last]; !ok {
			t.Error("the statement run last past the bound was not kept")
		}
		return nil
	})
	lc.Close()
	// A long IN list is not kept: its text changes with its length.
	args := make([]any, maxKeptArgs+1)
	for i := range args {
		args[i] = i
	}
	long := `SELECT COUNT(*) FROM t WHERE x IN (?` + strings.Repeat(`, ?`, len(args)-1) + `)`
	if err := db.GetContext(ctx, &n, long, args...); err != nil || n != 5 {
		t.Fatalf("long IN list: %d (%v)", n, err)
	}
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Raw(func(dc any) error {
		if _, ok := dc.(*stmtConn).stmts[long]; ok {
			t.Error("a statement with a long IN list was kept")
		}
		return nil
	})
	c.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("close with statements kept: %v", err)
	}
}
