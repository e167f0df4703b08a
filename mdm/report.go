package mdm

import (
	"fmt"

	"github.com/vestibule-mdm/vestibule/mdm/plistguard"
)

// ErrorChainItem is one error of a failed command.
type ErrorChainItem struct {
	ErrorCode            int    `plist:",omitempty"`
	ErrorDomain          string `plist:",omitempty"`
	LocalizedDescription string `plist:",omitempty"`
	USEnglishDescription string `plist:",omitempty"`
}

// Command report statuses.
const (
	StatusAcknowledged       = "Acknowledged"
	StatusError              = "Error"
	StatusCommandFormatError = "CommandFormatError"
	StatusIdle               = "Idle"
	StatusNotNow             = "NotNow"
)

// CommandReport is what a device sends on the command connection: its
// answer to the last command, or Idle.
type CommandReport struct {
	Enrollment
	Status      string
	CommandUUID string           `plist:",omitempty"`
	ErrorChain  []ErrorChainItem `plist:",omitempty"`
	// Raw is the whole body, kept as the command's result.
	Raw []byte `plist:"-"`
}

// DecodeCommandReport parses a command report and checks its status.
func DecodeCommandReport(body []byte) (*CommandReport, error) {
	r := new(CommandReport)
	if err := plistguard.Unmarshal(body, r, plistguard.DefaultLimits()); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if r.ID() == "" {
		return nil, fmt.Errorf("command report: %w: UDID or EnrollmentID", ErrMissingField)
	}
	switch r.Status {
	case StatusIdle:
	case StatusAcknowledged, StatusError, StatusCommandFormatError, StatusNotNow:
		if r.CommandUUID == "" {
			return nil, fmt.Errorf("command report: %w: CommandUUID with status %s", ErrMissingField, r.Status)
		}
	case "":
		return nil, fmt.Errorf("command report: %w: Status", ErrMissingField)
	default:
		return nil, fmt.Errorf("command report: %w: unknown Status %.32q", ErrMalformed, r.Status)
	}
	r.Raw = body
	return r, nil
}
