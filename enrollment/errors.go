package enrollment

import "errors"

// Outcomes callers branch on. Stores wrap them with context.
var (
	// ErrNotFound means the named record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means the change collides with existing state (a duplicate
	// key, or a record no longer in the state the change expects).
	ErrConflict = errors.New("conflict")
	// ErrInvalid means the input is malformed; the error text says how.
	ErrInvalid = errors.New("invalid input")
	// ErrForbidden means the actor may not do this.
	ErrForbidden = errors.New("forbidden")
)
