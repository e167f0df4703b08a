package plistguard

import (
	"bytes"
	"strings"
)

// quickXML decides the common document, a plist as Apple's MDM client
// writes it, without encoding/xml's tokenizer (which, for a check-in,
// cost as much as decoding it): the xml declaration Apple writes, the
// plist DOCTYPE verbatim, elements whose names are letters and that carry
// no attribute (but <plist version="1.0">), ASCII text inside the root
// whose only references are the predefined entities and references to
// characters XML allows, and only space outside it. It counts
// nesting and elements as checkXML does and refuses with the same
// errors. Whatever else it meets (a comment, CDATA, another attribute,
// an unknown entity, a control or non-ASCII byte, an unclosed element)
// it leaves to checkXML: decided is false.
//
// Its text payload needs no counting: every byte of text is at most one
// byte of a token, so a body of at most a quarter of MaxPayload cannot
// exceed it; a larger body goes to checkXML.
func quickXML(body []byte, lim Limits) (decided bool, err error) {
	if 4*len(body) > lim.MaxPayload {
		return false, nil
	}
	depth, nodes := 0, 0
	prolog := true // nothing but the declaration, the DOCTYPE and space yet
	for i := 0; i < len(body); {
		c := body[i]
		if c != '<' {
			switch {
			case isSpace(c):
				i++
				continue
			case depth == 0:
				// Text outside the root: the decoder stops reading at the
				// root's end and would accept what the tokenizer refuses.
				return false, nil
			case c == '&':
				n := entityLength(body[i:])
				if n == 0 {
					return false, nil
				}
				i += n
			case c < 0x20, c >= 0x80, c == ']' && bytes.HasPrefix(body[i:], []byte("]]>")):
				// Control bytes, non-ASCII text (the tokenizer judges its
				// encoding and characters), and "]]>" outside CDATA.
				return false, nil
			default:
				i++
			}
			continue
		}
		rest := body[i+1:]
		switch {
		case i == 0 && bytes.HasPrefix(rest, []byte("?xml ")):
			n := declarationLength(body)
			if n == 0 {
				return false, nil
			}
			i += n
		case prolog && bytes.HasPrefix(rest, []byte("!"+plistDoctype+">")):
			prolog = false
			i += 1 + 1 + len(plistDoctype) + 1
		case len(rest) > 0 && rest[0] == '/':
			n := nameLength(rest[1:])
			j := 1 + n
			for j < len(rest) && isSpace(rest[j]) {
				j++
			}
			if n == 0 || j >= len(rest) || rest[j] != '>' || depth == 0 {
				return false, nil
			}
			depth--
			i += 1 + j + 1
		default:
			n := nameLength(rest)
			if n == 0 {
				return false, nil
			}
			j := n
			if string(rest[:n]) == "plist" && bytes.HasPrefix(rest[j:], []byte(` version="1.0"`)) {
				j += len(` version="1.0"`)
			}
			for j < len(rest) && isSpace(rest[j]) {
				j++
			}
			selfClosing := bytes.HasPrefix(rest[j:], []byte("/>"))
			if !selfClosing && (j >= len(rest) || rest[j] != '>') {
				return false, nil
			}
			prolog = false
			depth++
			nodes++
			if depth > lim.MaxDepth {
				return true, refuse("nesting deeper than %d", lim.MaxDepth)
			}
			if nodes > lim.MaxNodes {
				return true, refuse("more than %d elements", lim.MaxNodes)
			}
			if selfClosing {
				depth--
				j++
			}
			i += 1 + j + 1
		}
	}
	if depth != 0 || nodes == 0 {
		return false, nil
	}
	return true, nil
}

// declarationLength is the length of the xml declaration body starts
// with, if it is one of the two Apple's client writes; 0 otherwise.
func declarationLength(body []byte) int {
	for _, d := range []string{`<?xml version="1.0" encoding="UTF-8"?>`, `<?xml version="1.0"?>`} {
		if bytes.HasPrefix(body, []byte(d)) {
			return len(d)
		}
	}
	return 0
}

// nameLength is the length of the element name b starts with: ASCII
// letters only, as every plist element's.
func nameLength(b []byte) int {
	n := 0
	for n < len(b) && (b[n] >= 'a' && b[n] <= 'z' || b[n] >= 'A' && b[n] <= 'Z') {
		n++
	}
	return n
}

// entityLength is the length of the reference b starts with, if it is a
// predefined entity or a character reference to a character XML allows
// (and not a surrogate); 0 otherwise.
func entityLength(b []byte) int {
	for _, e := range []string{"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"} {
		if bytes.HasPrefix(b, []byte(e)) {
			return len(e)
		}
	}
	base, i := 10, 2
	if bytes.HasPrefix(b, []byte("&#x")) {
		base, i = 16, 3
	} else if !bytes.HasPrefix(b, []byte("&#")) {
		return 0
	}
	start, r := i, 0
	for i < len(b) && i-start < 7 {
		d := strings.IndexByte("0123456789abcdef", b[i]|0x20)
		if d < 0 || d >= base {
			break
		}
		r = r*base + d
		i++
	}
	if i == start || i >= len(b) || b[i] != ';' {
		return 0
	}
	if !(r == 0x9 || r == 0xA || r == 0xD || r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF) {
		return 0
	}
	return i + 1
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
