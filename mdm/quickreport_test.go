package mdm

import (
	"reflect"
	"strings"
	"testing"

	"github.com/vestibule-mdm/vestibule/mdm/plistguard"
)

// reportBody is an XML command report with Apple's prolog around dict.
func reportBody(dict string) []byte {
	return []byte(xmlDeclaration + "\n" + plistDoctype + "\n<plist version=\"1.0\">\n<dict>\n" + dict + "</dict>\n</plist>\n")
}

// agreesWithDecoder fails t when read (a quick reader) accepts body and
// the plist decoder, behind its guard, reads it otherwise into a T or
// refuses it.
func agreesWithDecoder[T any](t *testing.T, body []byte, read func([]byte) (T, bool)) (quick bool) {
	t.Helper()
	got, ok := read(body)
	if !ok {
		return false
	}
	var want T
	if err := plistguard.Unmarshal(body, &want, plistguard.DefaultLimits()); err != nil {
		t.Fatalf("the quick reader read a body the decoder refuses (%v): %q", err, body)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the quick reader read %+v, the decoder %+v, from %q", got, want, body)
	}
	return true
}

func TestQuickReport(t *testing.T) {
	idle := "\t<key>Status</key>\n\t<string>Idle</string>\n\t<key>UDID</key>\n\t<string>0000FE00-5FADE1A3D4EE0A4C</string>\n"
	for _, tc := range []struct {
		name  string
		body  []byte
		quick bool
	}{
		{"idle as a device sends it", readTestdata(t, "report_idle.plist"), true},
		{"idle", reportBody(idle), true},
		{"without prolog", []byte("<plist version=\"1.0\"><dict><key>Status</key><string>Idle</string><key>UDID</key><string>u</string></dict></plist>"), true},
		{"acknowledged", reportBody("<key>CommandUUID</key><string>c-1</string><key>Status</key><string>Acknowledged</string><key>UDID</key><string>u</string>"), true},
		{"user channel", reportBody("<key>Status</key><string>Idle</string><key>UserID</key><string>A-B</string><key>UDID</key><string>u</string>"), true},
		{"empty string", reportBody("<key>Status</key><string/><key>UDID</key><string></string>"), true},
		{"empty dict", reportBody(""), true},
		{"text with spaces and punctuation", reportBody("<key>UserLongName</key><string>Jane Q. Appleseed (IT) #4</string><key>Status</key><string>Idle</string>"), true},
		{"every field", reportBody("<key>Status</key><string>Idle</string><key>UDID</key><string>u</string><key>CommandUUID</key><string>c</string>" +
			"<key>EnrollmentID</key><string>e</string><key>EnrollmentUserID</key><string>eu</string><key>UserID</key><string>i</string>" +
			"<key>UserShortName</key><string>s</string><key>UserLongName</key><string>l</string>"), true},
		{"carriage returns between elements", []byte("<plist version=\"1.0\">\r<dict>\r<key>Status</key>\r<string>Idle</string>\r</dict>\r</plist>\r"), true},

		// The decoder decides each of these.
		{"entity", reportBody("<key>Status</key><string>Idle</string><key>UserLongName</key><string>A &amp; B</string>"), false},
		{"character reference", reportBody("<key>Status</key><string>&#73;dle</string>"), false},
		{"CDATA", reportBody("<key>Status</key><string><![CDATA[Idle]]></string>"), false},
		{"comment", reportBody("<!-- x --><key>Status</key><string>Idle</string>"), false},
		{"carriage return in text", reportBody("<key>UserLongName</key><string>a\rb</string>"), false},
		{"newline in text", reportBody("<key>UserLongName</key><string>a\nb</string>"), false},
		{"]]> in text", reportBody("<key>Status</key><string>a]]>b</string>"), false},
		{"string closed by another end tag", []byte("<plist version=\"1.0\"><dict><key>Status</key><string>Idle</key></dict></plist>"), false},
		// Text must end at its own end tag: a reader that stops at any '<'
		// would take these, and the decoder refuses each.
		{"key running into the value", []byte("<plist version=\"1.0\"><dict><key>Status<string>Idle</string></dict></plist>"), false},
		{"string running into the next key", reportBody("<key>Status</key><string>Idle<key>UDID</key><string>u</string>"), false},
		{"form feed between elements", []byte("<plist version=\"1.0\"><dict>\f<key>Status</key><string>Idle</string></dict></plist>"), false},
		{"no end of plist", []byte("<plist version=\"1.0\"><dict><key>Status</key><string>Idle</string></dict>"), false},
		{"non-ASCII text", reportBody("<key>UserLongName</key><string>Zoë’s 🍎 \uFFFD</string>"), true},
		{"a character XML does not allow", reportBody("<key>UserLongName</key><string>a\uFFFEb</string>"), false},
		{"invalid UTF-8", reportBody("<key>UserLongName</key><string>a\xffb</string>"), false},
		{"a surrogate encoded in UTF-8", reportBody("<key>UserLongName</key><string>a\xed\xa0\x80b</string>"), false},
		{"DEL", reportBody("<key>UserLongName</key><string>a\x7fb</string>"), false},
		{"data value", reportBody("<key>Status</key><data>SWRsZQ==</data>"), false},
		{"duplicate key", reportBody("<key>Status</key><string>Idle</string><key>Status</key><string>NotNow</string>"), false},
		{"unknown key", reportBody("<key>Status</key><string>Idle</string><key>QueryResponses</key><string>x</string>"), false},
		{"key of another case", reportBody("<key>status</key><string>Idle</string>"), false},
		{"key with space", reportBody("<key> Status</key><string>Idle</string>"), false},
		{"error chain", readTestdata(t, "report_error.plist"), false},
		{"boolean value", reportBody("<key>Status</key><true/>"), false},
		{"key without value", reportBody("<key>Status</key>"), false},
		{"attribute", reportBody("<key>Status</key><string a=\"1\">Idle</string>"), false},
		{"text between elements", reportBody("x<key>Status</key><string>Idle</string>"), false},
		{"other plist version", []byte("<plist version=\"2.0\"><dict></dict></plist>"), false},
		{"array root", []byte("<plist version=\"1.0\"><array></array></plist>"), false},
		{"trailing element", append(reportBody(idle), "<x/>"...), false},
		{"trailing text", append(reportBody(idle), "x"...), false},
		{"truncated", reportBody(idle)[:len(reportBody(idle))-5], false},
		{"unclosed string", []byte("<plist version=\"1.0\"><dict><key>Status</key><string>Idle"), false},
		{"binary", []byte("bplist00\xd1\x01\x02"), false},
		{"too large", reportBody(idle + strings.Repeat("\n", 5<<10)), false},
		{"empty", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if quick := agreesWithDecoder(t, tc.body, quickReport); quick != tc.quick {
				t.Fatalf("read quickly: %v, want %v", quick, tc.quick)
			}
		})
	}
}

