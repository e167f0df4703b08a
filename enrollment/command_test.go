package enrollment

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"
)

// commandLog is a CommandStore that says which of its methods answered.
type commandLog struct{ calls []string }

func (c *commandLog) EnqueueCommands(context.Context, string, []NewCommand, string, time.Time, AuditEvent) error {
	return nil
}
func (c *commandLog) EnqueueFleet(_ context.Context, items []FleetCommand, _ string, _ time.Time) error {
	c.calls = append(c.calls, "fleet")
	return nil
}
func (c *commandLog) RecordResult(context.Context, string, string, CommandStatus, []byte, time.Time) error {
	c.calls = append(c.calls, "result")
	return nil
}
func (c *commandLog) NextCommand(context.Context, string, bool, time.Time) (Command, error) {
	c.calls = append(c.calls, "next")
	return Command{}, nil
}
func (c *commandLog) NextQuestion(context.Context, string, bool, time.Time) (Command, error) {
	c.calls = append(c.calls, "question")
	return Command{}, nil
}
func (c *commandLog) ListCommands(context.Context, string) ([]Command, error) { return nil, nil }

// TestNextByState: an approved device gets its queue; a pending one only
// the pre-approval question; any other state nothing at all.
func TestNextByState(t *testing.T) {
	for _, tc := range []struct {
		state State
		want  string
		err   error
	}{
		{StateApproved, "next", nil},
		{StatePending, "question", nil},
		{StateDenied, "", ErrForbidden},
		{StateSuperseded, "", ErrForbidden},
		{StateUnenrolled, "", ErrForbidden},
	} {
		log := &commandLog{}
		_, err := NewCommands(log, nil).Next(context.Background(), "e", tc.state, Report{Status: "Idle"})
		if !errors.Is(err, tc.err) || (tc.want != "" && (len(log.calls) != 1 || log.calls[0] != tc.want)) || (tc.want == "" && len(log.calls) != 0) {
			t.Errorf("%s: %v, calls %v", tc.state, err, log.calls)
		}
	}
}

// TestEnqueueFleetAllOrNothing: a fleet-wide request with one device that
// cannot take a command, a device named twice, no device or too many
// reaches the store not at all.
func TestEnqueueFleetAllOrNothing(t *testing.T) {
	many := func(n int) []Enrollment {
		out := make([]Enrollment, n)
		for i := range out {
			out[i] = Enrollment{ID: string(rune('a'+i%26)) + strconv.Itoa(i), State: StateApproved}
		}
		return out
	}
	for _, tc := range []struct {
		name        string
		enrollments []Enrollment
		err         error
	}{
		{"approved and pending", []Enrollment{{ID: "a", State: StateApproved}, {ID: "b", State: StatePending}}, nil},
		{"one denied", []Enrollment{{ID: "a", State: StateApproved}, {ID: "b", State: StateDenied}}, ErrConflict},
		{"one superseded", []Enrollment{{ID: "a", State: StateSuperseded}}, ErrConflict},
		{"one unenrolled", []Enrollment{{ID: "a", State: StateApproved}, {ID: "b", State: StateUnenrolled}}, ErrConflict},
		{"named twice", []Enrollment{{ID: "a", State: StateApproved}, {ID: "a", State: StateApproved}}, ErrInvalid},
		{"none", nil, ErrInvalid},
		{"the most", many(MaxFleetCommand), nil},
		{"one too many", many(MaxFleetCommand + 1), ErrInvalid},
	} {
		log := &commandLog{}
		cmds := make([]NewCommand, len(tc.enrollments))
		for i := range cmds {
			cmds[i] = NewCommand{UUID: strconv.Itoa(i), RequestType: "DeviceInformation"}
		}
		err := NewCommands(log, nil).EnqueueFleet(context.Background(), Actor{Name: "admin"}, tc.enrollments, cmds)
		if !errors.Is(err, tc.err) || (tc.err == nil) != (len(log.calls) == 1) {
			t.Errorf("%s: %v, calls %v", tc.name, err, log.calls)
		}
	}
}
