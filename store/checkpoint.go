package store

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
)

// SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL
// past 1,000 pages, on the request that happened to commit. Under
// concurrent load it cannot finish while readers hold older snapshots,
// so every later COMMIT tries again, each try with two fsyncs, and the WAL
// never starts over: a profile of 3,000 devices authenticating at
// concurrency 8 put 18 % of the server's CPU in checkpoints run by
// COMMIT, more than the WAL writes of the transactions themselves, and a
// 2,000-device ceremony grew the WAL to 226 MB. Connections are
// therefore opened with wal_autocheckpoint(0), and one goroutine per
// Store folds the WAL back into the database file at a steady pace, on a
// connection of its own: each page once per round however often it was
// written since, and no request waits for it.

// DefaultCheckpointInterval is how often the WAL is folded back when
// Options.CheckpointInterval is zero.
const DefaultCheckpointInterval = 500 * time.Millisecond

// walSizeLimit is what a WAL file is cut back to by the first commit
// after the WAL starts over; a burst that grew it does not keep the space.
const walSizeLimit = 16 << 20

// walRestartFrames is the WAL length, in pages, at which a round also
// starts the WAL over. A PASSIVE round folds the WAL but never restarts
// it: the next writer does, when it begins after a round folded
// everything, and under writes that never pause one always begins during
// a round, so the WAL would only grow. A TRUNCATE round holds new writers
// while it waits for readers still in the old WAL, at most restartWait,
// then empties the file.
const walRestartFrames = 4096

// restartWait bounds how long a TRUNCATE round waits for readers, and so
// how long it holds writers, beyond the time it takes to copy what is left
// and sync. One that runs out leaves the WAL folded but not started over.
const restartWait = 100 * time.Millisecond

// A TRUNCATE round that ran out of time is not tried again for
// restartBackoff: a long reader (a backup, a large listing) must not hold
// every writer for restartWait twice a second. The wait does not grow
// with each failure: writers that keep the write lock busy also make a
// restart run out of time, without being held by it, and a restart
// tried ever more rarely would let the WAL grow with their writes (a
// test under the race detector saw 15,000 pages).
const restartBackoff = time.Second

// CheckpointStats says what the checkpointer has done since Open.
type CheckpointStats struct {
	Rounds   int64 // checkpoints run
	Restarts int64 // rounds that started a long WAL over
	GaveUp   int64 // restarts that ran out of restartWait
	Failed   int64 // rounds that returned an error
	// WALFrames is the WAL's length at the last round, in pages, and
	// Folded how many of them are in the database file.
	WALFrames, Folded int64
}

type checkpointer struct {
	// db is a connection of the checkpointer's own, with restartWait as
	// its busy timeout; it takes no request's connection.
	db *sql.DB
	// writer is the Store's one writing connection (withWriter), held
	// while a restart runs.
	writer   *sqlx.DB
	log      *slog.Logger
	interval time.Duration
	stop     context.CancelFunc
	done     chan struct{}

	// Touched by the goroutine alone.
	restartAfter time.Time
	failing      bool

	mu    sync.Mutex
	stats CheckpointStats
}

func startCheckpointer(db *sql.DB, writer *sqlx.DB, log *slog.Logger, interval time.Duration) *checkpointer {
	if interval <= 0 {
		interval = DefaultCheckpointInterval
	}
	ctx, stop := context.WithCancel(context.Background())
	c := &checkpointer{db: db, writer: writer, log: log, interval: interval, stop: stop, done: make(chan struct{})}
	go c.run(ctx)
	return c
}

func (c *checkpointer) run(ctx context.Context) {
	defer close(c.done)
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.round(ctx, time.Now())
		}
	}
}

// round runs one PASSIVE checkpoint: it copies what no reader still needs
// and waits for nobody. When that folded a long WAL whole, it also starts
// it over (restart).
func (c *checkpointer) round(ctx context.Context, now time.Time) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	restarted, gaveUp, err := c.checkpoint(ctx, now)
	c.mu.Lock()
	c.stats.Rounds++
	if restarted {
		c.stats.Restarts++
	}
	if gaveUp {
		c.stats.GaveUp++
	}
	if err != nil {
		c.stats.Failed++
	}
	c.mu.Unlock()
	// One line when rounds start failing and one when they recover, not
	// one a round.
	switch {
	case err != nil && !c.failing && ctx.Err() == nil:
		c.log.WarnContext(ctx, "SQLite checkpoints are failing; the WAL grows until they succeed", "err", err)
		c.failing = true
	case err == nil && c.failing:
		c.log.InfoContext(ctx, "SQLite checkpoints succeed again")
		c.failing = false
	}
}

func (c *checkpointer) checkpoint(ctx context.Context, now time.Time) (restarted, gaveUp bool, err error) {
	var busy, frames, folded int64
	if err := c.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &folded); err != nil {
		return false, false, fmt.Errorf("checkpoint: %w", err)
	}
	c.note(frames, folded)
	// Only a WAL folded whole is started over: one a reader still needs
	// part of would hold the round, and every writer behind it, for all
	// of restartWait.
	if frames < walRestartFrames || folded != frames || now.Before(c.restartAfter) {
		return false, false, nil
	}
	// This process's writers take turns on one connection, the next
	// going in as soon as the last is done, so the restart meets SQLite's
	// lock free only for microseconds at a time. A review's test, on a
	// machine busy with other load, saw restarts given up and the WAL at
	// 26,000-47,000 pages; holding that connection keeps this process's
	// writers out while the restart waits for readers.
	holdCtx, cancel := context.WithTimeout(ctx, restartWait)
	held, err := c.writer.Connx(holdCtx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return false, false, fmt.Errorf("checkpoint restart: %w", ctx.Err())
		}
		c.restartAfter = now.Add(restartBackoff)
		return false, true, nil
	}
	defer held.Close()
	if err := c.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &frames, &folded); err != nil {
		return false, false, fmt.Errorf("checkpoint restart: %w", err)
	}
	if busy != 0 {
		c.restartAfter = now.Add(restartBackoff)
		return false, true, nil
	}
	c.note(frames, folded)
	return true, false, nil
}

// note keeps the WAL's length; SQLite reports -1 when it could not tell.
func (c *checkpointer) note(frames, folded int64) {
	if frames < 0 || folded < 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.WALFrames, c.stats.Folded = frames, folded
}

// close stops the rounds, interrupting one that runs, and closes the
// checkpointer's connection; the Store's last connection to close folds
// what is left.
func (c *checkpointer) close() error {
	c.stop()
	<-c.done
	return c.db.Close()
}

func (c *checkpointer) snapshot() CheckpointStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}
