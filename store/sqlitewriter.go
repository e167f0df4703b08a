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
// writes on it see it. Its statements, once started, run to their end
// even if their context ends meanwhile, and its transactions are BEGIN
// IMMEDIATE and COMMIT run on it, not database/sql's Tx. Both for the same
// reason: goroutines. database/sql starts one for every Tx and one for
// every query in it, and the driver one for every statement whose context
// can end, each to cancel its work; each start and end woke a thread on
// the other core (futex calls outnumbered the transactions four to one).
// On this connection the statements are short writes, one at a time, so
// there is little to interrupt: a statement does not start once its
// context has ended, so a long transaction (a fleet-wide command) stops
// at its next statement, and a transaction whose context ended is rolled
// back, not committed, as database/sql's Tx does. Writes that queued
// for the connection together share one such transaction, each in a
// savepoint of its own (sqlitegroup.go).
type sqliteWriter struct {
	c *sqlx.Conn
	// open are the rows queries in a transaction opened. A sql.Conn
	// does not close while rows on it are open, and nothing else would
	// close these: they are closed before the transaction ends.
	open *[]*sql.Rows
}

func (w sqliteWriter) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return w.c.ExecContext(w.statementContext(ctx), query, args...)
}

func (w sqliteWriter) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	rows, err := w.c.QueryContext(w.statementContext(ctx), query, args...)
	if err == nil && w.open != nil {
		*w.open = append(*w.open, rows)
	}
	return rows, err
}

func (w sqliteWriter) QueryxContext(ctx context.Context, query string, args ...any) (*sqlx.Rows, error) {
	rows, err := w.c.QueryxContext(w.statementContext(ctx), query, args...)
	if err == nil && w.open != nil {
		*w.open = append(*w.open, rows.Rows)
	}
	return rows, err
}

// QueryRowxContext's row holds its rows open until it is scanned, as
// every caller does at once.
func (w sqliteWriter) QueryRowxContext(ctx context.Context, query string, args ...any) *sqlx.Row {
	return w.c.QueryRowxContext(w.statementContext(ctx), query, args...)
}

func (w sqliteWriter) GetContext(ctx context.Context, dest any, query string, args ...any) error {
	return w.c.GetContext(w.statementContext(ctx), dest, query, args...)
}

func (w sqliteWriter) SelectContext(ctx context.Context, dest any, query string, args ...any) error {
	return w.c.SelectContext(w.statementContext(ctx), dest, query, args...)
}

func (w sqliteWriter) Rebind(query string) string { return w.c.Rebind(query) }

// statementContext is ctx without its end, unless it has ended already:
// then database/sql fails the statement at once, with ctx's error.
func (w sqliteWriter) statementContext(ctx context.Context) context.Context {
	if ctx.Err() != nil {
		return ctx
	}
	return context.WithoutCancel(ctx)
}

// transaction runs t's fn between BEGIN IMMEDIATE and COMMIT, and rolls
// back when fn fails or panics (the panic is returned, as runFn does),
// when t's context has ended, or when COMMIT fails (SQLite can stay in the
// transaction then).
func (w sqliteWriter) transaction(t *groupTx) (err error, panicked any) {
	if _, err := w.ExecContext(t.ctx, `BEGIN IMMEDIATE`); err != nil {
		return fmt.Errorf("begin: %w", err), nil
	}
	committed := false
	defer func() {
		if committed {
			return
		}
		if rerr := w.rollback(); rerr != nil && err != nil {
			err = errors.Join(err, fmt.Errorf("rollback: %w", rerr))
		}
	}()
	if err, panicked = w.runFn(t); err != nil || panicked != nil {
		return err, panicked
	}
	if _, err := w.c.ExecContext(context.Background(), `COMMIT`); err != nil {
		return fmt.Errorf("commit: %w", err), nil
	}
	committed = true
	return nil, nil
}

// runFn runs one write's fn inside its transaction or savepoint: it fails
// when fn fails or panics (the panic is returned, for its caller to raise
// on its own goroutine), or when its context ended meanwhile. Rows fn
// left open are closed (sqliteWriter.open says why).
func (w sqliteWriter) runFn(t *groupTx) (err error, panicked any) {
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

// rollback ends the connection's transaction, not under any caller's
// context: a caller that went away still gets its work undone. A
// connection that cannot roll back is closed: left inside its transaction
// it would fail every later BEGIN, and one whose transaction SQLite ended
// is not trusted either (a statement of fn's may have ended it).
func (w sqliteWriter) rollback() error {
	_, err := w.c.ExecContext(context.Background(), `ROLLBACK`)
	if err != nil {
		_ = w.c.Raw(func(any) error { return driver.ErrBadConn })
	}
	return err
}
