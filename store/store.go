package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/vestibule-mdm/vestibule/migrations"
	dsnpkg "github.com/vestibule-mdm/vestibule/store/dsn"
)

// Dialects.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// Options tune Open.
type Options struct {
	MaxOpenConns int
	Logger       *slog.Logger
	// Migrations replaces the embedded migrations; tests use it.
	Migrations fs.FS
	// Now replaces the clock; tests use it.
	Now func() time.Time
	// Webhook: a webhook is configured, so each new pending enrollment
	// queues its announcement in the webhook outbox.
	Webhook bool
	// CheckpointInterval is how often SQLite's WAL is folded back into
	// the database file (checkpoint.go); zero means
	// DefaultCheckpointInterval.
	CheckpointInterval time.Duration
	// PostgresTracer, when set, sees every statement sent to PostgreSQL:
	// pgx's tracing hook, which OpenTelemetry adapters implement; tests
	// count an operation's statements with it.
	PostgresTracer pgx.QueryTracer
}

// Store is the database behind every store interface.
type Store struct {
	db *sqlx.DB
	// write is SQLite's one writing connection; nil on PostgreSQL, where
	// writes go to db. See withWriter.
	write *sqlx.DB
	// lookup is SQLite's pool for the lookups of device requests
	// (withSQLiteReader); nil on PostgreSQL.
	lookup *sqlx.DB
	// writeWait bounds the wait for write.
	writeWait  time.Duration
	dialect    string
	migrations fs.FS
	log        *slog.Logger
	now        func() time.Time
	webhook    bool
	// depMu keeps one DEP sync at a time on SQLite (one process).
	depMu sync.Mutex
	stmts stmts
	// ckpt folds SQLite's WAL back; nil on PostgreSQL.
	ckpt *checkpointer
	// group commits SQLite's transactions together (sqlitegroup.go).
	group writeGroup
}

