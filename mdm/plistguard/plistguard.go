// Package plistguard checks a property list from a device before any
// decoder builds it in memory. micromdm/plist, the project's plist library,
// trusts what a binary plist declares: it allocates any declared length,
// follows object references without noticing cycles, and expands shared
// references into a tree; its XML path recurses without a depth limit. A
// 44-byte body could stop the process (out of memory or stack, neither
// recoverable). The guard walks the document without allocating what it
// declares and refuses it unless every length fits the bytes present, every
// reference is in range and acyclic, the nesting is shallow, and the tree the
// decoder would build stays within fixed counts of nodes and bytes.
package plistguard

import (
	"bytes"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/micromdm/plist"
)

// ErrRefused means the document was refused before decoding; the error
// wrapping it says why.
var ErrRefused = errors.New("plist refused")

// Limits bound what a document may make the decoder build.
type Limits struct {
	// MaxDepth is the deepest nesting of arrays and dictionaries (the
	// root counts as one; in XML the <plist> element counts too).
	MaxDepth int
	// MaxNodes is the number of values in the tree the decoder builds,
	// shared binary references counted once per use.
	MaxNodes int
	// MaxPayload is the number of bytes of strings and data in that
	// tree, shared binary references counted once per use.
	MaxPayload int
}

// DefaultLimits fit every message Apple's MDM client sends (check-ins need
// fewer than 16 levels; the largest answers Vestibule asks for hold a few
// hundred values) with a wide margin, and keep the worst document within
// the route's body limit under 64 MB of heap in the decoder.
func DefaultLimits() Limits {
	return Limits{MaxDepth: 16, MaxNodes: 50_000, MaxPayload: 12 << 20}
}

// Document is a plist that passed Check: decoding it is bounded.
type Document struct{ body []byte }

// Decode decodes the document into v with micromdm/plist. It may still
// fail (a type mismatch, a syntax error the guard does not look for), but
// it cannot allocate without bound, recurse without bound or loop.
func (d Document) Decode(v any) error { return plist.Unmarshal(d.body, v) }

// Unmarshal checks body against lim and only then decodes it into v.
func Unmarshal(body []byte, v any, lim Limits) error {
	doc, err := Check(body, lim)
	if err != nil {
		return err
	}
	return doc.Decode(v)
}

// Check refuses a document that breaks lim or is malformed in a way the
// decoder would not survive. It allocates little beyond one small table per
// binary object, however large the declared sizes. A Document does not
// mean the decoder will accept it, only that decoding it is bounded.
func Check(body []byte, lim Limits) (Document, error) {
	var err error
	// micromdm/plist treats anything starting with "bplist0" as binary.
	if bytes.HasPrefix(body, []byte("bplist0")) {
		err = checkBinary(body, lim)
	} else {
		err = checkXML(body, lim)
	}
	if err != nil {
		return Document{}, err
	}
	return Document{body: body}, nil
}

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// binaryDoc is a binary plist being walked: the offsets and sizes from its
// trailer, and what the walk has learned of each object.
type binaryDoc struct {
	body       []byte
	lim        Limits
	offsetSize int
	refSize    int
	numObjects int
	tableStart int // where the offset table starts; objects end there
	// Per object: 0 not seen, 1 on the current path, 2 done. For done
	// objects, the nodes and payload bytes their subtree expands to, and
	// its height in containers (0 for a leaf).
	state   []uint8
	nodes   []int
	payload []int
	height  []int
}

const (
	binaryHeader  = "bplist00"
	trailerLength = 32
)

func checkBinary(body []byte, lim Limits) error {
	if !bytes.HasPrefix(body, []byte(binaryHeader)) {
		return refuse("binary plist version %q", body[:min(len(body), 8)])
	}
	if len(body) < len(binaryHeader)+1+1+trailerLength {
		return refuse("binary plist of %d bytes is too short", len(body))
	}
	tr := body[len(body)-trailerLength:]
	d := &binaryDoc{body: body, lim: lim, offsetSize: int(tr[6]), refSize: int(tr[7])}
	numObjects := binary.BigEndian.Uint64(tr[8:16])
	root := binary.BigEndian.Uint64(tr[16:24])
	tableStart := binary.BigEndian.Uint64(tr[24:32])
	trailerStart := uint64(len(body) - trailerLength)

	if d.offsetSize < 1 || d.offsetSize > 8 {
		return refuse("offset size %d", d.offsetSize)
	}
	if d.refSize < 1 || d.refSize > 8 {
		return refuse("object reference size %d", d.refSize)
	}
	if tableStart <= uint64(len(binaryHeader)) || tableStart >= trailerStart {
		return refuse("offset table at %d is outside the document", tableStart)
	}
	if numObjects == 0 || numObjects > (trailerStart-tableStart)/uint64(d.offsetSize) {
		return refuse("%d objects do not fit the offset table", numObjects)
	}
	if numObjects > uint64(lim.MaxNodes) {
		return refuse("%d objects, more than %d", numObjects, lim.MaxNodes)
	}
	if root >= numObjects {
		return refuse("root object %d of %d", root, numObjects)
	}
	d.numObjects = int(numObjects)
	d.tableStart = int(tableStart)
	for i := 0; i < d.numObjects; i++ {
		off := d.offset(i)
		if off < uint64(len(binaryHeader)) || off >= tableStart {
			return refuse("object %d at offset %d is outside the object area", i, off)
		}
	}
	d.state = make([]uint8, d.numObjects)
	d.nodes = make([]int, d.numObjects)
	d.payload = make([]int, d.numObjects)
	d.height = make([]int, d.numObjects)
	return d.walk(int(root), 1)
}

