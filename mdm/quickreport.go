package mdm

import "bytes"

// quickReport reads the command report every idle device sends, a few
// times an hour: an XML plist whose dict holds only known string fields
// of a CommandReport (Status and UDID, for an Idle report). A profile of
// idle check-ins put 12 % of the server's CPU in decoding it with the
// plist decoder, which tokenizes with encoding/xml and allocates some
// ninety times for these two fields.
//
// It accepts a narrow subset of XML plists, the one Apple's client
// writes: the XML declaration and the plist DOCTYPE (each optional),
// <plist version="1.0">, one <dict> of <key> and <string> pairs, XML
// whitespace between elements. Text is printable ASCII without '&', '<'
// or '>', so no entity or character reference, no line-ending rule and
// no "]]>" applies; a key is one of the CommandReport's string fields and
// appears once. Anything else, ok is false and the caller decodes the
// body behind the guard, which then decides. The quick reader bypasses
// the guard too: its 4 KB cap and its flat form are its bounds.
// FuzzQuickReport and TestQuickReport compare the two readers on every
// body the quick one accepts.
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
	var seen [len(reportFields)]bool
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

// reportFields are the string fields of a CommandReport, by the key
// the decoder fills each from (its field name, matched exactly).
var reportFields = [...]struct {
	key   string
	field func(*CommandReport) *string
}{
	{"Status", func(r *CommandReport) *string { return &r.Status }},
	{"UDID", func(r *CommandReport) *string { return &r.UDID }},
	{"CommandUUID", func(r *CommandReport) *string { return &r.CommandUUID }},
	{"EnrollmentID", func(r *CommandReport) *string { return &r.EnrollmentID }},
	{"EnrollmentUserID", func(r *CommandReport) *string { return &r.EnrollmentUserID }},
	{"UserID", func(r *CommandReport) *string { return &r.UserID }},
	{"UserShortName", func(r *CommandReport) *string { return &r.UserShortName }},
	{"UserLongName", func(r *CommandReport) *string { return &r.UserLongName }},
}

// field is the string field a report's key names, with its index in
// reportFields; nil for any other key (the decoder decides those).
func (r *CommandReport) field(key []byte) (*string, int) {
	for i, f := range reportFields {
		if string(key) == f.key {
			return f.field(r), i
		}
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

// text reads plain text up to the end tag, which it consumes. A byte
// the XML reader would transform (an entity, a line ending) or judge
// (non-ASCII, control bytes) ends the quick reading, and so does '>':
// alone it is plain text, but "]]>" outside CDATA is an error.
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
