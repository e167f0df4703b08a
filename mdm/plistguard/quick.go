package plistguard

import (
	"bytes"
	"strings"
)

// quickXML decides the common document, a plist as Apple's MDM client
// writes it, without encoding/xml's tokenizer (which, for a check-in,
// cost as much as decoding it): the xml declaration, the plist DOCTYPE,
// elements whose names are letters and that carry no attribute (but
// <plist version="1.0">), and text without markup whose only references
// are the predefined entities and character references. It counts
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
			case c == '&':
				n := entityLength(body[i:])
				if n == 0 {
					return false, nil
				}
				i += n
			case c < 0x20 && c != '\t' && c != '\n' && c != '\r', c >= 0x80:
				// Control bytes, and any non-ASCII text (the tokenizer
				// judges its encoding and characters).
				return false, nil
			default:
				if !isSpace(c) {
					prolog = false
				}
				i++
			}
			continue
		}
		rest := body[i+1:]
		switch {
		case bytes.HasPrefix(rest, []byte("?xml ")) && i == 0:
			end := bytes.Index(rest, []byte("?>"))
			if end < 0 || bytes.IndexByte(rest[:end], '<') >= 0 {
				return false, nil
			}
			i += 1 + end + 2
		case bytes.HasPrefix(rest, []byte("!DOCTYPE")) && prolog:
			end := bytes.IndexByte(rest, '>')
			if end < 0 || string(rest[1:end]) != plistDoctype && strings.Join(strings.Fields(string(rest[1:end])), " ") != plistDoctype {
				return false, nil
			}
			prolog = false
			i += 1 + end + 1
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
// predefined entity or a character reference; 0 otherwise.
func entityLength(b []byte) int {
	for _, e := range []string{"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"} {
		if bytes.HasPrefix(b, []byte(e)) {
			return len(e)
		}
	}
	digits, i := "0123456789", 2
	if bytes.HasPrefix(b, []byte("&#x")) {
		digits, i = "0123456789abcdefABCDEF", 3
	} else if !bytes.HasPrefix(b, []byte("&#")) {
		return 0
	}
	start := i
	for i < len(b) && i-start < 8 && strings.IndexByte(digits, b[i]) >= 0 {
		i++
	}
	if i == start || i >= len(b) || b[i] != ';' {
		return 0
	}
	return i + 1
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
