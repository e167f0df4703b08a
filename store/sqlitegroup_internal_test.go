package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"
)

// groupFixture holds SQLite's writer with one transaction while others
// queue behind it, so that those are committed as one group when it
// lets go.
type groupFixture struct {
	t       *testing.T
	s       *Store
	release chan struct{}
	held    chan error
	results []chan groupResult
}

type groupResult struct {
	err      error
	panicked any
}

func newGroupFixture(t *testing.T, create ...string) *groupFixture {
	t.Helper()
	s := scratchSQLite(t, filepath.Join(t.TempDir(), "v.db"), Options{}, `CREATE TABLE t (n INTEGER NOT NULL UNIQUE)`)
	for _, q := range create {
		if _, err := s.exec(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	f := &groupFixture{t: t, s: s, release: make(chan struct{}), held: make(chan error, 1)}
	holding := make(chan struct{})
	go func() {
		f.held <- s.inTx(context.Background(), func(tx txn) error {
			if _, err := tx.ExecContext(context.Background(), `INSERT INTO t (n) VALUES (0)`); err != nil {
				return err
			}
			close(holding)
			<-f.release
			return nil
		})
	}()
	<-holding
	return f
}

// queue starts a transaction and returns once it waits in the queue, so
// that the group keeps the order the test gives.
func (f *groupFixture) queue(ctx context.Context, fn func(ctx context.Context, tx txn) error) {
	f.t.Helper()
	f.queueWrite(func() error { return f.s.inTx(ctx, func(tx txn) error { return fn(ctx, tx) }) })
}

// queueWrite is queue for a write of any kind through the Store.
func (f *groupFixture) queueWrite(write func() error) {
	f.t.Helper()
	res := make(chan groupResult, 1)
	f.results = append(f.results, res)
	want := f.queued() + 1
	go func() {
		var r groupResult
		defer func() {
			r.panicked = recover()
			res <- r
		}()
		r.err = write()
	}()
	for deadline := time.Now().Add(10 * time.Second); f.queued() != want; {
		if time.Now().After(deadline) {
			f.t.Fatalf("%d transactions queued, want %d", f.queued(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func (f *groupFixture) queued() int {
	f.s.group.mu.Lock()
	defer f.s.group.mu.Unlock()
	return len(f.s.group.queue)
}

// run lets the held transaction go and returns every queued one's
// outcome, in queue order.
func (f *groupFixture) run() []groupResult {
	f.t.Helper()
	close(f.release)
	if err := <-f.held; err != nil {
		f.t.Fatalf("the holding transaction: %v", err)
	}
	out := make([]groupResult, len(f.results))
	for i, r := range f.results {
		select {
		case out[i] = <-r:
		case <-time.After(10 * time.Second):
			f.t.Fatalf("queued transaction %d never returned", i)
		}
	}
	return out
}

func (f *groupFixture) rows() []int {
	f.t.Helper()
	var n []int
	if err := f.s.db.SelectContext(context.Background(), &n, `SELECT n FROM t ORDER BY n`); err != nil {
		f.t.Fatal(err)
	}
	return n
}

func insertN(n int) func(ctx context.Context, tx txn) error {
	return func(ctx context.Context, tx txn) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO t (n) VALUES (?)`, n)
		return err
	}
}

// TestSQLiteGroupCommit: transactions that waited for the writer while
// another ran are committed together, yet each keeps or loses its own
// work as if it had run alone.
func TestSQLiteGroupCommit(t *testing.T) {
	errFn := errors.New("refused by fn")
	f := newGroupFixture(t)
	before := f.s.WriteGroups()
	bg := context.Background()
	withdrawn, withdraw := context.WithCancel(bg)
	endsInFn, end := context.WithCancel(bg)
	defer end()

	f.queue(bg, insertN(1))
	f.queue(bg, func(ctx context.Context, tx txn) error {
		if err := insertN(2)(ctx, tx); err != nil {
			return err
		}
		return errFn
	})
	f.queue(bg, func(ctx context.Context, tx txn) error {
		if err := insertN(3)(ctx, tx); err != nil {
			return err
		}
		panic("a bug in a grouped transaction")
	})
	f.queue(withdrawn, insertN(4))
	f.queue(endsInFn, func(ctx context.Context, tx txn) error {
		if err := insertN(5)(ctx, tx); err != nil {
			return err
		}
		end()
		return nil
	})
	// A statement that fails (the UNIQUE n) takes back only itself and
	// what its own transaction wrote, not the first transaction's 1.
	f.queue(bg, func(ctx context.Context, tx txn) error {
		if err := insertN(6)(ctx, tx); err != nil {
			return err
		}
		return insertN(1)(ctx, tx)
	})
	f.queue(bg, func(ctx context.Context, tx txn) error {
		if _, err := tx.QueryContext(ctx, `SELECT n FROM t`); err != nil {
			return err
		}
		return insertN(7)(ctx, tx)
	})
	// A write outside a transaction (TokenUpdate's) joins the group too.
	f.queueWrite(func() error {
		_, err := f.s.exec(bg, `INSERT INTO t (n) VALUES (8)`)
		return err
	})
	withdraw()
	for deadline := time.Now().Add(10 * time.Second); f.queued() != 7; {
		if time.Now().After(deadline) {
			t.Fatalf("the withdrawn transaction is still queued (%d queued)", f.queued())
		}
		time.Sleep(time.Millisecond)
	}

	got := f.run()
	checks := []func(groupResult) error{
		func(r groupResult) error { return r.err },
		func(r groupResult) error {
			if !errors.Is(r.err, errFn) {
				return fmt.Errorf("err %v, want fn's", r.err)
			}
			return nil
		},
		func(r groupResult) error {
			if r.panicked != "a bug in a grouped transaction" {
				return fmt.Errorf("panic %v (err %v), want fn's panic raised in its caller", r.panicked, r.err)
			}
			return nil
		},
		func(r groupResult) error {
			if !errors.Is(r.err, context.Canceled) {
				return fmt.Errorf("err %v, want its context's end", r.err)
			}
			return nil
		},
		func(r groupResult) error {
			if !errors.Is(r.err, context.Canceled) {
				return fmt.Errorf("err %v, want its context's end", r.err)
			}
			return nil
		},
		func(r groupResult) error {
			if r.err == nil {
				return errors.New("succeeded; want the UNIQUE constraint's error")
			}
			return nil
		},
		func(r groupResult) error { return r.err },
		func(r groupResult) error { return r.err },
	}
	for i, check := range checks {
		if err := check(got[i]); err != nil {
			t.Errorf("queued transaction %d: %v", i, err)
		}
	}
	if rows, want := f.rows(), []int{0, 1, 7, 8}; !slices.Equal(rows, want) {
		t.Errorf("rows %v, want %v", rows, want)
	}
	after := f.s.WriteGroups()
	if c, n := after.Commits-before.Commits, after.Transactions-before.Transactions; c != 2 || n != 4 {
		t.Errorf("%d writes committed in %d COMMITs; want 4 in 2: the held one alone, then 1, 7 and 8 together", n, c)
	}
	if err := f.s.inTx(bg, func(tx txn) error { return insertN(9)(bg, tx) }); err != nil {
		t.Fatalf("the transaction after the group: %v", err)
	}
}

// TestSQLiteGroupCommitLost: when SQLite ends a group's transaction
// before its COMMIT, what had succeeded in it is lost, and those callers
// are told; the transactions after the one that ended it run again, in
// a transaction of their own, on a connection that is not the suspect
// one.
func TestSQLiteGroupCommitLost(t *testing.T) {
	errFn := errors.New("refused by fn")
	cases := []struct {
		name string
		// end ends the group's transaction from inside a fn.
		end     func(ctx context.Context, tx txn) error
		wantErr error
	}{
		{"fn rolls back and fails", func(ctx context.Context, tx txn) error {
			if _, err := tx.ExecContext(ctx, `ROLLBACK`); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `CREATE TEMP TABLE marker (n INTEGER)`); err != nil {
				return err
			}
			return errFn
		}, errFn},
		{"fn rolls back and succeeds", func(ctx context.Context, tx txn) error {
			if _, err := tx.ExecContext(ctx, `ROLLBACK`); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `CREATE TEMP TABLE marker (n INTEGER)`)
			return err
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newGroupFixture(t)
			bg := context.Background()
			f.queue(bg, insertN(1))
			f.queue(bg, tc.end)
			f.queue(bg, insertN(3))
			got := f.run()
			if !errors.Is(got[0].err, errTransactionLost) {
				t.Errorf("the transaction before: %v; want it told its work was lost", got[0].err)
			}
			if got[1].err == nil || (tc.wantErr != nil && !errors.Is(got[1].err, tc.wantErr)) {
				t.Errorf("the transaction that ended the group's: %v; want an error (%v)", got[1].err, tc.wantErr)
			}
			if got[2].err != nil {
				t.Errorf("the transaction after: %v; want it run again and committed", got[2].err)
			}
			if rows, want := f.rows(), []int{0, 3}; !slices.Equal(rows, want) {
				t.Errorf("rows %v, want %v", rows, want)
			}
			if err := f.s.withWriter(bg, func(w writer) error {
				var tables int
				if err := w.GetContext(bg, &tables, `SELECT COUNT(*) FROM sqlite_temp_master`); err != nil || tables != 0 {
					return fmt.Errorf("the writing connection has %d tables of its own (%v): it was kept after its transaction was lost", tables, err)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSQLiteGroupCommitFails: a COMMIT that fails (a deferred foreign
// key one transaction broke) fails every transaction of the group, keeps
// none of their work, and leaves the writer usable.
func TestSQLiteGroupCommitFails(t *testing.T) {
	f := newGroupFixture(t, `CREATE TABLE parent (id INTEGER PRIMARY KEY)`,
		`CREATE TABLE child (n INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)`)
	bg := context.Background()
	f.queue(bg, insertN(1))
	f.queue(bg, func(ctx context.Context, tx txn) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO child (n) VALUES (7)`)
		return err
	})
	for i, r := range f.run() {
		if r.err == nil {
			t.Errorf("queued transaction %d succeeded; want COMMIT's error", i)
		}
	}
	if rows, want := f.rows(), []int{0}; !slices.Equal(rows, want) {
		t.Errorf("rows %v, want %v", rows, want)
	}
	if err := f.s.inTx(bg, func(tx txn) error { return insertN(2)(bg, tx) }); err != nil {
		t.Fatalf("the transaction after: %v", err)
	}
}

// TestSQLiteGroupQueueWait: a transaction queued behind one that holds
// the writer gives up after writeWait, with an error that says why, and
// writes nothing.
func TestSQLiteGroupQueueWait(t *testing.T) {
	f := newGroupFixture(t)
	f.s.writeWait = 50 * time.Millisecond
	f.queue(context.Background(), insertN(1))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for f.queued() != 0 {
			time.Sleep(time.Millisecond)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the queued transaction waited past writeWait")
	}
	got := f.run()
	if !errors.Is(got[0].err, context.DeadlineExceeded) {
		t.Errorf("err %v; want a deadline error", got[0].err)
	}
	if rows, want := f.rows(), []int{0}; !slices.Equal(rows, want) {
		t.Errorf("rows %v, want %v", rows, want)
	}
}

// TestSQLiteGroupWithdraw: a caller whose write was taken into a group
// but has not started still stops waiting at its deadline or after
// writeWait, and its write is skipped, however long the writes before it
// in the group run.
func TestSQLiteGroupWithdraw(t *testing.T) {
	for _, tc := range []struct {
		name string
		// wait bounds the second caller's wait: its context, or writeWait.
		wait func(f *groupFixture) (context.Context, context.CancelFunc)
	}{
		{"its context ends", func(*groupFixture) (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 100*time.Millisecond)
		}},
		{"writeWait passes", func(f *groupFixture) (context.Context, context.CancelFunc) {
			f.s.writeWait = 300 * time.Millisecond
			return context.WithCancel(context.Background())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newGroupFixture(t)
			bg := context.Background()
			ctx, cancel := tc.wait(f)
			defer cancel()
			slow, running := make(chan struct{}), make(chan struct{})
			f.queue(bg, func(ctx context.Context, tx txn) error {
				close(running)
				<-slow
				return insertN(1)(ctx, tx)
			})
			f.queue(ctx, insertN(2))
			close(f.release)
			<-running
			select {
			case r := <-f.results[1]:
				if !errors.Is(r.err, context.DeadlineExceeded) {
					t.Errorf("the caller past its deadline: %v; want a deadline error", r.err)
				}
				f.results[1] <- r
			case <-time.After(10 * time.Second):
				t.Fatal("the caller waited past its deadline behind the slow write of its group")
			}
			close(slow)
			f.release = make(chan struct{})
			got := f.run()
			if got[0].err != nil {
				t.Errorf("the slow write: %v", got[0].err)
			}
			if rows, want := f.rows(), []int{0, 1}; !slices.Equal(rows, want) {
				t.Errorf("rows %v, want %v: the withdrawn write ran", rows, want)
			}
		})
	}
}

// TestSQLiteGroupLeaderStops: a fn that ends its goroutine
// (runtime.Goexit) ends the leader's: the group's writes are rolled
// back and their callers told, the lead is handed on, and the writer
// takes the next write.
func TestSQLiteGroupLeaderStops(t *testing.T) {
	f := newGroupFixture(t)
	bg := context.Background()
	f.queue(bg, insertN(1))
	f.queue(bg, func(ctx context.Context, tx txn) error {
		if err := insertN(2)(ctx, tx); err != nil {
			return err
		}
		runtime.Goexit()
		return nil
	})
	f.queue(bg, insertN(3))
	got := f.run()
	// got[0] is the leader's caller, whose goroutine ended with it.
	for _, i := range []int{1, 2} {
		if !errors.Is(got[i].err, errLeaderStopped) {
			t.Errorf("queued write %d: %v; want it told its leader stopped", i, got[i].err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- f.s.inTx(bg, func(tx txn) error { return insertN(4)(bg, tx) }) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the write after: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the write after never ran: the lead was not handed on")
	}
	if rows, want := f.rows(), []int{0, 4}; !slices.Equal(rows, want) {
		t.Errorf("rows %v, want %v", rows, want)
	}
}

// TestSQLiteGroupAlone: a bulk transaction is committed by itself, never
// with the writes queued around it; and a single write by itself runs in
// SQLite's autocommit (VACUUM refuses to run inside a transaction).
func TestSQLiteGroupAlone(t *testing.T) {
	f := newGroupFixture(t)
	bg := context.Background()
	before := f.s.WriteGroups()
	f.queue(bg, insertN(1))
	f.queueWrite(func() error { return f.s.inTxAlone(bg, func(tx txn) error { return insertN(2)(bg, tx) }) })
	f.queue(bg, insertN(3))
	f.queue(bg, insertN(4))
	for i, r := range f.run() {
		if r.err != nil {
			t.Errorf("queued write %d: %v", i, r.err)
		}
	}
	after := f.s.WriteGroups()
	if c, n := after.Commits-before.Commits, after.Transactions-before.Transactions; c != 4 || n != 5 {
		t.Errorf("%d writes in %d COMMITs; want 5 in 4: the held one, 1, the bulk one by itself, then 3 and 4", n, c)
	}
	for name, exec := range map[string]func(context.Context, string, ...any) (sql.Result, error){"exec": f.s.exec, "execAlone": f.s.execAlone} {
		if _, err := exec(bg, `VACUUM`); err != nil {
			t.Errorf("%s by itself: %v; want it run outside any transaction", name, err)
		}
	}
}
