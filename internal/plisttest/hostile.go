package plisttest

import (
	"strings"
)

// Hostile is one document built to stop a decoder that believes it.
type Hostile struct {
	Name string
	Body []byte
}

// HostileDocuments are the bodies of the security review that stopped the
// server through micromdm/plist (declared sizes allocated as declared,
// reference cycles, unbounded nesting), and their near relatives. Every
// one is small; each must be refused before decoding.
func HostileDocuments() []Hostile {
	var out []Hostile
	add := func(name string, body []byte) { out = append(out, Hostile{name, body}) }

	// Declared lengths far beyond the bytes present.
	for _, k := range []struct {
		name string
		kind byte
	}{{"data", 0x4}, {"ascii", 0x5}, {"utf16", 0x6}} {
		b := New()
		root := b.Add(Marker(k.kind, 1<<40))
		add(k.name+"-declares-2^40", b.Bytes(root))
	}
	for _, k := range []struct {
		name string
		kind byte
	}{{"array", 0xa}, {"dict", 0xd}} {
		b := New()
		root := b.Add(Marker(k.kind, 1<<32))
		add(k.name+"-declares-2^32", b.Bytes(root))
	}

	// Containers that contain themselves, directly or through another.
	{
		b := New()
		root := b.Add(append(Marker(0xa, 1), b.Refs(0)...))
		add("array-contains-itself", b.Bytes(root))
	}
	{
		b := New()
		key := b.Str("a")
		root := b.Add(append(append(Marker(0xd, 1), b.Refs(key)...), b.Refs(1)...))
		add("dict-contains-itself", b.Bytes(root))
	}
	{
		b := New()
		b.Add(append(Marker(0xa, 1), b.Refs(1)...))
		b.Add(append(Marker(0xa, 1), b.Refs(0)...))
		add("arrays-contain-each-other", b.Bytes(0))
	}

	// Shared references that expand to 15^16 values.
	{
		b := New()
		leaf := b.Str("x")
		next := leaf
		for i := 0; i < 16; i++ {
			items := make([]int, 15)
			for j := range items {
				items[j] = next
			}
			next = b.Array(items...)
		}
		add("shared-references-expand", b.Bytes(next))
	}

	// One shared 4 KiB string referenced 30,000 times: 120 MB once expanded.
	{
		b := New()
		s := b.Str(strings.Repeat("A", 4096))
		items := make([]int, 30000)
		for i := range items {
			items[i] = s
		}
		add("shared-string-expands", b.Bytes(b.Array(items...)))
	}

	// Trailers that lie.
	{
		b := New()
		root := b.Str("x")
		body := b.Bytes(root)
		lie := append([]byte(nil), body...)
		putTrailer(lie, 8, 1<<40) // numObjects
		add("trailer-2^40-objects", lie)
		lie = append([]byte(nil), body...)
		putTrailer(lie, 16, 1) // root past the last object
		add("trailer-root-out-of-range", lie)
		lie = append([]byte(nil), body...)
		putTrailer(lie, 24, 1<<62) // offset table far past the end
		add("trailer-table-past-end", lie)
		lie = append([]byte(nil), body...)
		lie[len(lie)-32+7] = 0 // zero-byte references
		add("trailer-zero-ref-size", lie)
	}

	// A reference one past the last object (micromdm/plist checks > not >=).
	{
		b := New()
		root := b.Add(append(Marker(0xa, 1), b.Refs(1)...))
		add("reference-one-past-the-end", b.Bytes(root))
	}

	// A shared chain first met near the root, then reused at its deepest:
	// 80 chains of 14 arrays, each ending in the one before (the review's
	// proof that checking a shared object once let 1,122 levels through).
	{
		b := New()
		prev := b.Str("x")
		var chains []int
		for range 80 {
			next := prev
			for range 14 {
				next = b.Array(next)
			}
			chains = append(chains, next)
			prev = next
		}
		add("shared-chain-reused-deep", b.Bytes(b.Array(chains...)))
	}

	// Deep nesting, binary and XML.
	{
		b := New()
		next := b.Str("x")
		for i := 0; i < 10000; i++ {
			next = b.Array(next)
		}
		add("binary-10000-levels", b.Bytes(next))
	}
	add("xml-100000-levels", []byte(`<?xml version="1.0" encoding="UTF-8"?><plist version="1.0">`+
		strings.Repeat("<array>", 100000)+strings.Repeat("</array>", 100000)+`</plist>`))
	add("xml-20-levels", []byte(`<plist version="1.0"><dict><key>MessageType</key><string>Authenticate</string><key>x</key>`+
		strings.Repeat("<array>", 20)+strings.Repeat("</array>", 20)+`</dict></plist>`))
	add("xml-internal-subset", []byte(`<?xml version="1.0"?><!DOCTYPE plist [<!ENTITY a "aaaaaaaaaa">]>`+
		`<plist version="1.0"><string>&a;</string></plist>`))
	add("xml-other-doctype", []byte(`<?xml version="1.0"?><!DOCTYPE html>`+
		`<plist version="1.0"><string>x</string></plist>`))
	return out
}

func putTrailer(body []byte, field int, v uint64) {
	t := body[len(body)-32:]
	for i := 7; i >= 0; i-- {
		t[field+i] = byte(v)
		v >>= 8
	}
}
