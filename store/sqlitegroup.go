package store

import (
	"context"
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
// that fails is rolled back to its savepoint, the others go on. What
// fails them all is what fails the transaction they share: the wait for
// the connection, BEGIN, a SAVEPOINT or COMMIT that fails, SQLite ending
// the transaction itself, or the leader's goroutine ending (a fn must not
// call runtime.Goexit: it would end another caller's goroutine).

// maxGroup bounds the transactions committed together: the first waits
// for the last to run before it is answered.
const maxGroup = 32

// writeGroup queues SQLite's writes for the writing connection. One
// caller at a time leads: it takes what is queued, runs it on the
// connection, and hands the lead to the next caller still waiting.
type writeGroup struct {
	mu      sync.Mutex
	leading bool
	queue   []*groupTx
	stats   WriteGroupStats
}

// WriteGroupStats says how SQLite's writes were committed since Open.
type WriteGroupStats struct {
	Transactions int64 // writes committed
	Commits      int64 // the COMMITs they took
}

// groupTx is one caller's write, from its queueing to its answer.
type groupTx struct {
	ctx context.Context
	fn  func(tx txn) error
	// kind says whether it may share a group: see writeKind.
	kind writeKind
	// statement: fn runs one statement (withWriter's). By itself it runs
	// as SQLite's own autocommit, with no BEGIN and COMMIT of ours.
	statement bool
	wake      chan struct{}
	// Under writeGroup.mu:
	state txState
	// Set by the leader before it moves state to txDone.
	err      error
	panicked any
}

// writeKind says whether a write may share a group.
type writeKind int

const (
	// grouped: committed with others, in a savepoint.
	grouped writeKind = iota
	// alone: a bulk write (a fleet-wide command, a user import, a purge),
	// always in a group of its own. In a savepoint SQLite keeps a copy of
	// every page it changes, in memory (temp_store): for a fleet of
	// 10,000 devices tens of MB.
	alone
)

type txState int

const (
	txQueued    txState = iota // waiting in writeGroup.queue
	txTaken                    // in a leader's group, not started: it may still withdraw
	txRunning                  // its fn runs or has run
	txWithdrawn                // its caller stopped waiting before it ran
	txLead                     // handed the lead: it runs next
	txDone                     // err and panicked hold its outcome
)

var (
	// errTransactionLost is the error of a transaction that had succeeded
	// in a group, when SQLite ended the group's transaction before its
	// COMMIT.
	errTransactionLost = errors.New("the transaction it was grouped with was lost")
	// errLeaderStopped is the error of the transactions of a group whose
	// leader's goroutine ended before it answered them (runtime.Goexit,
	// a panic outside any fn).
	errLeaderStopped = errors.New("the writer running it stopped")
)

// inGroup runs fn on SQLite's writing connection, committed with whatever
// other writes are waiting then (kind says whether it may). Queued, it
// waits at most writeWait, and not past ctx's end, until fn starts; a
// caller that leads waits up to writeWait more for the connection, then
// for its group.
func (s *Store) inGroup(ctx context.Context, kind writeKind, statement bool, fn func(tx txn) error) error {
	g := &s.group
	t := &groupTx{ctx: ctx, fn: fn, kind: kind, statement: statement, wake: make(chan struct{}, 1)}
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
		case txQueued, txTaken:
			if why != nil {
				if t.state == txQueued {
					g.remove(t)
				}
				t.state = txWithdrawn
				g.mu.Unlock()
				return fmt.Errorf("wait for the database writer: %w", why)
			}
		case txRunning:
			// Started: only its outcome is awaited now.
			ended, waited = nil, nil
		}
		g.mu.Unlock()
	}
}

// WriteGroups says how SQLite's writes were committed; zero on
// PostgreSQL.
func (s *Store) WriteGroups() WriteGroupStats {
	s.group.mu.Lock()
	defer s.group.mu.Unlock()
	return s.group.stats
}

// remove takes a waiting write out of the queue; under mu.
func (g *writeGroup) remove(t *groupTx) {
	for i, q := range g.queue {
		if q == t {
			g.queue = append(g.queue[:i], g.queue[i+1:]...)
			return
		}
	}
}

// start marks t running, unless its caller withdrew: then it is skipped.
func (g *writeGroup) start(t *groupTx) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.state == txWithdrawn {
		return false
	}
	t.state = txRunning
	return true
}

