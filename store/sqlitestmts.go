package store

import (
	"context"
	"database/sql/driver"
	"errors"
)

// SQLite parses a statement for longer than it takes to run most of ours
// (a profile of Authenticate put a third of the store's time in the
// parser), and database/sql prepares every statement run in a transaction
// anew. Each SQLite connection therefore keeps the statements it has run,
// by their text: sqliteConnector opens such connections. PostgreSQL needs
// none of this: pgx keeps its own statement cache.

// maxConnStmts bounds one connection's statements; past it a kept
// statement is closed for each new one. maxKeptArgs keeps out the
// statements with long IN lists, whose text differs with every list
// length. It is 32, not 16, because the claim's INSERT of an enrollment
// has 25 arguments: a profile of the claim put a sixth of it in parsing
// that one statement.
const (
	maxConnStmts = 256
	maxKeptArgs  = 32
)

type sqliteConnector struct {
	dsn string
	drv driver.Driver
}

func (c sqliteConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	prep, ok1 := conn.(driver.ConnPrepareContext)
	begin, ok2 := conn.(driver.ConnBeginTx)
	exec, ok3 := conn.(driver.ExecerContext)
	query, ok4 := conn.(driver.QueryerContext)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		conn.Close()
		return nil, errors.New("sqlite: the driver's connection lacks a context method")
	}
	return &stmtConn{Conn: conn, prep: prep, begin: begin, exec: exec, query: query, stmts: map[string]*connStmt{}}, nil
}

func (c sqliteConnector) Driver() driver.Driver { return c.drv }

func isA[T any](v any) bool {
	_, ok := v.(T)
	return ok
}

// connStmt is a kept statement; busy while rows read from it are open,
// when a second query with the same text gets a statement of its own.
type connStmt struct {
	st   driver.Stmt
	busy bool
}

// stmtConn is a SQLite connection that keeps its statements. database/sql
// uses a connection from one goroutine at a time, so it needs no lock.
type stmtConn struct {
	driver.Conn
	// The connection's context methods, asserted once when it opened.
	prep  driver.ConnPrepareContext
	begin driver.ConnBeginTx
	exec  driver.ExecerContext
	query driver.QueryerContext
	stmts map[string]*connStmt
}

func (c *stmtConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.prep.PrepareContext(ctx, query)
}

func (c *stmtConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.begin.BeginTx(ctx, opts)
}

func (c *stmtConn) Ping(ctx context.Context) error {
	if p, ok := c.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *stmtConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *stmtConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

// Close finalizes the kept statements before the connection: SQLite does
// not close a connection with statements left.
func (c *stmtConn) Close() error {
	var errs []error
	for _, s := range c.stmts {
		errs = append(errs, s.st.Close())
	}
	c.stmts = nil
	return errors.Join(append(errs, c.Conn.Close())...)
}

// kept returns the statement kept for query, preparing it the first time,
// or nil when query is not to be kept now.
func (c *stmtConn) kept(ctx context.Context, query string, args int) (*connStmt, error) {
	if args > maxKeptArgs {
		return nil, nil
	}
	if s, ok := c.stmts[query]; ok {
		if s.busy {
			return nil, nil
		}
		return s, nil
	}
	if len(c.stmts) >= maxConnStmts && !c.evictOne() {
		return nil, nil
	}
	st, err := c.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if !isA[driver.StmtExecContext](st) || !isA[driver.StmtQueryContext](st) {
		return nil, st.Close()
	}
	s := &connStmt{st: st}
	c.stmts[query] = s
	return s, nil
}

// evictOne closes a kept statement that no rows are open on, the first
// the map's random order offers, so that a connection past its bound
// still keeps what it runs now: the statements a server runs all the
// time come back at their next use, the rare ones (IN lists of unusual
// lengths) do not fill the bound for good.
func (c *stmtConn) evictOne() bool {
	for q, s := range c.stmts {
		if s.busy {
			continue
		}
		delete(c.stmts, q)
		return s.st.Close() == nil
	}
	return false
}

func (c *stmtConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	s, err := c.kept(ctx, query, len(args))
	if err != nil {
		return nil, err
	}
	if s == nil {
		return c.exec.ExecContext(ctx, query, args)
	}
	return s.st.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (c *stmtConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	s, err := c.kept(ctx, query, len(args))
	if err != nil {
		return nil, err
	}
	if s == nil {
		return c.query.QueryContext(ctx, query, args)
	}
	rows, err := s.st.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	s.busy = true
	return &keptRows{Rows: rows, s: s}, nil
}

// keptRows frees its statement for the next query when closed.
type keptRows struct {
	driver.Rows
	s *connStmt
}

func (r *keptRows) Close() error {
	r.s.busy = false
	return r.Rows.Close()
}
