package store

import (
	"context"
	"sync"

	"github.com/jmoiron/sqlx"
)

// stmts keeps prepared statements for the queries every device check-in
// and SCEP request runs: SQLite spends more time parsing a statement than
// running these lookups, and PostgreSQL saves a round of planning.
type stmts struct {
	mu sync.Mutex
	m  map[string]*sqlx.Stmt
}

// prepared returns a prepared statement for query (with ? placeholders).
func (s *Store) prepared(ctx context.Context, query string) (*sqlx.Stmt, error) {
	s.stmts.mu.Lock()
	defer s.stmts.mu.Unlock()
	if st, ok := s.stmts.m[query]; ok {
		return st, nil
	}
	st, err := s.db.PreparexContext(ctx, s.db.Rebind(query))
	if err != nil {
		return nil, err
	}
	if s.stmts.m == nil {
		s.stmts.m = map[string]*sqlx.Stmt{}
	}
	s.stmts.m[query] = st
	return st, nil
}

// getPrepared runs a single-row query through a prepared statement. It is
// for lookups by index whose cost does not grow with a table: on SQLite
// they are not interrupted once started (withSQLiteReader).
func (s *Store) getPrepared(ctx context.Context, dest any, query string, args ...any) error {
	if s.write != nil {
		return s.withSQLiteReader(ctx, func(ctx context.Context, c *sqlx.Conn) error {
			return c.GetContext(ctx, dest, query, args...)
		})
	}
	st, err := s.prepared(ctx, query)
	if err != nil {
		return err
	}
	return st.GetContext(ctx, dest, args...)
}

// withSQLiteReader runs fn's one short read on a connection of SQLite's
// lookup pool, waited for as long as ctx allows, under ctx without its end.
// These are the lookups every check-in and SCEP request makes, by index:
// nothing in them is worth interrupting, and a query under a context that
// can end costs two goroutines (database/sql's and the driver's, each to
// cancel it), each woken on the other core at its start and end. The
// connection keeps its statements (sqlitestmts.go), as a prepared
// statement would. The longest such a read can wait is SQLite's
// busy_timeout, reached only while a WAL is recovered after a crash.
func (s *Store) withSQLiteReader(ctx context.Context, fn func(ctx context.Context, c *sqlx.Conn) error) error {
	c, err := s.lookup.Connx(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(context.WithoutCancel(ctx), c)
}

func (s *Store) closeStmts() {
	s.stmts.mu.Lock()
	defer s.stmts.mu.Unlock()
	for _, st := range s.stmts.m {
		st.Close()
	}
	s.stmts.m = nil
}
