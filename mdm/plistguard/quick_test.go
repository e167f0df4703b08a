package plistguard

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/micromdm/plist"
)

const appleHeader = `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
`

// idleReport is an idle command report as Apple's client writes it.
const idleReport = appleHeader + `<plist version="1.0">
<dict>
	<key>Status</key>
	<string>Idle</string>
	<key>UDID</key>
	<string>0000FE00-5FA1B2C3D4E5F607</string>
</dict>
</plist>
`

// TestQuickXML: documents as devices write them are decided without the
// tokenizer, the same way it decides them; anything unusual is left to it.
func TestQuickXML(t *testing.T) {
	nested := func(n int) string {
		return appleHeader + `<plist version="1.0">` + strings.Repeat("<array>", n) + strings.Repeat("</array>", n) + `</plist>`
	}
	lim := DefaultLimits()
	for _, tc := range []struct {
		name    string
		body    string
		decided bool
	}{
		{"idle report", idleReport, true},
		{"entities and character references", `<plist version="1.0"><string>a &amp; b &lt;c&gt; &#233; &#xE9; &quot;&apos;</string><true/></plist>`, true},
		{"no declaration", `<plist><dict/></plist>`, true},
		{"as deep as allowed", nested(lim.MaxDepth - 1), true},
		{"one level too deep", nested(lim.MaxDepth), true},
		{"far too deep", nested(100_000), true},
		{"too many elements", `<plist><array>` + strings.Repeat(`<true/>`, lim.MaxNodes) + `</array></plist>`, true},
		{"DOCTYPE spaced otherwise", "<!DOCTYPE  plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\"><plist/>", false},
		{"declaration of XML 1.1", `<?xml version="1.1"?><plist/>`, false},
		{"declaration of another encoding", `<?xml version="1.0" encoding="latin1"?><plist/>`, false},
		{"text after the root", `<plist><true/></plist>]]>`, false},
		{"a reference after the root", `<plist><true/></plist>&#x110000;`, false},
		{"text before the root", `&amp;<plist/>`, false},
		{"]]> in text", `<plist><string>]]></string></plist>`, false},
		{"reference beyond Unicode", `<plist><string>&#x110000;</string></plist>`, false},
		{"reference to NUL", `<plist><string>&#0;</string></plist>`, false},
		{"reference to U+FFFE", `<plist><string>&#xFFFE;</string></plist>`, false},
		{"reference to a surrogate", `<plist><string>&#xD800;</string></plist>`, false},
		{"a long reference", `<plist><string>&#99999999;</string></plist>`, false},
		{"malformed before too deep", `<plist>]]>` + strings.Repeat("<array>", 17) + strings.Repeat("</array>", 17) + `</plist>`, false},
		{"comment", `<plist><!-- hi --><dict/></plist>`, false},
		{"CDATA", `<plist><string><![CDATA[<a>]]></string></plist>`, false},
		{"another attribute", `<plist version="1.0"><string xml:space="preserve">a</string></plist>`, false},
		{"unknown entity", `<plist><string>&nbsp;</string></plist>`, false},
		{"bare ampersand", `<plist><string>a & b</string></plist>`, false},
		{"other DOCTYPE", `<!DOCTYPE plist [<!ENTITY a "b">]><plist/>`, false},
		{"processing instruction", `<plist><?php x ?></plist>`, false},
		{"declaration not first", ` <?xml version="1.0"?><plist/>`, false},
		{"unclosed", `<plist><dict>`, false},
		{"end without start", `</plist>`, false},
		{"control byte", "<plist><string>\x01</string></plist>", false},
		{"namespaced name", `<p:plist/>`, false},
		{"no element", `just text`, false},
		{"empty", ``, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			decided, err := quickXML([]byte(tc.body), lim)
			if decided != tc.decided {
				t.Fatalf("decided %v, want %v (%v)", decided, tc.decided, err)
			}
			if decided {
				agree(t, []byte(tc.body), err)
			}
		})
	}
}

// agree fails unless the quick decision err matches the tokenizer's for
// body: the same refusal, or both accept, or the quick path accepts a
// document the tokenizer refuses as malformed (not for a limit), which
// the decoder then refuses too.
func agree(t *testing.T, body []byte, err error) {
	t.Helper()
	want := tokenCheckXML(body, DefaultLimits())
	switch {
	case err == nil && want == nil:
	case err != nil && want != nil:
		if err.Error() != want.Error() {
			t.Fatalf("quick: %v; tokenizer: %v", err, want)
		}
	case err != nil:
		t.Fatalf("quick refused what the tokenizer accepts: %v", err)
	default:
		if !errors.Is(want, ErrRefused) || !strings.Contains(want.Error(), "XML: ") {
			t.Fatalf("quick accepted what the tokenizer refuses for a limit: %v", want)
		}
		var v any
		if plist.Unmarshal(body, &v) == nil {
			t.Fatalf("quick accepted, the tokenizer refused (%v), and the decoder accepts", want)
		}
	}
}

// FuzzQuickXML checks agree on every document the quick path decides.
func FuzzQuickXML(f *testing.F) {
	f.Add([]byte(appleHeader + `<plist version="1.0"><dict><key>Status</key><string>Idle</string></dict></plist>`))
	f.Add([]byte(`<plist><array><array/></array></plist>`))
	f.Add([]byte(`<plist><string>&#x41;&amp;</string></plist>`))
	// What the review found the first version deciding otherwise than
	// the tokenizer: text after the root, references to characters XML
	// does not allow, "]]>" in text before a limit trips.
	f.Add([]byte(`<plist><true/></plist>]]>`))
	f.Add([]byte(`<plist><true/></plist>&#x110000;`))
	f.Add([]byte(`<plist>]]>` + strings.Repeat("<array>", 17) + strings.Repeat("</array>", 17) + `</plist>`))
	f.Add([]byte(`<?xml version="1.1"?><plist>` + strings.Repeat("<array>", 17) + strings.Repeat("</array>", 17) + `</plist>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if decided, err := quickXML(body, DefaultLimits()); decided {
			agree(t, body, err)
		}
		if bytes.HasPrefix(body, []byte("bplist0")) {
			return
		}
		// And the guard as a whole still bounds the decoder.
		if doc, err := Check(body, DefaultLimits()); err == nil {
			var v any
			_ = doc.Decode(&v)
		}
	})
}

// BenchmarkCheckIdleReport is the guard on an idle command report, the
// body of most requests: the quick path, and the tokenizer it spares.
func BenchmarkCheckIdleReport(b *testing.B) {
	body := []byte(idleReport)
	b.Run("quick", func(b *testing.B) {
		for b.Loop() {
			if decided, err := quickXML(body, DefaultLimits()); !decided || err != nil {
				b.Fatal(decided, err)
			}
		}
	})
	b.Run("tokenizer", func(b *testing.B) {
		for b.Loop() {
			if err := tokenCheckXML(body, DefaultLimits()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
