package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// TestSQLiteWritersQueue: on SQLite every write goes through one
// connection. Many writers at once all get in, one after the other; a
// writer kept waiting past writeWait gets an error instead of hanging;
// and reads and the readiness ping go on while a write is in progress.
func TestSQLiteWritersQueue(t *testing.T) {
	ctx := context.Background()
	s := scratchSQLite(t, filepath.Join(t.TempDir(), "v.db"), Options{}, `CREATE TABLE counter (n INTEGER NOT NULL)`)
	if _, err := s.exec(ctx, `INSERT INTO counter (n) VALUES (0)`); err != nil {
		t.Fatal(err)
	}

	const writers = 32
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				_, err := s.exec(ctx, `UPDATE counter SET n = n + 1`)
				errs <- err
				return
			}
			errs <- s.inTx(ctx, func(tx txn) error {
				var n int
				if err := tx.GetContext(ctx, &n, `SELECT n FROM counter`); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, `UPDATE counter SET n = ?`, n+1)
				return err
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a writer failed: %v", err)
		}
	}
	var n int
	if err := s.db.GetContext(ctx, &n, `SELECT n FROM counter`); err != nil || n != writers {
		t.Fatalf("counter = %d, %v; want %d: a read-then-write transaction lost an update", n, err, writers)
	}

	// A write held open: readers go on, a second writer gives up after
	// writeWait with an error that says why.
	s.writeWait = 50 * time.Millisecond
	holding, release := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	go func() {
		done <- s.inTx(ctx, func(tx txn) error {
			close(holding)
			<-release
			_, err := tx.ExecContext(ctx, `UPDATE counter SET n = n + 1`)
			return err
		})
	}()
	<-holding
	if err := s.db.GetContext(ctx, &n, `SELECT n FROM counter`); err != nil {
		t.Fatalf("a read while a write is open: %v", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := s.Ping(pingCtx); err != nil {
		t.Fatalf("readiness waited behind the open write: %v", err)
	}
	_, err := s.exec(ctx, `UPDATE counter SET n = 0`)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second writer past writeWait: %v, want a deadline error", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := s.db.GetContext(ctx, &n, `SELECT n FROM counter`); err != nil || n != writers+1 {
		t.Fatalf("counter = %d, %v; want %d: the refused writer changed something", n, err, writers+1)
	}
}

