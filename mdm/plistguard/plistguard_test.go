package plistguard_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/micromdm/plist"

	"github.com/vestibule-mdm/vestibule/internal/plisttest"
	"github.com/vestibule-mdm/vestibule/mdm/plistguard"
)

func TestHostileDocumentsAreRefused(t *testing.T) {
	for _, h := range plisttest.HostileDocuments() {
		t.Run(h.Name, func(t *testing.T) {
			_, err := plistguard.Check(h.Body, plistguard.DefaultLimits())
			if !errors.Is(err, plistguard.ErrRefused) {
				t.Fatalf("Check(%d bytes) = %v, want ErrRefused", len(h.Body), err)
			}
		})
	}
}

// message is an MDM check-in shaped document with every kind of value.
var message = map[string]any{
	"MessageType":  "Authenticate",
	"UDID":         "0000FE00-5FADE1A3D4EE0A4C",
	"SerialNumber": "C02XL0GHJGH5",
	"Token":        []byte{1, 2, 3, 4},
	"Awaiting":     true,
	"Count":        42,
	"List":         []any{"a", map[string]any{"k": "v"}, []any{}, false},
}

func TestWellFormedDocumentsDecodeAsWithoutTheGuard(t *testing.T) {
	xmlBody, err := plist.Marshal(message)
	if err != nil {
		t.Fatal(err)
	}
	testdata, err := filepath.Glob("../testdata/*.plist")
	if err != nil || len(testdata) == 0 {
		t.Fatalf("no device plists in ../testdata: %v", err)
	}
	cases := map[string][]byte{"binary": plisttest.Encode(message), "xml": xmlBody}
	for _, f := range testdata {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cases[filepath.Base(f)] = b
	}
	b := plisttest.New()
	b.RefSize, b.OffsetSize = 1, 1
	cases["binary-1-byte-sizes"] = b.Bytes(b.Value(map[string]any{"Status": "Idle", "UDID": "x"}))
	b = plisttest.New()
	cases["binary-utf16"] = b.Bytes(b.Dict([]int{b.Str("Name")}, []int{b.UTF16("Alice’s Mac")}))
	// Equal strings shared by reference, as Apple's writer does.
	b = plisttest.New()
	k := b.Str("PayloadType")
	cases["binary-shared-keys"] = b.Bytes(b.Array(b.Dict([]int{k}, []int{b.Str("a")}), b.Dict([]int{k}, []int{b.Str("b")})))

	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			var want, got any
			if err := plist.Unmarshal(body, &want); err != nil {
				t.Fatalf("plist.Unmarshal: %v", err)
			}
			if err := plistguard.Unmarshal(body, &got, plistguard.DefaultLimits()); err != nil {
				t.Fatalf("plistguard.Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %#v, want %#v", got, want)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	nested := func(levels int) any {
		var v any = "leaf"
		for i := 1; i < levels; i++ {
			v = []any{v}
		}
		return v
	}
	xmlNested := func(levels int) []byte {
		// <plist> is one level, the string another.
		return []byte(`<plist version="1.0">` + strings.Repeat("<array>", levels-2) + `<string>x</string>` +
			strings.Repeat("</array>", levels-2) + `</plist>`)
	}
	many := func(n int) any {
		items := make([]any, n)
		for i := range items {
			items[i] = true
		}
		return items
	}
	lim := plistguard.Limits{MaxDepth: 5, MaxNodes: 100, MaxPayload: 1000}
	for _, tc := range []struct {
		name string
		body []byte
		ok   bool
	}{
		// Binary depth counts containers: four arrays around a string.
		{"binary/depth at the limit", plisttest.Encode(nested(5)), true},
		{"binary/depth over the limit", plisttest.Encode(nested(7)), false},
		{"xml/depth at the limit", xmlNested(5), true},
		{"xml/depth over the limit", xmlNested(6), false},
		{"binary/nodes at the limit", plisttest.Encode(many(99)), true},
		{"binary/nodes over the limit", plisttest.Encode(many(100)), false},
		{"binary/payload at the limit", plisttest.Encode(strings.Repeat("a", 500)), true},
		{"binary/payload over the limit", plisttest.Encode(strings.Repeat("a", 501)), false},
		{"xml/payload at the limit", []byte(`<plist><string>` + strings.Repeat("a", 220) + `</string></plist>`), true},
		{"xml/payload over the limit", []byte(`<plist><string>` + strings.Repeat("a", 260) + `</string></plist>`), false},
		{"xml/comments count", []byte(`<plist><!--` + strings.Repeat("a", 260) + `--><true/></plist>`), false},
		{"xml/entity reference", []byte(`<plist><string>&unknown;</string></plist>`), false},
		{"xml/predefined entities", []byte(`<plist><string>&lt;&amp;&#65;</string></plist>`), true},
		{"xml/processing instruction", []byte(`<?evil x?><plist><true/></plist>`), false},
		{"xml/empty", []byte(``), false},
		{"binary/bplist01", append([]byte("bplist01"), plisttest.Encode(true)[8:]...), false},
		{"binary/truncated", plisttest.Encode(message)[:40], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := plistguard.Check(tc.body, lim)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && !errors.Is(err, plistguard.ErrRefused) {
				t.Fatalf("Check = %v, want ErrRefused", err)
			}
		})
	}
}

