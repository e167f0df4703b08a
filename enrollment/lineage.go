package enrollment

import "time"

// Earlier is an enrollment that shares a new claim's UDID or serial: what
// the store finds, and all the lineage rule needs of it.
type Earlier struct {
	ID        string
	UserID    string
	State     State
	CreatedAt time.Time
}

// Lineage is how a new enrollment relates to the device's earlier ones.
type Lineage struct {
	// PreviousID is the newest earlier enrollment that is not a conflict:
	// the device enrolled before, and waits for approval again.
	PreviousID string
	// ConflictID is the newest pending or approved enrollment of another
	// user with the same UDID or serial: the new one claims a device that
	// someone else holds. Approving the new one never touches it.
	ConflictID string
}

// ReEnrollment reports whether the device enrolled before.
func (l Lineage) ReEnrollment() bool { return l.PreviousID != "" }

// active is whether an enrollment still stands for a device in use.
func active(s State) bool { return s == StatePending || s == StateApproved }

// ClassifyClaim places a new enrollment of userID among the earlier
// enrollments that share its UDID or serial (any order). Identifiers a
// device reports are claims, so a match with another user's active device
// is a conflict to show, never a reason to retire that device.
func ClassifyClaim(userID string, earlier []Earlier) Lineage {
	var l Lineage
	var prevAt, conflictAt time.Time
	newer := func(e Earlier, at time.Time, id string) bool {
		return id == "" || e.CreatedAt.After(at) || e.CreatedAt.Equal(at) && e.ID < id
	}
	for _, e := range earlier {
		if e.UserID != userID && active(e.State) {
			if newer(e, conflictAt, l.ConflictID) {
				l.ConflictID, conflictAt = e.ID, e.CreatedAt
			}
			continue
		}
		if newer(e, prevAt, l.PreviousID) {
			l.PreviousID, prevAt = e.ID, e.CreatedAt
		}
	}
	return l
}

// Superseded lists the enrollments that approving a new enrollment of
// userID retires: the same user's earlier pending or approved enrollments
// of the device. Another user's are never among them.
func Superseded(userID, newID string, earlier []Earlier) []string {
	var ids []string
	for _, e := range earlier {
		if e.ID != newID && e.UserID == userID && active(e.State) {
			ids = append(ids, e.ID)
		}
	}
	return ids
}
