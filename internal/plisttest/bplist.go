// Package plisttest writes binary property lists by hand, well-formed or
// hostile, for tests and fuzz seeds of the code that reads device input.
package plisttest

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"unicode/utf16"
)

// Builder writes binary plists for tests: objects are added raw (marker
// and body), referenced by index, and laid out with a trailer of the
// chosen sizes. Apple's writer shares equal strings; so can a test.
type Builder struct {
	objects    [][]byte
	RefSize    int
	OffsetSize int
}

// New returns a builder with 2-byte references and 4-byte offsets.
func New() *Builder { return &Builder{RefSize: 2, OffsetSize: 4} }

// Add appends a raw object and returns its index.
func (b *Builder) Add(raw []byte) int {
	b.objects = append(b.objects, raw)
	return len(b.objects) - 1
}

// Marker writes a type nibble with a count, extended past 14.
func Marker(kind byte, count uint64) []byte {
	if count < 15 {
		return []byte{kind<<4 | byte(count)}
	}
	switch {
	case count <= math.MaxUint8:
		return []byte{kind<<4 | 0xf, 0x10, byte(count)}
	case count <= math.MaxUint16:
		return binary.BigEndian.AppendUint16([]byte{kind<<4 | 0xf, 0x11}, uint16(count))
	case count <= math.MaxUint32:
		return binary.BigEndian.AppendUint32([]byte{kind<<4 | 0xf, 0x12}, uint32(count))
	default:
		return binary.BigEndian.AppendUint64([]byte{kind<<4 | 0xf, 0x13}, count)
	}
}

// Refs encodes object references in the builder's reference size.
func (b *Builder) Refs(rs ...int) []byte {
	var out []byte
	for _, r := range rs {
		var buf [8]byte
		binary.BigEndian.PutUint64(buf[:], uint64(r))
		out = append(out, buf[8-b.RefSize:]...)
	}
	return out
}

// Str adds an ASCII string.
func (b *Builder) Str(s string) int { return b.Add(append(Marker(0x5, uint64(len(s))), s...)) }

// Data adds a data object.
func (b *Builder) Data(d []byte) int { return b.Add(append(Marker(0x4, uint64(len(d))), d...)) }

// Bool adds a boolean.
func (b *Builder) Bool(v bool) int {
	if v {
		return b.Add([]byte{0x09})
	}
	return b.Add([]byte{0x08})
}

// Int adds an 8-byte integer.
func (b *Builder) Int(v int64) int {
	return b.Add(binary.BigEndian.AppendUint64([]byte{0x13}, uint64(v)))
}

// UTF16 adds a UTF-16 string.
func (b *Builder) UTF16(s string) int {
	units := utf16.Encode([]rune(s))
	out := Marker(0x6, uint64(len(units)))
	for _, u := range units {
		out = binary.BigEndian.AppendUint16(out, u)
	}
	return b.Add(out)
}

// Array adds an array of the given objects.
func (b *Builder) Array(items ...int) int {
	return b.Add(append(Marker(0xa, uint64(len(items))), b.Refs(items...)...))
}

// Dict takes keys and values already added, in matching order.
func (b *Builder) Dict(keys, vals []int) int {
	out := Marker(0xd, uint64(len(keys)))
	out = append(out, b.Refs(keys...)...)
	return b.Add(append(out, b.Refs(vals...)...))
}

// Value adds a Go value: map[string]any (keys sorted), []any, string,
// []byte, bool, int.
func (b *Builder) Value(v any) int {
	switch v := v.(type) {
	case map[string]any:
		names := make([]string, 0, len(v))
		for k := range v {
			names = append(names, k)
		}
		sort.Strings(names)
		var keys, vals []int
		for _, k := range names {
			keys = append(keys, b.Str(k))
			vals = append(vals, b.Value(v[k]))
		}
		return b.Dict(keys, vals)
	case []any:
		var items []int
		for _, it := range v {
			items = append(items, b.Value(it))
		}
		return b.Array(items...)
	case string:
		return b.Str(v)
	case []byte:
		return b.Data(v)
	case bool:
		return b.Bool(v)
	case int:
		return b.Int(int64(v))
	}
	panic(fmt.Sprintf("bplist: %T", v))
}

// Bytes lays the document out with root as its top object.
func (b *Builder) Bytes(root int) []byte {
	out := []byte("bplist00")
	offsets := make([]int, len(b.objects))
	for i, o := range b.objects {
		offsets[i] = len(out)
		out = append(out, o...)
	}
	table := len(out)
	for _, off := range offsets {
		var buf [8]byte
		binary.BigEndian.PutUint64(buf[:], uint64(off))
		out = append(out, buf[8-b.OffsetSize:]...)
	}
	trailer := make([]byte, 32)
	trailer[6] = byte(b.OffsetSize)
	trailer[7] = byte(b.RefSize)
	binary.BigEndian.PutUint64(trailer[8:], uint64(len(b.objects)))
	binary.BigEndian.PutUint64(trailer[16:], uint64(root))
	binary.BigEndian.PutUint64(trailer[24:], uint64(table))
	return append(out, trailer...)
}

// Encode writes v as a whole binary plist.
func Encode(v any) []byte {
	b := New()
	root := b.Value(v)
	return b.Bytes(root)
}