// lead runs t with the writes queued behind it, then hands the lead on,
// and answers t.
func (s *Store) lead(t *groupTx) error {
	g := &s.group
	g.mu.Lock()
	batch := []*groupTx{t}
	if t.kind != alone {
		n := 0
		for n < len(g.queue) && len(batch) < maxGroup && g.queue[n].kind != alone {
			batch = append(batch, g.queue[n])
			n++
		}
		g.queue = append(g.queue[:0], g.queue[n:]...)
	}
	for _, b := range batch {
		b.state = txTaken
	}
	g.mu.Unlock()

	var committed, commits int64
	finished := false
	// Deferred, so that the lead is handed on and every caller answered
	// even when this goroutine ends early.
	defer func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.stats.Transactions += committed
		g.stats.Commits += commits
		for _, b := range batch {
			if b.state == txWithdrawn {
				continue
			}
			if !finished {
				b.err, b.panicked = fmt.Errorf("commit: %w", errLeaderStopped), nil
			}
			b.state = txDone
			if b != t {
				b.wake <- struct{}{}
			}
		}
		if len(g.queue) > 0 {
			next := g.queue[0]
			g.queue = g.queue[1:]
			next.state = txLead
			next.wake <- struct{}{}
		} else {
			g.leading = false
		}
	}()
	committed, commits = s.commitGroup(batch)
	finished = true
	return t.outcome()
}

// outcome is the write's error, or its panic, raised again on the
// caller's own goroutine.
func (t *groupTx) outcome() error {
	if t.panicked != nil {
		panic(t.panicked)
	}
	return t.err
}

// commitGroup runs batch on the writing connection, sets every write's
// outcome, and counts the writes committed and the COMMITs they took.
// When SQLite ends a group's transaction early, the writes after the one
// that ended it are run again (runGroup), on the connection that the
// pool hands out next.
func (s *Store) commitGroup(batch []*groupTx) (committed, commits int64) {
	for len(batch) > 0 {
		var rest []*groupTx
		// Not under any caller's context: the others' work goes on when
		// one caller goes away.
		err := s.withSQLiteWriter(context.Background(), func(w sqliteWriter) error {
			if len(batch) == 1 {
				t := batch[0]
				if !s.group.start(t) {
					return nil
				}
				if t.err, t.panicked = w.runOne(t); t.err == nil && t.panicked == nil {
					committed++
					commits++
				}
				return nil
			}
			var n int
			rest, n = w.runGroup(&s.group, batch)
			if n > 0 {
				committed += int64(n)
				commits++
			}
			return nil
		})
		if err != nil {
			for _, t := range batch {
				if s.group.start(t) {
					t.err = err
				}
			}
			return committed, commits
		}
		batch = rest
	}
	return committed, commits
}

// runOne runs a write by itself: one statement as SQLite's own
// autocommit, anything else in a transaction. A panic in fn is kept for its
// caller: it must not unwind the leader, whose goroutine it ran on.
func (w sqliteWriter) runOne(t *groupTx) (err error, panicked any) {
	if !t.statement {
		return w.transaction(t)
	}
	defer func() {
		if p := recover(); p != nil {
			panicked = p
		}
	}()
	return t.fn(w), nil
}

// runGroup runs batch in one transaction, each write in a savepoint, and
// commits it; it returns how many writes it committed. When SQLite ends
// the transaction before that (a failed SAVEPOINT, ROLLBACK TO or
// RELEASE says so), what succeeded in it is lost with it: those fail,
// and the writes after the one that ended it are returned, to be run
// again.
func (w sqliteWriter) runGroup(g *writeGroup, batch []*groupTx) (rest []*groupTx, committed int) {
	bg := context.Background()
	if _, err := w.c.ExecContext(bg, `BEGIN IMMEDIATE`); err != nil {
		for _, t := range batch {
			if g.start(t) {
				t.err = fmt.Errorf("begin: %w", err)
			}
		}
		// As transaction: a BEGIN that failed (SQLite's lock held past
		// busy_timeout by another process) leaves the connection as it was.
		return nil, 0
	}
	ended := false
	defer func() {
		// This goroutine is ending inside the transaction: the
		// connection is not handed back in it.
		if !ended {
			_ = w.rollback()
		}
	}()
	var kept []*groupTx
	lost := func(i int, err error) ([]*groupTx, int) {
		for _, k := range kept {
			k.err = fmt.Errorf("commit: %w: %w", errTransactionLost, err)
		}
		_ = w.rollback()
		ended = true
		return batch[i+1:], 0
	}
	for i, t := range batch {
		if !g.start(t) {
			continue
		}
		if err := t.ctx.Err(); err != nil {
			t.err = fmt.Errorf("begin: %w", err)
			continue
		}
		if _, err := w.c.ExecContext(bg, `SAVEPOINT grouped`); err != nil {
			t.err = fmt.Errorf("begin: %w", err)
			return lost(i, err)
		}
		t.err, t.panicked = w.runFn(t)
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
	ended = true
	if _, err := w.c.ExecContext(bg, `COMMIT`); err != nil {
		for _, k := range kept {
			k.err = fmt.Errorf("commit: %w", err)
		}
		_ = w.rollback()
		return nil, 0
	}
	return nil, len(kept)
}
