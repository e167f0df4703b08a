package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCheckpointerKeepsTheWALShort: no connection checkpoints when it
// commits, and under writes that never pause the Store's checkpointer
// still folds the WAL back and restarts it, so it stays near
// walRestartFrames instead of growing with everything written.
func TestCheckpointerKeepsTheWALShort(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v.db")
	s, err := Open(ctx, "sqlite:"+path, Options{CheckpointInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var auto int
	if err := s.db.GetContext(ctx, &auto, `PRAGMA wal_autocheckpoint`); err != nil {
		t.Fatal(err)
	}
	if auto != 0 {
		t.Fatalf("wal_autocheckpoint = %d: a COMMIT would checkpoint on a request's time", auto)
	}
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE ballast (id INTEGER PRIMARY KEY, v BLOB)`); err != nil {
		t.Fatal(err)
	}
	// About 20,000 WAL pages in all, five times walRestartFrames.
	const frameBytes = 4096 + 24
	var longest int64
	for i := range 6000 {
		if _, err := s.db.ExecContext(ctx, `INSERT INTO ballast (v) VALUES (randomblob(3000))`); err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
		// A server's writes come from requests, with gaps between them;
		// a loop that never lets go of the write lock would starve the
		// RESTART round of it.
		if i%8 == 0 {
			time.Sleep(100 * time.Microsecond)
		}
		if fi, err := os.Stat(path + "-wal"); err == nil {
			longest = max(longest, fi.Size()/frameBytes)
		}
	}
	if longest > 2*walRestartFrames {
		t.Errorf("the WAL reached %d pages; restarts should keep it near %d", longest, walRestartFrames)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.Checkpoints()
		if st.WALFrames > 0 && st.Folded == st.WALFrames {
			if st.Restarts == 0 || st.Failed != 0 {
				t.Errorf("%+v: want restarts and no failures", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the WAL was not folded back: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The rounds have stopped: a second Close does not wait on them.
	s.Close()
}

// TestCheckpointerDoesNotHoldWritersLong: a reader that keeps the old WAL
// open does not stall writers behind a RESTART round for longer than
// restartWait; the round gives up and the next tries again.
func TestCheckpointerDoesNotHoldWritersLong(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v.db")
	s, err := Open(ctx, "sqlite:"+path, Options{CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE ballast (id INTEGER PRIMARY KEY, v BLOB)`); err != nil {
		t.Fatal(err)
	}
	for range 1500 {
		if _, err := s.db.ExecContext(ctx, `INSERT INTO ballast (v) VALUES (randomblob(3000))`); err != nil {
			t.Fatal(err)
		}
	}
	// A long read (rows still open) holds a snapshot in the WAL.
	reader, err := s.db.QueryContext(ctx, `SELECT id FROM ballast`)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if !reader.Next() {
		t.Fatal(reader.Err())
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO ballast (v) VALUES (randomblob(3000))`); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	restarted, err := s.ckpt.checkpoint(ctx)
	if err != nil || restarted {
		t.Fatalf("restarted %v, %v; want a round that gives up while the reader holds the WAL", restarted, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the round waited %v", d)
	}
	// The connection it used waits the full busy_timeout again.
	var timeout int
	for range 4 {
		if err := s.db.GetContext(ctx, &timeout, `PRAGMA busy_timeout`); err != nil {
			t.Fatal(err)
		}
		if timeout != int(busyTimeout.Milliseconds()) {
			t.Fatalf("a pooled connection has busy_timeout %d ms", timeout)
		}
	}
	reader.Close()
	if restarted, err := s.ckpt.checkpoint(ctx); err != nil || !restarted {
		t.Fatalf("with the reader gone: restarted %v, %v", restarted, err)
	}
}