// TestWorstAcceptedDocumentsStayWithinMemory decodes the largest documents
// the default limits accept, shaped to cost the decoder most, and bounds the
// heap they allocate (TotalAlloc is an upper bound of what they add to the
// live heap): the review's bar is 64 MB for any body within the 10 MB limit
// of the command-report route.
func TestWorstAcceptedDocumentsStayWithinMemory(t *testing.T) {
	lim := plistguard.DefaultLimits()
	const budget = 64 << 20
	const bodyLimit = 10 << 20

	for _, tc := range worstCases(lim) {
		body := tc.body
		t.Run(tc.name, func(t *testing.T) {
			if len(body) > bodyLimit {
				t.Fatalf("body of %d bytes is over the route's limit", len(body))
			}
			if _, err := plistguard.Check(body, lim); err != nil {
				t.Fatalf("the worst case should be accepted: %v", err)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var v any
			if err := plistguard.Unmarshal(body, &v, lim); err != nil {
				t.Fatalf("decode: %v", err)
			}
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d-byte body: %.1f MB allocated", len(body), float64(alloc)/(1<<20))
			if alloc > budget {
				t.Fatalf("decoding allocated %d MB, over the %d MB budget", alloc>>20, budget>>20)
			}
		})
	}
}

type worstCase struct {
	name string
	body []byte
}

// worstCases are the largest documents lim accepts, each shaped to cost
// the decoder most in one way.
func worstCases(lim plistguard.Limits) []worstCase {
	shared := func(size int) []byte {
		b := plisttest.New()
		s := b.Str(strings.Repeat("A", size))
		items := make([]int, lim.MaxNodes-2)
		for i := range items {
			items[i] = s
		}
		return b.Bytes(b.Array(items...))
	}
	bigDict := func() []byte {
		b := plisttest.New()
		n := (lim.MaxNodes - 1) / 2
		keys, vals := make([]int, n), make([]int, n)
		v := b.Bool(true)
		for i := range keys {
			keys[i] = b.Str(strings.Repeat("k", 8) + string(rune('a'+i%26)) + strings.Repeat("x", i%7))
			vals[i] = v
		}
		return b.Bytes(b.Dict(keys, vals))
	}
	xmlElements := func() []byte {
		return []byte(`<plist><array>` + strings.Repeat(`<true/>`, lim.MaxNodes-2) + `</array></plist>`)
	}
	xmlText := func() []byte {
		return []byte(`<plist><string>` + strings.Repeat("A", lim.MaxPayload/4-200) + `</string></plist>`)
	}
	xmlData := func() []byte {
		return []byte(`<plist><data>` + strings.Repeat("QUFB", (lim.MaxPayload/4-200)/4) + `</data></plist>`)
	}
	return []worstCase{
		{"binary/one big data", plisttest.Encode(make([]byte, lim.MaxPayload/2-16))},
		{"binary/one big utf16 string", plisttest.Encode(strings.Repeat("é", lim.MaxPayload/13-16))},
		{"binary/shared string", shared(lim.MaxPayload/(2*lim.MaxNodes) - 1)},
		{"binary/big dictionary", bigDict()},
		{"xml/many elements", xmlElements()},
		{"xml/one big string", xmlText()},
		{"xml/one big data", xmlData()},
	}
}

// BenchmarkWorstAccepted reports the CPU each worst case costs: check plus
// decode (the review's bar is one second).
func BenchmarkWorstAccepted(b *testing.B) {
	lim := plistguard.DefaultLimits()
	for _, tc := range worstCases(lim) {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(tc.body)))
			for b.Loop() {
				var v any
				if err := plistguard.Unmarshal(tc.body, &v, lim); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCheckHostile reports what refusing each hostile document costs.
func BenchmarkCheckHostile(b *testing.B) {
	lim := plistguard.DefaultLimits()
	for _, h := range plisttest.HostileDocuments() {
		b.Run(h.Name, func(b *testing.B) {
			for b.Loop() {
				_, _ = plistguard.Check(h.Body, lim)
			}
		})
	}
}
