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
	if quick, ok := quickReport(body); ok {
		*r = quick
	} else if err := plistguard.Unmarshal(body, r, plistguard.DefaultLimits()); err != nil {
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

// MaxAttestationChain bounds the certificates an answer may carry.
const MaxAttestationChain = 4

// DecodeAttestation reads the DevicePropertiesAttestation answer of a
// DeviceInformation report: the DER certificates, leaf first. answered is
// false when the report has no such answer (an OS that does not support
// the query omits it).
func DecodeAttestation(raw []byte) (chain [][]byte, answered bool, err error) {
	var r struct {
		QueryResponses struct {
			DevicePropertiesAttestation [][]byte `plist:",omitempty"`
		}
	}
	if err := plistguard.Unmarshal(raw, &r, plistguard.DefaultLimits()); err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	c := r.QueryResponses.DevicePropertiesAttestation
	if len(c) == 0 {
		return nil, false, nil
	}
	if len(c) > MaxAttestationChain {
		return nil, true, fmt.Errorf("%w: %d attestation certificates", ErrMalformed, len(c))
	}
	return c, true, nil
}
