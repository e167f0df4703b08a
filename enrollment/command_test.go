package enrollment

import (
	"context"
	"errors"
	"testing"
	"time"
)

// commandLog is a CommandStore that says which of its methods answered.
type commandLog struct{ calls []string }

func (c *commandLog) EnqueueCommands(context.Context, string, []NewCommand, string, time.Time, AuditEvent) error {
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
		_, err := NewCommands(log, nil).Next(context.Background(), Enrollment{ID: "e", State: tc.state}, Report{Status: "Idle"})
		if !errors.Is(err, tc.err) || (tc.want != "" && (len(log.calls) != 1 || log.calls[0] != tc.want)) || (tc.want == "" && len(log.calls) != 0) {
			t.Errorf("%s: %v, calls %v", tc.state, err, log.calls)
		}
	}
}
