package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"
	"time"
)

// SQLite writes every page a transaction changed to the WAL when it
// commits: two pwrite calls a page, some 23 pages for a device's claim,
// and on this machine those calls were half the claim's CPU (pprof of
// BenchmarkClaimReservation: 1.07 of 1.84 s in COMMIT's WAL writes).
// Many of those pages are the same from one claim to the next: the last
// page of each table and of each index on a time-ordered key. So
// transactions that wait for the writer while another commits are run
// together: each in a savepoint of its own, all committed at once, and
// a page they share is written once. This is the group commit of
// server databases. Each transaction still succeeds or fails alone: one
// that fails is rolled back to its savepoint, the others go on; only a
// failed COMMIT, or SQLite ending the whole transaction, fails them all.

// maxGroup bounds the transactions committed together: the first waits
// for the last to run before it is answered.
const maxGroup = 32

// writeGroup queues SQLite's transactions for the writing connection.
// One caller at a time leads: it takes what is queued, runs it on the
// connection, and hands the lead to the next caller still waiting.
type writeGroup struct {
	mu      sync.Mutex
	leading bool
	queue   []*groupTx
	stats   WriteGroupStats
}

// WriteGroupStats says how SQLite's transactions were grouped since Open.
type WriteGroupStats struct {
	Transactions int64 // transactions run
	Groups       int64 // groups they ran in, each one COMMIT
}

// groupTx is one caller's transaction, from its queueing to its answer.
type groupTx struct {
	ctx  context.Context
	fn   func(tx txn) error
	wake chan struct{}
	// Under writeGroup.mu:
	state txState
	// Set by the leader before it moves state to txDone.
	err      error
	panicked any
}

type txState int

const (
	txQueued txState = iota // waiting in writeGroup.queue
	txTaken                 // a leader is running it
	txLead                  // handed the lead: it runs next
	txDone                  // err and panicked hold its outcome
)

// errTransactionLost is the error of a transaction that had succeeded in
// a group, when SQLite ended the group's transaction before its COMMIT.
var errTransactionLost = errors.New("the transaction it was grouped with was lost")

// inGroup runs fn in a transaction on SQLite's writing connection,
// committed with whatever other transactions are waiting then. It waits
// in the queue at most writeWait, and not past ctx's end.
func (s *Store) inGroup(ctx context.Context, fn func(tx txn) error) error {
	g := &s.group
	t := &groupTx{ctx: ctx, fn: fn, wake: make(chan struct{}, 1)}
	g.mu.Lock()
	if !g.leading {
		g.leading = true
		g.mu.Unlock()
		return s.lead(t)
	}
	g.queue = append(g.queue, t)
	g.mu.Unlock()

	timeout := time.NewTimer(s.writeWait)
	defer timeout.Stop()
	ended, waited := ctx.Done(), timeout.C
	for {
		var why error
		select {
		case <-t.wake:
		case <-ended:
			why = ctx.Err()
		case <-waited:
			why = context.DeadlineExceeded
		}
		g.mu.Lock()
		switch t.state {
		case txDone:
			g.mu.Unlock()
			return t.outcome()
		case txLead:
			g.mu.Unlock()
			return s.lead(t)
		case txQueued:
			if why != nil {
				g.remove(t)
				g.mu.Unlock()
				return fmt.Errorf("wait for the database writer: %w", why)
			}
		case txTaken:
			// Running: only its outcome is awaited now.
			ended, waited = nil, nil
		}
		g.mu.Unlock()
	}
}

// WriteGroups says how SQLite's transactions were grouped; zero on
// PostgreSQL.
func (s *Store) WriteGroups() WriteGroupStats {
	s.group.mu.Lock()
	defer s.group.mu.Unlock()
	return s.group.stats
}

// remove takes a waiting transaction out of the queue; under mu.
func (g *writeGroup) remove(t *groupTx) {
	for i, q := range g.queue {
		if q == t {
			g.queue = append(g.queue[:i], g.queue[i+1:]...)
			return
		}
	}
}

// lead runs t with the transactions queued behind it, then hands the
// lead on, and answers t.
func (s *Store) lead(t *groupTx) error {
	g := &s.group
	g.mu.Lock()
	n := min(len(g.queue), maxGroup-1)
	batch := append([]*groupTx{t}, g.queue[:n]...)
	g.queue = append(g.queue[:0], g.queue[n:]...)
	for _, b := range batch {
		b.state = txTaken
	}
	g.mu.Unlock()

	s.commitGroup(batch)

	g.mu.Lock()
	g.stats.Groups++
	g.stats.Transactions += int64(len(batch))
	for _, b := range batch[1:] {
		b.state = txDone
		b.wake <- struct{}{}
	}
	if len(g.queue) > 0 {
		next := g.queue[0]
		g.queue = g.queue[1:]
		next.state = txLead
		next.wake <- struct{}{}
	} else {
		g.leading = false
	}
	g.mu.Unlock()
	return t.outcome()
}

