package mdm

import "bytes"

// quickReport reads the command report every idle device sends, a few
// times an hour: an XML plist whose dict holds only known string fields
// of a CommandReport (Status and UDID, for an Idle report). A profile of
// idle check-ins put a tenth of the server's CPU in decoding it with the
// plist decoder, which tokenizes with encoding/xml and allocates some
// ninety times for these two fields.
//
// It accepts only a narrow form, exactly as Apple's client writes it:
// the XML declaration and the plist DOCTYPE (each optional), <plist
// version="1.0">, one <dict> of <key> and <string> pairs, whitespace
// between elements. Text is printable ASCII without '&', '<' or '>', so
// no entity or character reference and no line-ending rule applies; a
// key is one of the CommandReport's string fields and appears once.
// Anything else, ok is false and the caller decodes the body with the
// plist decoder, which then decides. FuzzQuickReport holds the two to
// the same result on every body quickReport accepts.
func quickReport(body []byte) (r CommandReport, ok bool) {
	// A report this size is far past any Idle or Acknowledged one; the
	// guard's limits are the decoder's business.
	if len(body) > 4<<10 {
		return r, false
	}
	p := quickBody{b: body}
	if p.skip(xmlDeclaration) {
		p.space()
	}
	if p.skip(plistDoctype) {
		p.space()
	}
	if !p.skip("<plist version=\"1.0\">") || !p.spaceThen("<dict>") {
		return r, false
	}
	var seen [8]bool
	for {
		p.space()
		if p.skip("</dict>") {
			break
		}
		if !p.skip("<key>") {
			return r, false
		}
		key, ok := p.text("</key>")
		if !ok {
			return r, false
		}
		var value string
		p.space()
		if !p.skip("<string/>") {
			if !p.skip("<string>") {
				return r, false
			}
			v, ok := p.text("</string>")
			if !ok {
				return r, false
			}
			value = string(v)
		}
		field, i := r.field(key)
		if field == nil || seen[i] {
			return r, false
		}
		seen[i] = true
		*field = value
	}
	if !p.spaceThen("</plist>") {
		return r, false
	}
	p.space()
	return r, p.done()
}

// The prolog Apple's client writes, verbatim.
const (
	xmlDeclaration = `<?xml version="1.0" encoding="UTF-8"?>`
	plistDoctype   = `<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">`
)

// field is the string field a report's key names, with its index among
// them; nil for any other key (the decoder decides those).
func (r *CommandReport) field(key []byte) (*string, int) {
	switch string(key) {
	case "Status":
		return &r.Status, 0
	case "UDID":
		return &r.UDID, 1
	case "CommandUUID":
		return &r.CommandUUID, 2
	case "EnrollmentID":
		return &r.EnrollmentID, 3
	case "EnrollmentUserID":
		return &r.EnrollmentUserID, 4
	case "UserID":
		return &r.UserID, 5
	case "UserShortName":
		return &r.UserShortName, 6
	case "UserLongName":
		return &r.UserLongName, 7
	}
	return nil, 0
}

// quickBody is a position in a body being read by quickReport.
type quickBody struct {
	b []byte
	i int
}

func (p *quickBody) skip(s string) bool {
	if !bytes.HasPrefix(p.b[p.i:], []byte(s)) {
		return false
	}
	p.i += len(s)
	return true
}

// space skips XML whitespace.
func (p *quickBody) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *quickBody) spaceThen(s string) bool {
	p.space()
	return p.skip(s)
}

// text reads plain text up to the end tag, which it consumes. Any byte
// that would make the XML reader transform or refuse the text ends the
// quick reading.
func (p *quickBody) text(end string) ([]byte, bool) {
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		if c == '<' {
			t := p.b[start:p.i]
			return t, p.skip(end)
		}
		if c < 0x20 || c > 0x7e || c == '&' || c == '>' {
			return nil, false
		}
		p.i++
	}
	return nil, false
}

func (p *quickBody) done() bool { return p.i == len(p.b) }