// Open connects to the database a DSN names (postgres://... or
// sqlite:PATH). It does not migrate; call Migrate.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	kind, target, err := dsnpkg.Split(dsn)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxOpenConns < 1 {
		opts.MaxOpenConns = 10
	}
	s := &Store{dialect: kind, log: opts.Logger, now: opts.Now, webhook: opts.Webhook, writeWait: busyTimeout}
	switch kind {
	case SQLite:
		var pools sqlitePools
		pools, err = openSQLite(target, opts)
		s.db, s.lookup, s.write = pools.read, pools.lookup, pools.write
	case Postgres:
		s.db, err = openPostgres(target, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s.migrations = opts.Migrations
	if s.migrations == nil {
		s.migrations = migrations.For(kind)
	}
	err = s.db.PingContext(ctx)
	if err == nil && s.write != nil {
		err = errors.Join(s.lookup.PingContext(ctx), s.write.PingContext(ctx))
	}
	if err != nil {
		s.closeDBs()
		return nil, fmt.Errorf("open store: ping %s: %w", kind, err)
	}
	if kind == SQLite {
		// The checkpointer's own connection waits restartWait, not
		// busyTimeout, for readers and writers.
		ck, err := sql.Open("sqlite", sqliteDSN(target, restartWait))
		if err != nil {
			s.closeDBs()
			return nil, fmt.Errorf("open store: checkpointer: %w", err)
		}
		ck.SetMaxOpenConns(1)
		s.ckpt = startCheckpointer(ck, s.write, s.log, opts.CheckpointInterval)
	}
	return s, nil
}

// busyTimeout is how long a SQLite connection waits for another's write
// lock before it fails.
const busyTimeout = 10 * time.Second

func sqliteDSN(path string, busy time.Duration) string {
	return "file:" + path + fmt.Sprintf("?_pragma=journal_mode(WAL)&_pragma=busy_timeout(%d)", busy.Milliseconds()) +
		"&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_pragma=wal_autocheckpoint(0)" +
		fmt.Sprintf("&_pragma=journal_size_limit(%d)", walSizeLimit) + "&_txlock=immediate"
}

// sqliteLookupConns is how many SQLite connections make the lookups of
// device requests at once, each kept open with its page cache and
// statements. sqliteIdleConns is how many of the other readers' are kept.
const (
	sqliteLookupConns = 8
	sqliteIdleConns   = 4
)

// sqlitePools are the connections to one SQLite file.
type sqlitePools struct {
	// read serves the console, the API and the background loops, whose
	// reads can take long (a filtered audit log reads the table).
	read *sqlx.DB
	// lookup serves the lookups by index every device request makes
	// (withSQLiteReader): they never queue behind a slow read.
	lookup *sqlx.DB
	// write is the one writing connection (withWriter).
	write *sqlx.DB
}

func openSQLite(path string, opts Options) (sqlitePools, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return sqlitePools{}, fmt.Errorf("sqlite: %w", err)
	}
	// Create the file ourselves so it is private from the first byte; SQLite
	// gives its -wal and -shm files the same mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return sqlitePools{}, fmt.Errorf("sqlite: %w", err)
	}
	f.Close()
	// WAL lets readers run beside the writer; busy_timeout makes a second
	// writer wait instead of failing; immediate transactions take the write
	// lock up front, so two read-then-write transactions cannot deadlock.
	// No connection checkpoints when it commits: the Store's checkpointer
	// does (checkpoint.go).
	dsn := sqliteDSN(path, busyTimeout)
	// The registered driver, opened through connections that keep their
	// statements (sqlitestmts.go).
	plain, err := sql.Open("sqlite", dsn)
	if err != nil {
		return sqlitePools{}, fmt.Errorf("sqlite: %w", err)
	}
	connector := sqliteConnector{dsn: dsn, drv: plain.Driver()}
	plain.Close()
	// The console's and the API's reads keep four idle connections (with
	// their statements and page caches; database/sql's default is two):
	// no device request reads through them, and each holds several MB.
	read := sql.OpenDB(connector)
	read.SetMaxOpenConns(opts.MaxOpenConns)
	read.SetMaxIdleConns(min(opts.MaxOpenConns, sqliteIdleConns))
	// The lookups keep eight: with 100,000 devices under load, keeping
	// twenty took the process to 93-120 MB, keeping four cost a fifth
	// more CPU per check-in, eight gave 61-78 MB at the CPU of twenty.
	// They open no more than they keep: at concurrency 16, connections
	// opened beyond the eight, cold (an empty cache, statements parsed
	// again) and closed after one use, cost a third more CPU per idle
	// check-in. They are CPU work on a few cores, so a ninth waits for a
	// connection instead. Their pool of their own keeps the console's
	// slow reads from taking them.
	lookup := sql.OpenDB(connector)
	lookup.SetMaxOpenConns(min(opts.MaxOpenConns, sqliteLookupConns))
	lookup.SetMaxIdleConns(min(opts.MaxOpenConns, sqliteLookupConns))
	// The writer is kept open, and with it its page cache and statements.
	// Its temporary files are kept in memory: a write committed in a group
	// (sqlitegroup.go) runs in a savepoint, and SQLite copies each page
	// that existed when the savepoint opened into the savepoint's journal
	// before changing it, spilled to a file past 64 KiB. Spilled, those
	// writes were a third of a grouped claim's CPU (pprof of
	// BenchmarkClaimReservationConcurrent). The copies last until the
	// savepoint is released; bulk writes run alone, outside savepoints
	// (inTxAlone), so they stay a few dozen pages. The writer's statement
	// journals are in memory too: inside a transaction, a statement that
	// changes many rows (a chunk of 500 deliveries) keeps a copy of each
	// page it changes until it ends.
	writer := sql.OpenDB(sqliteConnector{dsn: dsn + "&_pragma=temp_store(memory)", drv: connector.drv})
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	// sqlx picks the placeholder style by driver name; "sqlite3" means "?".
	return sqlitePools{read: sqlx.NewDb(read, "sqlite3"), lookup: sqlx.NewDb(lookup, "sqlite3"), write: sqlx.NewDb(writer, "sqlite3")}, nil
}