// TestSQLiteWriterSurvivesAPanic: a transaction whose fn panics is rolled
// back as the panic leaves, so the one writing connection is free for the
// next write.
func TestSQLiteWriterSurvivesAPanic(t *testing.T) {
	ctx := context.Background()
	s := scratchSQLite(t, filepath.Join(t.TempDir(), "v.db"), Options{}, `CREATE TABLE t (n INTEGER NOT NULL)`)
	s.writeWait = time.Second
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		_ = s.inTx(ctx, func(tx txn) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO t (n) VALUES (1)`); err != nil {
				return err
			}
			panic("a bug in a transaction")
		})
	}()
	select {
	case p := <-panicked:
		if p == nil {
			t.Fatal("the panic did not come out of inTx")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("inTx did not return after its fn panicked: the writing connection is stuck in its transaction")
	}
	if _, err := s.exec(ctx, `INSERT INTO t (n) VALUES (2)`); err != nil {
		t.Fatalf("the write after the panic: %v", err)
	}
	var n []int
	if err := s.db.SelectContext(ctx, &n, `SELECT n FROM t`); err != nil || len(n) != 1 || n[0] != 2 {
		t.Fatalf("rows %v, %v; want only the write after the panic", n, err)
	}
}

// TestSQLiteWriterTransactionEnds: SQLite's transactions are BEGIN
// IMMEDIATE and COMMIT on the writing connection, with statements that
// are not interrupted once started. Each way a transaction can end keeps
// only what it should, and leaves a connection ready for the next write.
func TestSQLiteWriterTransactionEnds(t *testing.T) {
	errFn := errors.New("refused by fn")
	insert := func(ctx context.Context, tx txn, table string) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (n) VALUES (7)`)
		return err
	}
	cases := []struct {
		name string
		// fn runs after the transaction's INSERT into t; cancel ends the
		// caller's context.
		fn      func(ctx context.Context, tx txn, cancel context.CancelFunc) error
		wantErr error
		kept    bool
	}{
		{"fn succeeds", func(context.Context, txn, context.CancelFunc) error { return nil }, nil, true},
		{"fn fails", func(context.Context, txn, context.CancelFunc) error { return errFn }, errFn, false},
		{"a statement fails", func(ctx context.Context, tx txn, _ context.CancelFunc) error {
			return insert(ctx, tx, "nowhere")
		}, nil, false},
		// The caller went away: the next statement does not start (a
		// fleet-wide command stops there), and nothing is committed.
		{"the context ends, then a statement", func(ctx context.Context, tx txn, cancel context.CancelFunc) error {
			cancel()
			if err := insert(ctx, tx, "t"); !errors.Is(err, context.Canceled) {
				return fmt.Errorf("a statement after its context ended: %v; want it not to start", err)
			}
			return ctx.Err()
		}, context.Canceled, false},
		{"the context ends after the last statement", func(_ context.Context, _ txn, cancel context.CancelFunc) error {
			cancel()
			return nil
		}, context.Canceled, false},
		// COMMIT fails with SQLite still in the transaction (a deferred
		// foreign key): it is rolled back, not left open.
		{"COMMIT fails", func(ctx context.Context, tx txn, _ context.CancelFunc) error {
			return insert(ctx, tx, "child")
		}, nil, false},
		// Rows fn left open would keep the connection from being handed
		// back: they are closed with the transaction, kept or not.
		{"fn leaves rows open", func(ctx context.Context, tx txn, _ context.CancelFunc) error {
			_, err := tx.QueryContext(ctx, `SELECT n FROM t`)
			return err
		}, nil, true},
		{"fn leaves rows open and fails", func(ctx context.Context, tx txn, _ context.CancelFunc) error {
			if _, err := tx.QueryContext(ctx, `SELECT n FROM t`); err != nil {
				return err
			}
			return errFn
		}, errFn, false},
		// fn ended the transaction itself and made a table of the
		// connection's own: the ROLLBACK after its error fails, and the
		// connection is replaced, not trusted (checked below).
		{"fn commits and fails", func(ctx context.Context, tx txn, _ context.CancelFunc) error {
			if _, err := tx.ExecContext(ctx, `COMMIT`); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `CREATE TEMP TABLE marker (n INTEGER)`); err != nil {
				return err
			}
			return errFn
		}, errFn, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := scratchSQLite(t, filepath.Join(t.TempDir(), "v.db"), Options{}, `CREATE TABLE t (n INTEGER NOT NULL)`)
			bg := context.Background()
			for _, q := range []string{`CREATE TABLE parent (id INTEGER PRIMARY KEY)`,
				`CREATE TABLE child (n INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)`} {
				if _, err := s.exec(bg, q); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(bg)
			defer cancel()
			returned := make(chan error, 1)
			go func() {
				returned <- s.inTx(ctx, func(tx txn) error {
					if err := insert(ctx, tx, "t"); err != nil {
						return err
					}
					return tc.fn(ctx, tx, cancel)
				})
			}()
			var err error
			select {
			case err = <-returned:
			case <-time.After(10 * time.Second):
				t.Fatal("inTx did not return: the writing connection is held")
			}
			switch {
			case tc.wantErr == nil && tc.kept && err != nil:
				t.Fatalf("inTx: %v", err)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("inTx = %v; want %v", err, tc.wantErr)
			case !tc.kept && err == nil:
				t.Fatal("inTx succeeded; want an error")
			}
			var n []int
			if err := s.db.SelectContext(bg, &n, `SELECT n FROM t UNION ALL SELECT n FROM child`); err != nil {
				t.Fatal(err)
			}
			if tc.kept != (len(n) == 1) {
				t.Fatalf("rows %v after the transaction; kept = %v", n, tc.kept)
			}
			s.writeWait = 2 * time.Second
			if err := s.withWriter(bg, func(w writer) error {
				var tables int
				if err := w.GetContext(bg, &tables, `SELECT COUNT(*) FROM sqlite_temp_master`); err != nil || tables != 0 {
					return fmt.Errorf("the writing connection has %d tables of its own (%v): it was kept after a failed rollback", tables, err)
				}
				_, err := w.ExecContext(bg, `INSERT INTO t (n) VALUES (2)`)
				return err
			}); err != nil {
				t.Fatalf("the write after the transaction: %v", err)
			}
			if err := s.inTx(bg, func(tx txn) error { return insert(bg, tx, "t") }); err != nil {
				t.Fatalf("the transaction after: %v", err)
			}
		})
	}
}

