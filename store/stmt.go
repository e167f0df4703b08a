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

// getPrepared runs a single-row query through a prepared statement.
func (s *Store) getPrepared(ctx context.Context, dest any, query string, args ...any) error {
	st, err := s.prepared(ctx, query)
	if err != nil {
		return err
	}
	return st.GetContext(ctx, dest, args...)
}

func (s *Store) closeStmts() {
	s.stmts.mu.Lock()
	defer s.stmts.mu.Unlock()
	for _, st := range s.stmts.m {
		st.Close()
	}
	s.stmts.m = nil
}