func openPostgres(dsn string, opts Options) (*sqlx.DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	cfg.Tracer = opts.PostgresTracer
	// Parsed again for every connection, as the driver does by name: the
	// parse reads sslrootcert, sslcert, the passfile and PG* variables,
	// which may have been rotated since the start.
	db := stdlib.OpenDB(*cfg, stdlib.OptionBeforeConnect(func(_ context.Context, c *pgx.ConnConfig) error {
		fresh, err := pgx.ParseConfig(dsn)
		if err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		fresh.Tracer = opts.PostgresTracer
		*c = *fresh
		return nil
	}))
	db.SetMaxOpenConns(opts.MaxOpenConns)
	db.SetMaxIdleConns(opts.MaxOpenConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return sqlx.NewDb(db, "pgx"), nil
}

// Dialect is SQLite or Postgres.
func (s *Store) Dialect() string { return s.dialect }

// Close closes the database.
func (s *Store) Close() error {
	var errs []error
	if s.ckpt != nil {
		errs = append(errs, s.ckpt.close())
	}
	s.closeStmts()
	return errors.Join(append(errs, s.closeDBs())...)
}

func (s *Store) closeDBs() error {
	var errs []error
	if s.write != nil {
		errs = append(errs, s.write.Close(), s.lookup.Close())
	}
	return errors.Join(append(errs, s.db.Close())...)
}

// Checkpoints says what SQLite's checkpointer has done; zero on
// PostgreSQL.
func (s *Store) Checkpoints() CheckpointStats {
	if s.ckpt == nil {
		return CheckpointStats{}
	}
	return s.ckpt.snapshot()
}

// Ping checks the database answers as devices need it: on SQLite through
// the lookups' pool, not behind the writer (a bulk approval) or the
// console's slow reads.
func (s *Store) Ping(ctx context.Context) error {
	if s.lookup != nil {
		return s.lookup.PingContext(ctx)
	}
	return s.db.PingContext(ctx)
}

// DB exposes the handle for tests and benchmarks in other packages.
func (s *Store) DB() *sqlx.DB { return s.db }

func (s *Store) provider() (*goose.Provider, error) {
	d := goose.DialectSQLite3
	var popts []goose.ProviderOption
	popts = append(popts, goose.WithDisableGlobalRegistry(true), goose.WithSlog(s.log))
	if s.dialect == Postgres {
		d = goose.DialectPostgres
		// Replicas starting together must not run the same migration twice.
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return nil, err
		}
		popts = append(popts, goose.WithSessionLocker(locker))
	}
	return goose.NewProvider(d, s.db.DB, s.migrations, popts...)
}

// Migrate applies every pending migration, each in its own transaction: a
// migration that fails leaves the database as the previous one left it.
// It returns the versions applied.
func (s *Store) Migrate(ctx context.Context) ([]int64, error) {
	p, err := s.provider()
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	results, err := p.Up(ctx)
	var pe *goose.PartialError
	if errors.As(err, &pe) {
		results = pe.Applied
	}
	var applied []int64
	for _, r := range results {
		if r.Error == nil {
			applied = append(applied, r.Source.Version)
		}
	}
	if err != nil {
		if pe != nil && pe.Failed != nil {
			return applied, fmt.Errorf("migrate: version %d (%s): %w", pe.Failed.Source.Version, filepath.Base(pe.Failed.Source.Path), pe.Err)
		}
		return applied, fmt.Errorf("migrate: %w", err)
	}
	return applied, nil
}

// MigrationStatus says which schema version the database has and which the
// binary wants.
type MigrationStatus struct {
	Current, Target int64
}

// Pending reports whether migrations are missing.
func (m MigrationStatus) Pending() bool { return m.Current < m.Target }

// Migrations reads the schema version.
func (s *Store) Migrations(ctx context.Context) (MigrationStatus, error) {
	p, err := s.provider()
	if err != nil {
		return MigrationStatus{}, fmt.Errorf("migration status: %w", err)
	}
	cur, target, err := p.GetVersions(ctx)
	if err != nil {
		return MigrationStatus{}, fmt.Errorf("migration status: %w", err)
	}
	return MigrationStatus{Current: cur, Target: target}, nil
}

// inTx runs fn in a transaction, committed when fn returns nil. On
// SQLite, transactions that wait for the writer together are committed
// together, each in a savepoint (sqlitegroup.go): fn runs on whichever
// caller's goroutine leads, under its own ctx. It must not write through
// the Store again, nor end its goroutine (runtime.Goexit, t.FailNow).
func (s *Store) inTx(ctx context.Context, fn func(tx txn) error) error {
	return s.inTxKind(ctx, grouped, fn)
}

// inTxAlone is inTx for a bulk transaction (a fleet-wide command, a
// sync of thousands of rows): on SQLite it is committed by itself, not
// in a savepoint, whose copies of the pages it changes would be kept in
// memory.
func (s *Store) inTxAlone(ctx context.Context, fn func(tx txn) error) error {
	return s.inTxKind(ctx, alone, fn)
}

