package store

import (
	"database/sql"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// isUniqueViolation tells a duplicate key apart from other failures in both
// databases.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		return sqErr.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || sqErr.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// isDeadlock tells a transaction PostgreSQL rolled back to break a
// deadlock: run again, it sees the other's outcome.
func isDeadlock(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "40P01"
}

// deadlockAttempts is how many times a transaction PostgreSQL rolls back
// as a deadlock is run in all.
const deadlockAttempts = 3

// retryDeadlocks runs the transaction fn again when PostgreSQL rolled it
// back to break a deadlock, deadlockAttempts times in all.
func retryDeadlocks(fn func() error) error {
	for attempt := 1; ; attempt++ {
		err := fn()
		if !isDeadlock(err) || attempt == deadlockAttempts {
			return err
		}
	}
}

// notFound maps sql.ErrNoRows to the domain's ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return enrollment.ErrNotFound
	}
	return err
}
