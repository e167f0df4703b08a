package enrollment

import (
	"errors"
	"strings"
)

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

// Explain is an error as a person reads it: the words after the last
// domain error's name ("reserve: forbidden: x is not a known user" reads
// "x is not a known user"). Errors without one read as they are.
func Explain(err error) string {
	msg := err.Error()
	cut := -1
	for _, sentinel := range []error{ErrNotFound, ErrConflict, ErrInvalid, ErrForbidden} {
		marker := sentinel.Error() + ": "
		if i := strings.LastIndex(msg, marker); i >= 0 && errors.Is(err, sentinel) && i+len(marker) > cut {
			cut = i + len(marker)
		}
	}
	if cut < 0 || cut >= len(msg) {
		return msg
	}
	return msg[cut:]
}
