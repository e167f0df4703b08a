package store

import (
	"context"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
)

// SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL
// past 1,000 pages, on the request that happened to commit. Under
// concurrent load it cannot finish while readers hold older snapshots,
// so every later COMMIT tries again, each try with two fsyncs: a profile
// of 3,000 devices authenticating at concurrency 8 put 18 % of the
// server's CPU in checkpoints run by COMMIT, more than the WAL writes of
// the transactions themselves. Connections are therefore opened with
// wal_autocheckpoint(0), and one goroutine per Store folds the WAL back
// into the database file at a steady pace: each page once per round, however
// often it was written since, and no request waits for it.

// DefaultCheckpointInterval is how often the WAL is folded back when
// Options.CheckpointInterval is zero.
const DefaultCheckpointInterval = 500 * time.Millisecond

// walSizeLimit is what a WAL file is cut back to once a checkpoint has
// folded it whole; a burst that grew it does not keep the disk space.
const walSizeLimit = 32 << 20

// walRestartFrames is the WAL length, in pages, at which a round also
// restarts it. A PASSIVE round folds the WAL but never restarts it: the
// next writer does, when it begins after a round folded everything, and
// under writes that never pause one always begins during a round, so the
// WAL would only grow. A RESTART round waits for the readers of the old
// WAL to finish and holds new writers meanwhile, a few milliseconds.
const walRestartFrames = 4096

// CheckpointStats says what the checkpointer has done since Open.
type CheckpointStats struct {
	Rounds   int64 // checkpoints run
	Restarts int64 // rounds that restarted a long WAL (walRestartFrames)
	Failed   int64 // rounds that returned an error
	// WALFrames is the WAL's length at the last round, in pages, and
	// Folded how many of them are in the database file. The WAL starts
	// again from its first page once it is folded whole and a writer
	// begins.
	WALFrames, Folded int64
}

type checkpointer struct {
	db       *sqlx.DB
	log      *slog.Logger
	interval time.Duration
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	mu    sync.Mutex
	stats CheckpointStats
}

func startCheckpointer(db *sqlx.DB, log *slog.Logger, interval time.Duration) *checkpointer {
	if interval <= 0 {
		interval = DefaultCheckpointInterval
	}
	c := &checkpointer{db: db, log: log, interval: interval, stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

func (c *checkpointer) run() {
	defer close(c.done)
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.round(context.Background())
		}
	}
}

// round runs one PASSIVE checkpoint: it copies what no reader still needs
// and waits for nobody, so it never holds up a request. Past
// walRestartFrames it also restarts the WAL, waiting at most
// restartWait for readers.
func (c *checkpointer) round(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	restarted, err := c.checkpoint(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Rounds++
	if restarted {
		c.stats.Restarts++
	}
	if err != nil {
		c.stats.Failed++
		c.log.WarnContext(ctx, "SQLite checkpoint failed", "err", err)
	}
}

// restartWait bounds how long a RESTART round holds writers while it
// waits for the old WAL's readers; one that runs out leaves the WAL
// folded, and the next round tries again.
const restartWait = 100 * time.Millisecond

func (c *checkpointer) checkpoint(ctx context.Context) (restarted bool, err error) {
	conn, err := c.db.Connx(ctx)
	if err != nil {
		return false, fmt.Errorf("checkpoint: %w", err)
	}
	defer conn.Close()
	var busy, frames, folded int64
	if err := conn.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &folded); err != nil {
		return false, fmt.Errorf("checkpoint: %w", err)
	}
	c.note(frames, folded)
	if frames < walRestartFrames {
		return false, nil
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`, restartWait.Milliseconds())); err != nil {
		return false, fmt.Errorf("checkpoint: %w", err)
	}
	err = conn.QueryRowContext(ctx, `PRAGMA wal_checkpoint(RESTART)`).Scan(&busy, &frames, &folded)
	if _, rerr := conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`, busyTimeout.Milliseconds())); rerr != nil {
		// A connection that kept the short wait would fail writes other
		// requests expect to wait for: it is not given back to the pool.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		return false, fmt.Errorf("checkpoint: restore busy_timeout: %w", rerr)
	}
	if err != nil {
		return false, fmt.Errorf("checkpoint restart: %w", err)
	}
	c.note(frames, folded)
	return busy == 0, nil
}

func (c *checkpointer) note(frames, folded int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.WALFrames, c.stats.Folded = frames, folded
}

// close stops the rounds; the last connection's close folds what is left.
func (c *checkpointer) close() {
	c.stopOnce.Do(func() { close(c.stop) })
	<-c.done
}

func (c *checkpointer) snapshot() CheckpointStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}