// outcome is the transaction's error, or its panic, raised again on the
// caller's own goroutine.
func (t *groupTx) outcome() error {
	if t.panicked != nil {
		panic(t.panicked)
	}
	return t.err
}

// commitGroup runs batch on the writing connection and sets every
// transaction's outcome. A lost transaction is run again without the
// ones before it (runGroup).
func (s *Store) commitGroup(batch []*groupTx) {
	for len(batch) > 0 {
		rest := batch[:0:0]
		// Not under any caller's context: the others' work goes on when
		// one caller goes away.
		err := s.withSQLiteWriter(context.Background(), func(w sqliteWriter) error {
			if len(batch) == 1 {
				batch[0].err, batch[0].panicked = w.transactionRecovered(batch[0])
				return nil
			}
			rest = w.runGroup(batch)
			return nil
		})
		if err != nil {
			for _, t := range batch {
				t.err = err
			}
			return
		}
		batch = rest
	}
}

// transactionRecovered is transaction, with a panic in fn kept for its
// caller: it must not unwind the leader, whose goroutine it ran on.
func (w sqliteWriter) transactionRecovered(t *groupTx) (err error, panicked any) {
	defer func() {
		if p := recover(); p != nil {
			panicked = p
		}
	}()
	return w.transaction(t.ctx, t.fn), nil
}

// runGroup runs batch in one transaction, each in a savepoint, and
// commits it. When SQLite ends the transaction before that (a failed
// ROLLBACK TO or RELEASE says so), what succeeded in it is lost with it:
// those fail, and the transactions after the one that ended it are
// returned, to be run again.
func (w sqliteWriter) runGroup(batch []*groupTx) (rest []*groupTx) {
	bg := context.Background()
	if _, err := w.c.ExecContext(bg, `BEGIN IMMEDIATE`); err != nil {
		for _, t := range batch {
			t.err = fmt.Errorf("begin: %w", err)
		}
		return nil
	}
	var kept []*groupTx
	lost := func(i int, err error) []*groupTx {
		for _, k := range kept {
			k.err = fmt.Errorf("commit: %w: %w", errTransactionLost, err)
		}
		w.rollback()
		return batch[i+1:]
	}
	for i, t := range batch {
		if err := t.ctx.Err(); err != nil {
			t.err = fmt.Errorf("begin: %w", err)
			continue
		}
		if _, err := w.c.ExecContext(bg, `SAVEPOINT grouped`); err != nil {
			t.err = fmt.Errorf("begin: %w", err)
			return lost(i, err)
		}
		t.err, t.panicked = w.savepoint(t)
		if t.err == nil && t.panicked == nil {
			if _, err := w.c.ExecContext(bg, `RELEASE grouped`); err != nil {
				t.err = fmt.Errorf("commit: %w", err)
				return lost(i, err)
			}
			kept = append(kept, t)
			continue
		}
		if _, err := w.c.ExecContext(bg, `ROLLBACK TO grouped`); err != nil {
			t.err = errors.Join(t.err, fmt.Errorf("rollback: %w", err))
			return lost(i, err)
		}
		if _, err := w.c.ExecContext(bg, `RELEASE grouped`); err != nil {
			return lost(i, err)
		}
	}
	if _, err := w.c.ExecContext(bg, `COMMIT`); err != nil {
		for _, k := range kept {
			k.err = fmt.Errorf("commit: %w", err)
		}
		w.rollback()
	}
	return nil
}

// savepoint runs one transaction's fn inside the group's savepoint: it
// fails when fn fails or panics, or when its context ended meanwhile.
// Rows fn left open are closed.
func (w sqliteWriter) savepoint(t *groupTx) (err error, panicked any) {
	var open []*sql.Rows
	w.open = &open
	defer func() {
		for _, r := range open {
			_ = r.Close()
		}
		if p := recover(); p != nil {
			panicked = p
		}
	}()
	if err := t.fn(w); err != nil {
		return err, nil
	}
	if err := t.ctx.Err(); err != nil {
		return fmt.Errorf("commit: %w", err), nil
	}
	return nil, nil
}

// rollback ends the connection's transaction. A connection that cannot
// roll back is closed: left inside its transaction it would fail every
// later BEGIN, and one whose transaction SQLite ended is not trusted
// either (a statement of fn's may have ended it).
func (w sqliteWriter) rollback() {
	if _, err := w.c.ExecContext(context.Background(), `ROLLBACK`); err != nil {
		_ = w.c.Raw(func(any) error { return driver.ErrBadConn })
	}
}
