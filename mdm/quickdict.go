package mdm

import (
	"bytes"
	"encoding/base64"
	"unicode/utf8"
)

// quickDict reads body without the plist decoder when it is a flat XML
// plist dict in the narrow form Apple's client writes: the XML
// declaration and the plist DOCTYPE (each optional, each verbatim),
// <plist version="1.0">, one <dict> of <key> and value pairs, XML
// whitespace between elements. A value is a <string>, a <data> or <true/>
// or <false/>. The text of a key or a string is printable ASCII without
// '&', '<' or '>', or UTF-8 characters XML allows; so no entity or
// character reference, no line-ending rule and no "]]>" applies to it.
// Data is the base64 alphabet and whitespace.
//
// It calls set with each pair in order; set returns false to give up
// (an unknown key, a value of another type, a key seen twice). On
// anything else too it gives up, and the caller decodes the body behind
// plistguard, which then decides. quickDict bypasses the guard: max, its
// cap on the body, and the flat form are its bounds. The tests compare
// what each of its callers reads with what the decoder reads from the
// same body (TestQuickReport, TestQuickCheckin and their fuzz targets).
func quickDict(body []byte, max int, set func(key []byte, v quickValue) bool) bool {
	if len(body) > max {
		return false
	}
	p := quickBody{b: body}
	if p.skip(xmlDeclaration) {
		p.space()
	}
	if p.skip(plistDoctype) {
		p.space()
	}
	if !p.skip("<plist version=\"1.0\">") || !p.spaceThen("<dict>") {
		return false
	}
	for {
		p.space()
		if p.skip("</dict>") {
			break
		}
		if !p.skip("<key>") {
			return false
		}
		key, ok := p.text("</key>", textByte)
		if !ok {
			return false
		}
		p.space()
		v, ok := p.value()
		if !ok || !set(key, v) {
			return false
		}
	}
	if !p.spaceThen("</plist>") {
		return false
	}
	p.space()
	return p.done()
}

// quickKind is the type of a value quickDict read.
type quickKind int

const (
	quickString quickKind = iota
	quickData
	quickBool
)

// quickValue is one value quickDict read: a string's text, data's text
// as written (see bytes), or a boolean.
type quickValue struct {
	kind quickKind
	text []byte
	b    bool
}

// bytes decodes a data value as the plist decoder does: no text is nil;
// whitespace is dropped, the rest is standard base64. ok is false when
// the decoder would fail.
func (v quickValue) bytes() ([]byte, bool) {
	if len(v.text) == 0 {
		return nil, true
	}
	b64 := make([]byte, 0, len(v.text))
	for _, c := range v.text {
		if !isXMLSpace(c) {
			b64 = append(b64, c)
		}
	}
	// As DecodeString does, without its copy into a string.
	out := make([]byte, base64.StdEncoding.DecodedLen(len(b64)))
	n, err := base64.StdEncoding.Decode(out, b64)
	return out[:n], err == nil
}

// quickField is a field a quick reader fills: the key the decoder fills
// it from (its field name, matched exactly), the value's type, and how
// to store the value (false where the decoder would fail on it).
type quickField[T any] struct {
	key  string
	kind quickKind
	set  func(*T, quickValue) bool
}

func stringField[T any](key string, field func(*T) *string) quickField[T] {
	return quickField[T]{key, quickString, func(m *T, v quickValue) bool { *field(m) = string(v.text); return true }}
}

func dataField[T any](key string, field func(*T) *[]byte) quickField[T] {
	return quickField[T]{key, quickData, func(m *T, v quickValue) (ok bool) { *field(m), ok = v.bytes(); return ok }}
}

// quickRead fills a T from body through quickDict: each key is one of
// fields, once, with a value of its type; anything else gives up.
func quickRead[T any](body []byte, max int, fields []quickField[T]) (m T, ok bool) {
	seen := make([]bool, len(fields))
	ok = quickDict(body, max, func(key []byte, v quickValue) bool {
		for i, f := range fields {
			if string(key) != f.key {
				continue
			}
			if seen[i] || v.kind != f.kind {
				return false
			}
			seen[i] = true
			return f.set(&m, v)
		}
		return false
	})
	return m, ok
}

// The prolog Apple's client writes, verbatim.
const (
	xmlDeclaration = `<?xml version="1.0" encoding="UTF-8"?>`
	plistDoctype   = `<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">`
)

// quickBody is a position in a body being read by quickDict.
type quickBody struct {
	b []byte
	i int
}

func (p *quickBody) value() (quickValue, bool) {
	switch {
	case p.skip("<string/>"):
		return quickValue{kind: quickString}, true
	case p.skip("<string>"):
		t, ok := p.text("</string>", textByte)
		return quickValue{kind: quickString, text: t}, ok
	case p.skip("<data/>"):
		return quickValue{kind: quickData}, true
	case p.skip("<data>"):
		t, ok := p.text("</data>", dataByte)
		return quickValue{kind: quickData, text: t}, ok
	case p.skip("<true/>"):
		return quickValue{kind: quickBool, b: true}, true
	case p.skip("<false/>"):
		return quickValue{kind: quickBool}, true
	}
	return quickValue{}, false
}

func (p *quickBody) skip(s string) bool {
	if !bytes.HasPrefix(p.b[p.i:], []byte(s)) {
		return false
	}
	p.i += len(s)
	return true
}

func isXMLSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// space skips XML whitespace.
func (p *quickBody) space() {
	for p.i < len(p.b) && isXMLSpace(p.b[p.i]) {
		p.i++
	}
}

func (p *quickBody) spaceThen(s string) bool {
	p.space()
	return p.skip(s)
}

// text reads text up to the end tag, which it consumes. Each character
// must pass ok; it returns how many bytes the character at b[0] takes,
// 0 to give up.
func (p *quickBody) text(end string, ok func(b []byte) int) ([]byte, bool) {
	start := p.i
	for p.i < len(p.b) {
		if p.b[p.i] == '<' {
			t := p.b[start:p.i]
			return t, p.skip(end)
		}
		n := ok(p.b[p.i:])
		if n == 0 {
			return nil, false
		}
		p.i += n
	}
	return nil, false
}

// textByte takes what the XML reader passes through unchanged: printable
// ASCII but '&' (a reference) and '>' (alone it is plain text, but "]]>"
// outside CDATA is an error), and UTF-8 characters XML allows. A control
// byte, '\r' among them (line endings are rewritten), gives up.
func textByte(b []byte) int {
	c := b[0]
	if c < utf8.RuneSelf {
		if c < 0x20 || c > 0x7e || c == '&' || c == '>' {
			return 0
		}
		return 1
	}
	r, n := utf8.DecodeRune(b)
	if r == utf8.RuneError && n == 1 || !isXMLChar(r) {
		return 0
	}
	return n
}

// isXMLChar is XML 1.0's Char production above ASCII.
func isXMLChar(r rune) bool {
	return r >= 0x80 && r <= 0xd7ff || r >= 0xe000 && r <= 0xfffd || r >= 0x10000 && r <= 0x10ffff
}

// dataByte takes the base64 alphabet and whitespace, which the decoder
// drops (after the XML reader rewrote '\r', to the same effect).
func dataByte(b []byte) int {
	c := b[0]
	switch {
	case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/', c == '=', isXMLSpace(c):
		return 1
	}
	return 0
}

func (p *quickBody) done() bool { return p.i == len(p.b) }
