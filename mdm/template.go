package mdm

import (
	"bytes"
	"fmt"
)

// CommandTemplate is a command encoded once for many devices; each use
// fills in a fresh CommandUUID. Every approval queues the same commands,
// and encoding them again for each device (a profile's payload in base64
// among them) cost as much as the rest of an approval outside the
// database.
type CommandTemplate struct {
	requestType string
	// before and after are the encoded command on either side of its
	// CommandUUID.
	before, after []byte
}

// NewCommandTemplate encodes c, whose CommandUUID marks where each use's
// goes: it must appear once in the encoding, as CommandUUID's value.
func NewCommandTemplate(c Command) (CommandTemplate, error) {
	b, err := c.Encode()
	if err != nil {
		return CommandTemplate{}, err
	}
	mark := []byte("<key>CommandUUID</key><string>" + c.CommandUUID + "</string>")
	i := bytes.Index(b, mark)
	if i < 0 || bytes.Count(b, []byte(c.CommandUUID)) != 1 {
		return CommandTemplate{}, fmt.Errorf("template of %s command: its CommandUUID is not found once in its encoding", c.RequestType())
	}
	cut := i + len(mark) - len("</string>")
	uuidAt := cut - len(c.CommandUUID)
	// before's capacity ends at the UUID, so that nothing appended to it
	// could write over after's bytes.
	return CommandTemplate{requestType: c.RequestType(), before: b[:uuidAt:uuidAt], after: b[cut:]}, nil
}

// RequestType names the command.
func (t CommandTemplate) RequestType() string { return t.requestType }

// New returns a fresh CommandUUID and the encoded command carrying it.
// The UUID is NewUUID's, so nothing in it needs escaping in XML.
func (t CommandTemplate) New() (uuid string, body []byte) {
	uuid = NewUUID()
	return uuid, t.fill(uuid)
}

func (t CommandTemplate) fill(uuid string) []byte {
	out := make([]byte, 0, len(t.before)+len(uuid)+len(t.after))
	out = append(out, t.before...)
	out = append(out, uuid...)
	return append(out, t.after...)
}