func (d *binaryDoc) offset(i int) uint64 {
	at := d.tableStart + i*d.offsetSize
	return readUint(d.body[at : at+d.offsetSize])
}

func readUint(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// walk checks object i and everything it references, depth-first, and
// records the size of the tree it expands to.
func (d *binaryDoc) walk(i, depth int) error {
	switch d.state[i] {
	case 1:
		return refuse("object %d references itself", i)
	case 2:
		// Checked before, perhaps nearer the root: a shared subtree is as
		// deep as its deepest use.
		if d.height[i] > 0 && depth+d.height[i]-1 > d.lim.MaxDepth {
			return refuse("nesting deeper than %d", d.lim.MaxDepth)
		}
		return nil
	}
	d.state[i] = 1
	pos := int(d.offset(i))
	marker := d.body[pos]
	pos++
	nodes, payload, height := 1, 0, 0
	switch marker >> 4 {
	case 0x0:
		// Only booleans: null, fill and unknown singletons decode to
		// nothing a message can hold.
		if marker != 0x08 && marker != 0x09 {
			return refuse("object %d: singleton %#x", i, marker)
		}
	case 0x1:
		if marker&0xf > 4 {
			return refuse("object %d: integer of 2^%d bytes", i, marker&0xf)
		}
		if err := d.fits(i, pos, 1<<(marker&0xf)); err != nil {
			return err
		}
	case 0x2:
		if n := marker & 0xf; n != 2 && n != 3 {
			return refuse("object %d: real of 2^%d bytes", i, n)
		}
		if err := d.fits(i, pos, 1<<(marker&0xf)); err != nil {
			return err
		}
	case 0x3:
		if marker != 0x33 {
			return refuse("object %d: date marker %#x", i, marker)
		}
		if err := d.fits(i, pos, 8); err != nil {
			return err
		}
	case 0x4, 0x5, 0x6:
		count, next, err := d.count(i, pos, marker)
		if err != nil {
			return err
		}
		width, cost := 1, 2 // the decoder copies the bytes, then makes a string of them
		if marker>>4 == 0x6 {
			// UTF-16: two bytes a unit; decoding makes a []uint16, a []rune
			// and a string of up to three bytes a unit.
			width, cost = 2, 13
		}
		if count > uint64(d.tableStart-next)/uint64(width) {
			return refuse("object %d declares %d units, more than the document holds", i, count)
		}
		payload = int(count) * cost
	case 0xa, 0xd:
		if depth > d.lim.MaxDepth {
			return refuse("nesting deeper than %d", d.lim.MaxDepth)
		}
		count, next, err := d.count(i, pos, marker)
		if err != nil {
			return err
		}
		height = 1
		refs := count
		if marker>>4 == 0xd {
			refs = 2 * count
			if count > uint64(d.tableStart) {
				return refuse("object %d declares %d entries, more than the document holds", i, count)
			}
		}
		if refs > uint64(d.tableStart-next)/uint64(d.refSize) {
			return refuse("object %d declares %d references, more than the document holds", i, refs)
		}
		for k := 0; k < int(refs); k++ {
			at := next + k*d.refSize
			ref := readUint(d.body[at : at+d.refSize])
			if ref >= uint64(d.numObjects) {
				return refuse("object %d references object %d of %d", i, ref, d.numObjects)
			}
			child := int(ref)
			if marker>>4 == 0xd && k < int(count) {
				if m := d.body[d.offset(child)] >> 4; m != 0x5 && m != 0x6 {
					return refuse("object %d: dictionary key %d is not a string", i, child)
				}
			}
			if err := d.walk(child, depth+1); err != nil {
				return err
			}
			nodes += d.nodes[child]
			payload += d.payload[child]
			height = max(height, 1+d.height[child])
			// Checked as the sums grow, so shared references cannot
			// overflow them or run the walk long.
			if nodes > d.lim.MaxNodes {
				return refuse("more than %d values once references are expanded", d.lim.MaxNodes)
			}
			if payload > d.lim.MaxPayload {
				return refuse("more than %d bytes of strings and data once references are expanded", d.lim.MaxPayload)
			}
		}
	default:
		// UIDs (0x8) and sets (0xc) belong to archives, not MDM messages.
		return refuse("object %d: type %#x", i, marker>>4)
	}
	if payload > d.lim.MaxPayload {
		return refuse("more than %d bytes of strings and data", d.lim.MaxPayload)
	}
	d.state[i], d.nodes[i], d.payload[i], d.height[i] = 2, nodes, payload, height
	return nil
}

// fits checks that n bytes from pos lie within the object area.
func (d *binaryDoc) fits(i, pos, n int) error {
	if n > d.tableStart-pos {
		return refuse("object %d runs past the object area", i)
	}
	return nil
}

// count reads the length of a string, data, array or dictionary: the
// marker's low nibble, or an integer object after it when that is 0xf.
func (d *binaryDoc) count(i, pos int, marker byte) (uint64, int, error) {
	if marker&0xf != 0xf {
		return uint64(marker & 0xf), pos, nil
	}
	if err := d.fits(i, pos, 1); err != nil {
		return 0, 0, err
	}
	intMarker := d.body[pos]
	if intMarker>>4 != 0x1 || intMarker&0xf > 3 {
		return 0, 0, refuse("object %d: length marker %#x", i, intMarker)
	}
	n := 1 << (intMarker & 0xf)
	if err := d.fits(i, pos+1, n); err != nil {
		return 0, 0, err
	}
	return readUint(d.body[pos+1 : pos+1+n]), pos + 1 + n, nil
}

// The DOCTYPE every Apple plist carries. It is the only directive allowed:
// no other DOCTYPE, no internal subset, no entity declaration.
const plistDoctype = `DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd"`

func checkXML(body []byte, lim Limits) error {
	if decided, err := quickXML(body, lim); decided {
		return err
	}
	return tokenCheckXML(body, lim)
}

// tokenCheckXML is checkXML for any document, through encoding/xml's
// tokenizer.
func tokenCheckXML(body []byte, lim Limits) error {
	dec := xml.NewDecoder(bytes.NewReader(body))
	dec.Strict = true
	depth, nodes, payload := 0, 0, 0
	for {
		tok, err := dec.RawToken()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return refuse("XML: %v", err)
		}
		// Every token's text is copied by the XML reader, again by the
		// plist decoder's own token stream, into a string or byte slice,
		// and while buffers grow: measured, about seven bytes of heap per
		// byte of text. Counting four keeps the worst XML document under
		// half the 64 MB budget (and under it with the race detector's
		// overhead too).
		payload += 4 * tokenSize(tok)
		if payload > lim.MaxPayload {
			return refuse("more than %d bytes of text", lim.MaxPayload)
		}
		switch t := tok.(type) {
		case xml.Directive:
			if strings.Join(strings.Fields(string(t)), " ") != plistDoctype {
				return refuse("XML directive other than the plist DOCTYPE")
			}
		case xml.ProcInst:
			if t.Target != "xml" {
				return refuse("XML processing instruction %.32q", t.Target)
			}
		case xml.StartElement:
			depth++
			nodes++
			if depth > lim.MaxDepth {
				return refuse("nesting deeper than %d", lim.MaxDepth)
			}
			if nodes > lim.MaxNodes {
				return refuse("more than %d elements", lim.MaxNodes)
			}
		case xml.EndElement:
			depth--
		}
	}
	if nodes == 0 {
		return refuse("XML: no element")
	}
	return nil
}

func tokenSize(tok xml.Token) int {
	switch t := tok.(type) {
	case xml.CharData:
		return len(t)
	case xml.Comment:
		return len(t)
	case xml.Directive:
		return len(t)
	case xml.ProcInst:
		return len(t.Target) + len(t.Inst)
	case xml.StartElement:
		n := len(t.Name.Space) + len(t.Name.Local)
		for _, a := range t.Attr {
			n += len(a.Name.Space) + len(a.Name.Local) + len(a.Value)
		}
		return n
	case xml.EndElement:
		return len(t.Name.Space) + len(t.Name.Local)
	}
	return 0
}
