package store

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCheckpointerKeepsTheWALShort: no connection checkpoints when it
// commits, and under steady writes, with the short gaps requests leave,
// the Store's checkpointer still folds the WAL back and restarts it, so
// it stays near walRestartFrames instead of growing with everything
// written.
func TestCheckpointerKeepsTheWALShort(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v.db")
	s := scratchSQLite(t, path, Options{CheckpointInterval: 20 * time.Millisecond}, `CREATE TABLE ballast (id INTEGER PRIMARY KEY, v BLOB)`)

	var auto int
	if err := s.db.GetContext(ctx, &auto, `PRAGMA wal_autocheckpoint`); err != nil {
		t.Fatal(err)
	}
	if auto != 0 {
		t.Fatalf("wal_autocheckpoint = %d: a COMMIT would checkpoint on a request's time", auto)
	}
	// About 18,000 WAL pages in all, four times walRestartFrames.
	const frameBytes = 4096 + 24
	var longest int64
	for i := range 6000 {
		if _, err := s.db.ExecContext(ctx, `INSERT INTO ballast (v) VALUES (randomblob(3000))`); err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
		// A server's writes come from requests, with gaps between them;
		// a loop that never lets go of the write lock would starve the
		// TRUNCATE round of it (SQLite's busy wait is not fair).
		if i%8 == 0 {
			time.Sleep(time.Millisecond)
		}
		if fi, err := os.Stat(path + "-wal"); err == nil {
			longest = max(longest, fi.Size()/frameBytes)
		}
	}
	// Without restarts it reaches about 18,000 pages, everything written.
	if longest > 3*walRestartFrames {
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

// openWithWAL opens a SQLite store and writes about 3 WAL pages per row.
func openWithWAL(t *testing.T, path string, interval time.Duration, rows int) *Store {
	t.Helper()
	s, err := Open(context.Background(), "sqlite:"+path, Options{CheckpointInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	fillWAL(t, s, rows)
	return s
}

// holdReader starts a long read: its rows stay open, and with them its
// snapshot of the WAL, until the test closes them or ends.
func holdReader(t *testing.T, s *Store) *sql.Rows {
	t.Helper()
	reader, err := s.db.QueryContext(context.Background(), `SELECT id FROM ballast`)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Close() })
	if !reader.Next() {
		t.Fatal(reader.Err())
	}
	return reader
}

// fillWAL writes about 3 WAL pages per row.
func fillWAL(t *testing.T, s *Store, rows int) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS ballast (id INTEGER PRIMARY KEY, v BLOB)`); err != nil {
		t.Fatal(err)
	}
	for range rows {
		if _, err := s.db.ExecContext(ctx, `INSERT INTO ballast (v) VALUES (randomblob(3000))`); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCheckpointerLeavesALongReaderAlone: while a reader holds an old
// snapshot the rounds fold what they may and do not keep trying to start
// the WAL over, so a writer beside them waits for a round at most once.
func TestCheckpointerLeavesALongReaderAlone(t *testing.T) {
	ctx := context.Background()
	s := openWithWAL(t, filepath.Join(t.TempDir(), "v.db"), 10*time.Millisecond, 2000)
	holdReader(t, s)
	before := s.Checkpoints()
	var slow int
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		start := time.Now()
		if _, err := s.db.ExecContext(ctx, `INSERT INTO ballast (v) VALUES (randomblob(100))`); err != nil {
			t.Fatal(err)
		}
		// A restart that waits for the reader holds a writer for
		// restartWait; a write on a loaded machine takes a few ms.
		if time.Since(start) >= restartWait {
			slow++
		}
		time.Sleep(2 * time.Millisecond)
	}
	after := s.Checkpoints()
	if after.Rounds-before.Rounds < 10 {
		t.Fatalf("only %d rounds in 1.5 s", after.Rounds-before.Rounds)
	}
	// A round may fold the WAL whole before the first write, try a
	// restart and give up once; then the writes keep the WAL ahead of
	// the reader's snapshot, and the backoff keeps the rounds from trying
	// again (TestCheckpointerBacksOff).
	if after.GaveUp-before.GaveUp > 1 || after.Restarts != before.Restarts || slow > 1 {
		t.Errorf("%d writes held by a round; %+v -> %+v", slow, before, after)
	}
}

// TestCheckpointerBacksOff: a restart that runs out of time is not tried
// again at the next round, and one that succeeds empties the WAL.
func TestCheckpointerBacksOff(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v.db")
	s := openWithWAL(t, path, time.Hour, 1500)
	// A reader of the newest snapshot lets a round fold everything but
	// keeps the WAL in use.
	reader := holdReader(t, s)
	now := time.Now()
	start := time.Now()
	restarted, gaveUp, err := s.ckpt.checkpoint(ctx, now)
	if err != nil || restarted || !gaveUp {
		t.Fatalf("restarted %v, gave up %v, %v; want a restart that gives up while the reader holds the WAL", restarted, gaveUp, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the round waited %v", d)
	}
	if restarted, gaveUp, err := s.ckpt.checkpoint(ctx, now.Add(restartBackoff/2)); err != nil || restarted || gaveUp {
		t.Fatalf("within the backoff: restarted %v, gave up %v, %v; want no restart tried", restarted, gaveUp, err)
	}
	reader.Close()
	if restarted, _, err := s.ckpt.checkpoint(ctx, now.Add(restartBackoff)); err != nil || !restarted {
		t.Fatalf("after the backoff, with the reader gone: restarted %v, %v", restarted, err)
	}
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() != 0 {
		t.Fatalf("WAL after a restart: %v %v; want it emptied", fi.Size(), err)
	}
	// A WAL already started over is not restarted again at every round.
	if restarted, _, err := s.ckpt.checkpoint(ctx, now.Add(2*restartBackoff)); err != nil || restarted {
		t.Fatalf("an empty WAL: restarted %v, %v", restarted, err)
	}
}