// TestCheckpointerRestartsBetweenBackToBackWriters: writers that follow
// each other on the one writing connection with no pause leave SQLite's
// lock free for microseconds at a time. The checkpointer takes that
// connection for its restart, and the restart must still happen, or the
// WAL grows with everything written (all 14,500 pages when it cannot).
func TestCheckpointerRestartsBetweenBackToBackWriters(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v.db")
	s := scratchSQLite(t, path, Options{CheckpointInterval: 20 * time.Millisecond}, `CREATE TABLE ballast (id INTEGER PRIMARY KEY, v BLOB)`)
	// Eight writers with no pause between their transactions, about
	// 14,400 WAL pages in all, three and a half times walRestartFrames
	// (counted, not timed: under the race detector they write a third
	// as fast).
	const writers, each, frameBytes = 8, 600, 4096 + 24
	var longest atomic.Int64
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size()/frameBytes > longest.Load() {
				longest.Store(fi.Size() / frameBytes)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if err := s.inTx(ctx, func(tx txn) error {
					_, err := tx.ExecContext(ctx, `INSERT INTO ballast (v) VALUES (randomblob(3000))`)
					return err
				}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-watched
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := s.Checkpoints()
	t.Logf("longest WAL %d pages, %+v", longest.Load(), st)
	// Under load the writers may start the WAL over themselves, after a
	// checkpoint folded it whole, before it reaches walRestartFrames.
	if l := longest.Load(); l > 3*walRestartFrames || (l >= walRestartFrames && st.Restarts == 0) {
		t.Errorf("the WAL reached %d pages with %d restarts (%d given up); restarts should keep it near %d",
			l, st.Restarts, st.GaveUp, walRestartFrames)
	}
}

// scratchSQLite opens a Store on a new SQLite file at path, closed when
// the test ends, with the one table create makes and no migrations.
func scratchSQLite(t *testing.T, path string, opts Options, create string) *Store {
	t.Helper()
	s, err := Open(context.Background(), "sqlite:"+path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.exec(context.Background(), create); err != nil {
		t.Fatal(err)
	}
	return s
}

// migratedSQLite opens a store on a new SQLite file with the project's
// schema, closed when the test ends.
func migratedSQLite(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "v.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSQLiteLookupPool: at most sqliteLookupConns connections make the
// device lookups at once, and every one of them is kept open afterwards
// with its page cache; a lookup beyond them waits for one instead of
// opening a cold connection. The console's reads, all of their pool
// taken, hold up neither the lookups nor the readiness ping.
func TestSQLiteLookupPool(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ maxOpen, want int }{{20, sqliteLookupConns}, {3, 3}} {
		t.Run(fmt.Sprint(tc.maxOpen), func(t *testing.T) {
			s := scratchSQLite(t, filepath.Join(t.TempDir(), "v.db"), Options{MaxOpenConns: tc.maxOpen}, `CREATE TABLE t (n INTEGER)`)
			take := func(db *sqlx.DB, n int) (release func()) {
				var held []*sqlx.Conn
				for range n {
					c, err := db.Connx(ctx)
					if err != nil {
						t.Fatal(err)
					}
					held = append(held, c)
				}
				return func() {
					for _, c := range held {
						if err := c.Close(); err != nil {
							t.Error(err)
						}
					}
				}
			}
			short := func() context.Context {
				c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				t.Cleanup(cancel)
				return c
			}
			lookup := func(ctx context.Context) error {
				return s.withSQLiteReader(ctx, func(ctx context.Context, c *sqlx.Conn) error {
					var n int
					return c.GetContext(ctx, &n, `SELECT COUNT(*) FROM t`)
				})
			}

			release := take(s.lookup, tc.want)
			if err := lookup(short()); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("a lookup beyond %d: %v; want it to wait for a connection", tc.want, err)
			}
			release()

			release = take(s.db, tc.maxOpen)
			if err := lookup(short()); err != nil {
				t.Fatalf("a lookup with every console connection taken: %v", err)
			}
			if err := s.Ping(short()); err != nil {
				t.Fatalf("readiness with every console connection taken: %v", err)
			}
			release()

			var wg sync.WaitGroup
			for range 4 * tc.want {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := lookup(ctx); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			st := s.lookup.Stats()
			if st.OpenConnections != tc.want || st.MaxIdleClosed != 0 || st.MaxLifetimeClosed != 0 {
				t.Fatalf("%d open, %d closed as surplus idle, %d as too old; want all %d kept open, none closed",
					st.OpenConnections, st.MaxIdleClosed, st.MaxLifetimeClosed, tc.want)
			}
		})
	}
}

// TestDeviceLookupsBesideTheConsole: the reads of device requests (a
// check-in's record, SCEP's challenge and renewal checks, ACME's account,
// order and reservation, a trust renewal) answer while the console's
// reads hold every connection of theirs: none of them is on that pool.
func TestDeviceLookupsBesideTheConsole(t *testing.T) {
	ctx := context.Background()
	s := migratedSQLite(t, Options{MaxOpenConns: 2})
	for range 2 {
		c, err := s.db.Connx(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	now := time.Now()
	for name, lookup := range map[string]func(context.Context) error{
		"check-in record":       func(ctx context.Context) error { _, err := s.CheckinRecord(ctx, "00"); return err },
		"certificate":           func(ctx context.Context) error { _, err := s.CertificateBySHA256(ctx, "00"); return err },
		"SCEP challenge":        func(ctx context.Context) error { _, err := s.OpenReservationForChallenge(ctx, "00", now); return err },
		"SCEP retry":            func(ctx context.Context) error { _, err := s.IssuedByTransaction(ctx, "t", "k"); return err },
		"renewal's enrollment":  func(ctx context.Context) error { _, err := s.EnrollmentApproved(ctx, "e"); return err },
		"ACME account":          func(ctx context.Context) error { _, err := s.ACME().Account(ctx, "a"); return err },
		"ACME account by key":   func(ctx context.Context) error { _, err := s.ACME().AccountByThumbprint(ctx, "k"); return err },
		"ACME order":            func(ctx context.Context) error { _, err := s.ACME().Order(ctx, "o"); return err },
		"ACME reservation":      func(ctx context.Context) error { _, _, err := s.ACME().ACMEReservation(ctx, "h", now); return err },
		"trust renewal's state": func(ctx context.Context) error { _, err := s.TrustIssuance().EnrollmentApproved(ctx, "e"); return err },
		"enrollment":            func(ctx context.Context) error { _, err := s.Enrollment(ctx, "e"); return err },
	} {
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		err := lookup(short)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s waited for a console connection", name)
		} else if err != nil && !errors.Is(err, enrollment.ErrNotFound) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