// TestDecodeCommandReportEitherWay: a report reads the same whether the
// quick reader or the decoder read it, and what the decoder refuses is
// still refused.
func TestDecodeCommandReportEitherWay(t *testing.T) {
	for _, tc := range []struct {
		body []byte
		want CommandReport
	}{
		{reportBody("<key>Status</key><string>Idle</string><key>UDID</key><string>u-1</string>"),
			CommandReport{Enrollment: Enrollment{UDID: "u-1"}, Status: StatusIdle}},
		{reportBody("<key>Status</key><string>Idle</string><key>UDID</key><string>u-1</string><key>UserLongName</key><string>A &amp; B</string>"),
			CommandReport{Enrollment: Enrollment{UDID: "u-1", UserLongName: "A & B"}, Status: StatusIdle}},
	} {
		got, err := DecodeCommandReport(tc.body)
		if err != nil {
			t.Fatal(err)
		}
		tc.want.Raw = tc.body
		if !reflect.DeepEqual(*got, tc.want) {
			t.Errorf("got %+v, want %+v", *got, tc.want)
		}
	}
	for _, body := range [][]byte{
		reportBody("<key>Status</key><string>Idle</string>"),                                          // no identity
		reportBody("<key>UDID</key><string>u</string>"),                                               // no status
		reportBody("<key>Status</key><string>Sleeping</string><key>UDID</key><string>u</string>"),     // unknown status
		reportBody("<key>Status</key><string>Acknowledged</string><key>UDID</key><string>u</string>"), // no CommandUUID
	} {
		if _, err := DecodeCommandReport(body); err == nil {
			t.Errorf("accepted %q", body)
		}
	}
}

// FuzzQuickReport holds the quick reader to the decoder: whatever body it
// accepts, the guard and the plist decoder accept and read the same.
func FuzzQuickReport(f *testing.F) {
	for _, name := range []string{"report_idle.plist", "report_error.plist"} {
		f.Add(readTestdata(f, name))
	}
	f.Add(reportBody("<key>Status</key><string/><key>UDID</key><string>u</string>"))
	f.Add([]byte("<plist version=\"1.0\"><dict><key>Status</key><string>Idle</string></dict></plist>"))
	addHostileSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		agreesWithDecoder(t, body, quickReport)
	})
}

func BenchmarkDecodeCommandReport(b *testing.B) {
	for _, name := range []string{"report_idle.plist", "report_error.plist"} {
		body := readTestdata(b, name)
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := DecodeCommandReport(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
