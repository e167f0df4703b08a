package mdm

import (
	"errors"
	"fmt"

	"github.com/vestibule-mdm/vestibule/mdm/plistguard"
)

// Decoding errors. Each one means the body is refused with 400.
var (
	ErrMalformed          = errors.New("malformed plist")
	ErrUnknownMessageType = errors.New("unknown check-in MessageType")
	ErrMissingField       = errors.New("required field missing")
)

// MaxCheckinBody bounds a check-in body: the largest, SetBootstrapToken
// and DeclarativeManagement, are a few kilobytes.
const MaxCheckinBody = 256 << 10

// MaxReportBody bounds a command report: answers such as
// InstalledApplicationList or ProfileList can run to megabytes on a full
// device, but nothing Vestibule asks for comes near this.
const MaxReportBody = 10 << 20

// Enrollment identifies the channel a message belongs to: the device
// channel (UDID) or a user channel (UserID), or a user-enrollment device
// (EnrollmentID).
type Enrollment struct {
	UDID             string `plist:",omitempty"`
	UserID           string `plist:",omitempty"`
	UserShortName    string `plist:",omitempty"`
	UserLongName     string `plist:",omitempty"`
	EnrollmentID     string `plist:",omitempty"`
	EnrollmentUserID string `plist:",omitempty"`
}

// DeviceChannel reports whether the message is from the device itself
// rather than one of its users.
func (e Enrollment) DeviceChannel() bool { return e.UserID == "" && e.EnrollmentUserID == "" }

// ID is the identifier of the enrolled device: its UDID, or the
// EnrollmentID of a user enrollment.
func (e Enrollment) ID() string {
	if e.UDID != "" {
		return e.UDID
	}
	return e.EnrollmentID
}

// Authenticate is the first check-in of a newly installed MDM profile.
type Authenticate struct {
	MessageType string
	Enrollment
	Topic        string
	SerialNumber string `plist:",omitempty"`
	Model        string `plist:",omitempty"`
	ModelName    string `plist:",omitempty"`
	ProductName  string `plist:",omitempty"`
	OSVersion    string `plist:",omitempty"`
	BuildVersion string `plist:",omitempty"`
	IMEI         string `plist:",omitempty"`
	MEID         string `plist:",omitempty"`
	DeviceName   string `plist:",omitempty"`
}

// TokenUpdate carries the push token and PushMagic.
type TokenUpdate struct {
	MessageType string
	Enrollment
	Topic                 string
	Token                 []byte
	PushMagic             string
	UnlockToken           []byte `plist:",omitempty"`
	AwaitingConfiguration bool   `plist:",omitempty"`
}

// CheckOut says the MDM profile was removed.
type CheckOut struct {
	MessageType string
	Enrollment
	Topic string `plist:",omitempty"`
}

// DeclarativeManagement asks for declarations.
type DeclarativeManagement struct {
	MessageType string
	Enrollment
	Endpoint string `plist:",omitempty"`
	Data     []byte `plist:",omitempty"`
}

// GetBootstrapToken asks for the escrowed bootstrap token.
type GetBootstrapToken struct {
	MessageType string
	Enrollment
}

// SetBootstrapToken escrows a bootstrap token.
type SetBootstrapToken struct {
	MessageType string
	Enrollment
	BootstrapToken []byte `plist:",omitempty"`
}

// UserAuthenticate is the user channel's first contact.
type UserAuthenticate struct {
	MessageType string
	Enrollment
	DigestResponse string `plist:",omitempty"`
}

// envelope is read first to pick the message type.
type envelope struct {
	MessageType string
}

// DecodeCheckin parses a check-in body into one of the message types above
// (as a pointer). It refuses a malformed plist, an unknown MessageType and a
// message without the identifier its channel needs.
func DecodeCheckin(body []byte) (any, error) {
	doc, err := plistguard.Check(body, plistguard.DefaultLimits())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var env envelope
	if err := doc.Decode(&env); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var msg any
	switch env.MessageType {
	case "Authenticate":
		msg = new(Authenticate)
	case "TokenUpdate":
		msg = new(TokenUpdate)
	case "CheckOut":
		msg = new(CheckOut)
	case "DeclarativeManagement":
		msg = new(DeclarativeManagement)
	case "GetBootstrapToken":
		msg = new(GetBootstrapToken)
	case "SetBootstrapToken":
		msg = new(SetBootstrapToken)
	case "UserAuthenticate":
		msg = new(UserAuthenticate)
	case "":
		return nil, fmt.Errorf("%w: MessageType", ErrMissingField)
	default:
		return nil, fmt.Errorf("%w: %.64q", ErrUnknownMessageType, env.MessageType)
	}
	if err := doc.Decode(msg); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, env.MessageType, err)
	}
	if err := checkIdentity(msg); err != nil {
		return nil, fmt.Errorf("%s: %w", env.MessageType, err)
	}
	return msg, nil
}

func checkIdentity(msg any) error {
	var e Enrollment
	switch m := msg.(type) {
	case *Authenticate:
		e = m.Enrollment
		if e.ID() == "" {
			return fmt.Errorf("%w: UDID or EnrollmentID", ErrMissingField)
		}
		if m.Topic == "" {
			return fmt.Errorf("%w: Topic", ErrMissingField)
		}
		return nil
	case *TokenUpdate:
		e = m.Enrollment
		if len(m.Token) == 0 || m.PushMagic == "" || m.Topic == "" {
			return fmt.Errorf("%w: Token, PushMagic and Topic", ErrMissingField)
		}
	case *CheckOut:
		e = m.Enrollment
	case *DeclarativeManagement:
		e = m.Enrollment
	case *GetBootstrapToken:
		e = m.Enrollment
	case *SetBootstrapToken:
		e = m.Enrollment
	case *UserAuthenticate:
		e = m.Enrollment
		if e.UserID == "" {
			return fmt.Errorf("%w: UserID", ErrMissingField)
		}
	}
	if e.ID() == "" {
		return fmt.Errorf("%w: UDID or EnrollmentID", ErrMissingField)
	}
	return nil
}