func (s *Store) inTxKind(ctx context.Context, kind writeKind, fn func(tx txn) error) error {
	if s.write != nil {
		return s.inGroup(ctx, kind, false, fn)
	}
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// txn is a transaction as the statements in it see it: *sqlx.Tx on
// PostgreSQL, SQLite's writing connection inside BEGIN IMMEDIATE
// otherwise (sqliteWriter).
type txn interface {
	sqlx.QueryerContext
	execer
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	GetContext(ctx context.Context, dest any, query string, args ...any) error
	SelectContext(ctx context.Context, dest any, query string, args ...any) error
}

// execNamed runs a write whose arguments are named after arg's db tags.
func execNamed(ctx context.Context, tx execer, query string, arg any) (sql.Result, error) {
	q, args, err := sqlx.Named(query, arg)
	if err != nil {
		return nil, err
	}
	return tx.ExecContext(ctx, tx.Rebind(q), args...)
}

// exec runs one statement that writes, as a transaction of its own
// (withWriter).
func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return s.execKind(ctx, grouped, query, args...)
}

// execAlone is exec for a statement that may change many rows (a purge):
// on SQLite it is never committed with others (inTxAlone says why).
func (s *Store) execAlone(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return s.execKind(ctx, alone, query, args...)
}

func (s *Store) execKind(ctx context.Context, kind writeKind, query string, args ...any) (sql.Result, error) {
	var res sql.Result
	err := s.writeStatement(ctx, kind, func(w writer) (err error) {
		res, err = w.ExecContext(ctx, w.Rebind(query), args...)
		return err
	})
	return res, err
}

// getWritten runs one statement that writes and returns a row (RETURNING),
// as a transaction of its own (withWriter).
func (s *Store) getWritten(ctx context.Context, dest any, query string, args ...any) error {
	return s.withWriter(ctx, func(w writer) error {
		return w.GetContext(ctx, dest, w.Rebind(query), args...)
	})
}

// writer is where writes run: *sqlx.DB on PostgreSQL, SQLite's one
// writing connection otherwise.
type writer interface {
	execer
	GetContext(ctx context.Context, dest any, query string, args ...any) error
}

// execer runs a write in a transaction or on the writer.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	Rebind(query string) string
}

// withWriter runs fn where this process's writes go. SQLite lets one
// writer in at a time; writers racing for its lock back off by sleeping
// (1 ms, 2 ms, 5 ms, ... up to 100 ms a try), so under load the last of
// them waited far longer than the writes took: Authenticate's p99 was
// 56–106 ms with 1,000 devices at concurrency 8. On SQLite every write
// therefore goes through one connection; writers wait for it in this
// process, and one goes in as soon as it is free (p99 13–23 ms). The wait
// is bounded as SQLite's own was, by writeWait (busyTimeout; inGroup says
// how). Other processes (the CLI) still meet this one at SQLite's lock;
// the checkpointer holds this connection while it restarts the WAL.
//
// fn runs exactly one statement. On SQLite it is a transaction of its
// own: with other writes waiting it is committed with them, in a
// savepoint (inTx), so a TokenUpdate's one UPDATE shares its COMMIT with
// the claims around it; by itself it runs in SQLite's own autocommit.
//
// fn must not write through the Store again: the connection is its.
func (s *Store) withWriter(ctx context.Context, fn func(w writer) error) error {
	return s.writeStatement(ctx, grouped, fn)
}

func (s *Store) writeStatement(ctx context.Context, kind writeKind, fn func(w writer) error) error {
	if s.write == nil {
		return fn(s.db)
	}
	return s.inGroup(ctx, kind, true, func(tx txn) error { return fn(tx) })
}

// withSQLiteWriter waits for SQLite's writing connection, at most
// writeWait, and runs fn on it.
func (s *Store) withSQLiteWriter(ctx context.Context, fn func(w sqliteWriter) error) error {
	waitCtx, cancel := context.WithTimeout(ctx, s.writeWait)
	conn, err := s.write.Connx(waitCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("wait for the database writer: %w", err)
	}
	defer conn.Close()
	return fn(sqliteWriter{c: conn})
}

// ms and fromMS convert between time and the Unix milliseconds every table
// stores.
func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

func fromNullMS(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMS(v.Int64)
	return &t
}

func nullMS(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: ms(*t), Valid: true}
}

// BackupSQLite writes a consistent copy of a SQLite store to path while it
// is in use (VACUUM INTO): what committed before the copy began is in it.
func (s *Store) BackupSQLite(ctx context.Context, path string) error {
	if s.dialect != SQLite {
		return errors.New("backup: only a SQLite store is copied this way; use pg_dump for PostgreSQL")
	}
	if strings.ContainsAny(path, "'\x00") {
		return fmt.Errorf("backup: %q: quotes are not allowed in the path", path)
	}
	if _, err := s.db.ExecContext(ctx, `VACUUM INTO '`+path+`'`); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}
