package enrollment

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// CommandStatus is where a command is in its life.
type CommandStatus string

// Command statuses, as the device reports them (Acknowledged, Error,
// CommandFormatError, NotNow) plus our own queued and sent.
const (
	CommandQueued       CommandStatus = "queued"
	CommandSent         CommandStatus = "sent"
	CommandAcknowledged CommandStatus = "acknowledged"
	CommandError        CommandStatus = "error"
	CommandFormatError  CommandStatus = "command_format_error"
	CommandNotNow       CommandStatus = "not_now"
)

// NewCommand is a command to queue: its UUID, type and the whole plist the
// device receives.
type NewCommand struct {
	UUID        string
	RequestType string
	Body        []byte
}

// Command is a queued command and what became of it.
type Command struct {
	UUID         string        `json:"uuid"`
	EnrollmentID string        `json:"enrollment_id"`
	Seq          int64         `json:"seq"`
	RequestType  string        `json:"request_type"`
	Body         []byte        `json:"-"`
	Status       CommandStatus `json:"status"`
	CreatedAt    time.Time     `json:"created_at"`
	CreatedBy    string        `json:"created_by"`
	SentAt       *time.Time    `json:"sent_at,omitempty"`
	ResultAt     *time.Time    `json:"result_at,omitempty"`
	Result       string        `json:"result,omitempty"`
	NotNowCount  int           `json:"not_now_count"`
}

// Report is a device's answer on the command connection.
type Report struct {
	Status      string
	CommandUUID string
	Raw         []byte
}

// CommandStore is the command queue's storage.
type CommandStore interface {
	EnqueueCommands(ctx context.Context, enrollmentID string, cmds []NewCommand, by string, at time.Time, ev AuditEvent) error
	// EnqueueFleet queues each command for its enrollment, all in one
	// transaction.
	EnqueueFleet(ctx context.Context, items []FleetCommand, by string, at time.Time) error
	// RecordResult stores a device's result for a command it was sent. A
	// report for an unknown command, or one already final, is ErrNotFound.
	RecordResult(ctx context.Context, enrollmentID, uuid string, status CommandStatus, result []byte, at time.Time) error
	// NextCommand returns the first command to send, marked sent, or
	// ErrNotFound when there is none. includeNotNow re-admits commands the
	// device deferred.
	NextCommand(ctx context.Context, enrollmentID string, includeNotNow bool, at time.Time) (Command, error)
	// NextQuestion is NextCommand for a pending device: only the
	// pre-approval question is ever returned.
	NextQuestion(ctx context.Context, enrollmentID string, includeNotNow bool, at time.Time) (Command, error)
	ListCommands(ctx context.Context, enrollmentID string) ([]Command, error)
}

// Commands is the command queue of enrolled devices.
type Commands struct {
	store CommandStore
	now   func() time.Time
}

// NewCommands returns the command queue.
func NewCommands(store CommandStore, now func() time.Time) *Commands {
	if now == nil {
		now = time.Now
	}
	return &Commands{store: store, now: now}
}

// Enqueue queues commands for an enrollment. Commands for a pending device
// wait: nothing is delivered before approval.
func (c *Commands) Enqueue(ctx context.Context, actor Actor, e Enrollment, cmds ...NewCommand) error {
	switch e.State {
	case StatePending, StateApproved:
	default:
		return fmt.Errorf("enqueue: %w: enrollment %s is %s", ErrConflict, e.ID, e.State)
	}
	now := c.now()
	types := ""
	for i, cmd := range cmds {
		if i > 0 {
			types += ","
		}
		types += cmd.RequestType
	}
	ev := actor.event(now, "command.enqueue", "enrollment", e.ID, types)
	return c.store.EnqueueCommands(ctx, e.ID, cmds, actor.Name, now, ev)
}

// FleetCommand is one device's command in a fleet-wide request.
type FleetCommand struct {
	EnrollmentID string
	Command      NewCommand
	Event        AuditEvent
}

// MaxFleetCommand is how many devices one fleet-wide request may name: a
// transaction the size of a console page, not of the fleet.
const MaxFleetCommand = 500

// EnqueueFleet queues cmds[i] for enrollments[i], every one or none: a
// device that cannot take a command (denied, retired, superseded) fails
// the whole request, naming it.
func (c *Commands) EnqueueFleet(ctx context.Context, actor Actor, enrollments []Enrollment, cmds []NewCommand) error {
	if len(enrollments) != len(cmds) {
		return fmt.Errorf("enqueue fleet: %d devices for %d commands", len(enrollments), len(cmds))
	}
	if len(enrollments) == 0 || len(enrollments) > MaxFleetCommand {
		return fmt.Errorf("enqueue fleet: %w: name 1 to %d devices", ErrInvalid, MaxFleetCommand)
	}
	now := c.now()
	items := make([]FleetCommand, len(enrollments))
	seen := make(map[string]bool, len(enrollments))
	for i, e := range enrollments {
		switch e.State {
		case StatePending, StateApproved:
		default:
			return fmt.Errorf("enqueue fleet: %w: enrollment %s is %s", ErrConflict, e.ID, e.State)
		}
		if seen[e.ID] {
			return fmt.Errorf("enqueue fleet: %w: enrollment %s is named twice", ErrInvalid, e.ID)
		}
		seen[e.ID] = true
		items[i] = FleetCommand{EnrollmentID: e.ID, Command: cmds[i],
			Event: actor.event(now, "command.enqueue", "enrollment", e.ID, cmds[i].RequestType)}
	}
	if err := c.store.EnqueueFleet(ctx, items, actor.Name, now); err != nil {
		return fmt.Errorf("enqueue fleet: %w", err)
	}
	return nil
}

// Next records a report and returns the next command for the device, or
// ErrNotFound when it has none. An approved device gets its queue in
// order; a pending device gets only the attestation question, which asks
// and installs nothing.
func (c *Commands) Next(ctx context.Context, id string, state State, r Report) (Command, error) {
	if state != StateApproved && state != StatePending {
		return Command{}, fmt.Errorf("next command: %w: enrollment %s is %s", ErrForbidden, id, state)
	}
	now := c.now()
	includeNotNow := false
	switch r.Status {
	case "Idle":
		// A new session: deferred commands may be tried again.
		includeNotNow = true
	case "Acknowledged", "Error", "CommandFormatError", "NotNow":
		st := map[string]CommandStatus{"Acknowledged": CommandAcknowledged, "Error": CommandError,
			"CommandFormatError": CommandFormatError, "NotNow": CommandNotNow}[r.Status]
		// A report for a command not in flight (a duplicate, or one we
		// never sent) changes nothing; the device still gets what it is owed.
		if err := c.store.RecordResult(ctx, id, r.CommandUUID, st, r.Raw, now); err != nil && !errors.Is(err, ErrNotFound) {
			return Command{}, fmt.Errorf("record result: %w", err)
		}
	default:
		return Command{}, fmt.Errorf("next command: %w: status %q", ErrInvalid, r.Status)
	}
	if state == StatePending {
		return c.store.NextQuestion(ctx, id, includeNotNow, now)
	}
	return c.store.NextCommand(ctx, id, includeNotNow, now)
}

// List returns an enrollment's commands in queue order.
func (c *Commands) List(ctx context.Context, enrollmentID string) ([]Command, error) {
	return c.store.ListCommands(ctx, enrollmentID)
}
