package web

import "testing"

func TestSafeNext(t *testing.T) {
	const home = "/console/pending"
	for _, tc := range []struct{ next, want string }{
		{"/console/devices", "/console/devices"},
		{"/console/devices?q=alice&state=approved", "/console/devices?q=alice&state=approved"},
		{"/portal#devices", "/portal#devices"},
		{"/console/devices/a%20b", "/console/devices/a%20b"},
		{"", home},
		{"console/devices", home},
		{"//evil.example", home},
		{"///evil.example", home},
		{"/\\evil.example", home},
		{"/\\/evil.example", home},
		{"\\\\evil.example", home},
		{"/\t/evil.example", home},
		{"/\n/evil.example", home},
		{"/\r\n/evil.example", home},
		{"/\x00/evil.example", home},
		{"/\x7f/evil.example", home},
		{"/%09/evil.example", home},
		{"/%2F/evil.example", home},
		{"/%2f%2fevil.example", home},
		{"/%5Cevil.example", home},
		{"/%5c/evil.example", home},
		{"https://evil.example/", home},
		{"http:evil.example", home},
		{"javascript:alert(1)", home},
		{" /evil", home},
		{"\t//evil.example", home},
		{"/\u00a0/evil.example", home},
		{"/\u2028/evil.example", home},
		{"/%E2%80%A8/evil.example", home},
		{"/%ZZ", home},
	} {
		if got := safeNext(tc.next); got != tc.want {
			t.Errorf("safeNext(%q) = %q, want %q", tc.next, got, tc.want)
		}
	}
}
