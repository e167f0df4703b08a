package enrollment

import (
	"reflect"
	"testing"
	"time"
)

func TestClassifyClaim(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	at := func(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }
	for _, tc := range []struct {
		name    string
		earlier []Earlier
		want    Lineage
	}{
		{"first enrollment", nil, Lineage{}},
		{"same user, approved", []Earlier{{"a1", "alice", StateApproved, at(1)}}, Lineage{PreviousID: "a1"}},
		{"same user, newest wins", []Earlier{{"a1", "alice", StateSuperseded, at(1)}, {"a2", "alice", StateApproved, at(2)}},
			Lineage{PreviousID: "a2"}},
		{"another user's approved device", []Earlier{{"b1", "bob", StateApproved, at(1)}}, Lineage{ConflictID: "b1"}},
		{"another user's pending device", []Earlier{{"b1", "bob", StatePending, at(1)}}, Lineage{ConflictID: "b1"}},
		{"another user's denied device is history, not a conflict", []Earlier{{"b1", "bob", StateDenied, at(1)}},
			Lineage{PreviousID: "b1"}},
		{"another user's retired device is history", []Earlier{{"b1", "bob", StateSuperseded, at(1)}, {"b2", "bob", StateUnenrolled, at(2)}},
			Lineage{PreviousID: "b2"}},
		{"both: own history and another's active device",
			[]Earlier{{"a1", "alice", StateApproved, at(1)}, {"b1", "bob", StateApproved, at(2)}},
			Lineage{PreviousID: "a1", ConflictID: "b1"}},
		{"the newest conflict", []Earlier{{"b1", "bob", StateApproved, at(3)}, {"c1", "carol", StateApproved, at(2)}},
			Lineage{ConflictID: "b1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ClassifyClaim("alice", tc.earlier)
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if got.ReEnrollment() != (tc.want.PreviousID != "") {
				t.Fatal("ReEnrollment disagrees with PreviousID")
			}
		})
	}
}

func TestSuperseded(t *testing.T) {
	earlier := []Earlier{
		{"new", "alice", StatePending, time.Time{}},
		{"a1", "alice", StateApproved, time.Time{}},
		{"a2", "alice", StatePending, time.Time{}},
		{"a3", "alice", StateDenied, time.Time{}},
		{"b1", "bob", StateApproved, time.Time{}},
		{"b2", "bob", StatePending, time.Time{}},
	}
	if got := Superseded("alice", "new", earlier); !reflect.DeepEqual(got, []string{"a1", "a2"}) {
		t.Fatalf("got %v: approval must retire only the same user's active enrollments", got)
	}
	if got := Superseded("carol", "new", earlier); got != nil {
		t.Fatalf("got %v", got)
	}
}
