package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// sqliteWriter is SQLite's one writing connection (withWriter), as the
// writes on it see it. Its statements run to their end even when their
// context ends before, and its transactions are BEGIN IMMEDIATE and COMMIT
// run on it, not database/sql's Tx. Both for the same reason: goroutines.
// database/sql starts one for every Tx and one for every query in it, and
// the driver one for every statement whose context can end, each to
// cancel its work; each start and end woke a thread on the other core
// (futex calls outnumbered the transactions four to one). On this
// connection the statements are short writes, one at a time, so there is
// nothing worth interrupting. A transaction whose context ended is still
// rolled back, not committed, as database/sql's Tx does.
type sqliteWriter struct{ c *sqlx.Conn }

func (w sqliteWriter) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return w.c.ExecContext(context.WithoutCancel(ctx), query, args...)
}

func (w sqliteWriter) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return w.c.QueryContext(context.WithoutCancel(ctx), query, args...)
}

func (w sqliteWriter) QueryxContext(ctx context.Context, query string, args ...any) (*sqlx.Rows, error) {
	return w.c.QueryxContext(context.WithoutCancel(ctx), query, args...)
}

func (w sqliteWriter) QueryRowxContext(ctx context.Context, query string, args ...any) *sqlx.Row {
	return w.c.QueryRowxContext(context.WithoutCancel(ctx), query, args...)
}

func (w sqliteWriter) GetContext(ctx context.Context, dest any, query string, args ...any) error {
	return w.c.GetContext(context.WithoutCancel(ctx), dest, query, args...)
}

func (w sqliteWriter) SelectContext(ctx context.Context, dest any, query string, args ...any) error {
	return w.c.SelectContext(context.WithoutCancel(ctx), dest, query, args...)
}

func (w sqliteWriter) Rebind(query string) string { return w.c.Rebind(query) }

// transaction runs fn between BEGIN IMMEDIATE and COMMIT, and rolls back
// when fn fails, panics, or COMMIT fails. A connection that cannot roll
// back is closed: left inside its transaction, it would fail every later
// BEGIN.
func (w sqliteWriter) transaction(ctx context.Context, fn func(tx txn) error) (err error) {
	if _, err := w.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	done := false
	defer func() {
		if done {
			return
		}
		if _, rerr := w.ExecContext(ctx, `ROLLBACK`); rerr != nil {
			_ = w.c.Raw(func(any) error { return driver.ErrBadConn })
			if err != nil {
				err = errors.Join(err, fmt.Errorf("rollback: %w", rerr))
			}
		}
	}()
	if err := fn(w); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if _, err := w.ExecContext(ctx, `COMMIT`); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	done = true
	return nil
}
