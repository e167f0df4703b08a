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
	if all, ok := quickCheckin(body); ok {
		return all.checked()
	}
	return decodeGuarded(body)
}

// decodeGuarded is DecodeCheckin behind the guard, with the plist decoder.
func decodeGuarded(body []byte) (any, error) {
	doc, err := plistguard.Check(body, plistguard.DefaultLimits())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	// Decoded once into every message's fields, then copied into the one
	// MessageType names. Where that fails (a key of another message type
	// with a value of another type), the message is decoded the long way,
	// which ignores such keys.
	var all anyCheckin
	if doc.Decode(&all) != nil {
		return decodeByEnvelope(doc)
	}
	return all.checked()
}

// checked is the message a's MessageType names, with the identifier
// its channel needs.
func (a *anyCheckin) checked() (any, error) {
	msg, err := a.message()
	if err != nil {
		return nil, err
	}
	if err := checkIdentity(msg); err != nil {
		return nil, fmt.Errorf("%s: %w", a.MessageType, err)
	}
	return msg, nil
}

// decodeByEnvelope decodes the MessageType first, then the message it
// names.
func decodeByEnvelope(doc plistguard.Document) (any, error) {
	var env envelope
	if err := doc.Decode(&env); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	msg, err := newMessage(env.MessageType)
	if err != nil {
		return nil, err
	}
	if err := doc.Decode(msg); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, env.MessageType, err)
	}
	if err := checkIdentity(msg); err != nil {
		return nil, fmt.Errorf("%s: %w", env.MessageType, err)
	}
	return msg, nil
}

// newMessage is an empty message of the named type.
func newMessage(messageType string) (any, error) {
	switch messageType {
	case "Authenticate":
		return new(Authenticate), nil
	case "TokenUpdate":
		return new(TokenUpdate), nil
	case "CheckOut":
		return new(CheckOut), nil
	case "DeclarativeManagement":
		return new(DeclarativeManagement), nil
	case "GetBootstrapToken":
		return new(GetBootstrapToken), nil
	case "SetBootstrapToken":
		return new(SetBootstrapToken), nil
	case "UserAuthenticate":
		return new(UserAuthenticate), nil
	case "":
		return nil, fmt.Errorf("%w: MessageType", ErrMissingField)
	default:
		return nil, fmt.Errorf("%w: %.64q", ErrUnknownMessageType, messageType)
	}
}

// anyCheckin has the fields of every check-in message, each with its type
// there: a body that decodes into it decodes into its own message with the
// same values.
type anyCheckin struct {
	MessageType string
	Enrollment
	Topic                 string
	SerialNumber          string
	Model                 string
	ModelName             string
	ProductName           string
	OSVersion             string
	BuildVersion          string
	IMEI                  string
	MEID                  string
	DeviceName            string
	Token                 []byte
	PushMagic             string
	UnlockToken           []byte
	AwaitingConfiguration bool
	Endpoint              string
	Data                  []byte
	BootstrapToken        []byte
	DigestResponse        string
}

// message copies a into the message its MessageType names.
func (a *anyCheckin) message() (any, error) {
	msg, err := newMessage(a.MessageType)
	if err != nil {
		return nil, err
	}
	switch m := msg.(type) {
	case *Authenticate:
		*m = Authenticate{MessageType: a.MessageType, Enrollment: a.Enrollment, Topic: a.Topic, SerialNumber: a.SerialNumber,
			Model: a.Model, ModelName: a.ModelName, ProductName: a.ProductName, OSVersion: a.OSVersion, BuildVersion: a.BuildVersion,
			IMEI: a.IMEI, MEID: a.MEID, DeviceName: a.DeviceName}
	case *TokenUpdate:
		*m = TokenUpdate{MessageType: a.MessageType, Enrollment: a.Enrollment, Topic: a.Topic, Token: a.Token, PushMagic: a.PushMagic,
			UnlockToken: a.UnlockToken, AwaitingConfiguration: a.AwaitingConfiguration}
	case *CheckOut:
		*m = CheckOut{MessageType: a.MessageType, Enrollment: a.Enrollment, Topic: a.Topic}
	case *DeclarativeManagement:
		*m = DeclarativeManagement{MessageType: a.MessageType, Enrollment: a.Enrollment, Endpoint: a.Endpoint, Data: a.Data}
	case *GetBootstrapToken:
		*m = GetBootstrapToken{MessageType: a.MessageType, Enrollment: a.Enrollment}
	case *SetBootstrapToken:
		*m = SetBootstrapToken{MessageType: a.MessageType, Enrollment: a.Enrollment, BootstrapToken: a.BootstrapToken}
	case *UserAuthenticate:
		*m = UserAuthenticate{MessageType: a.MessageType, Enrollment: a.Enrollment, DigestResponse: a.DigestResponse}
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
