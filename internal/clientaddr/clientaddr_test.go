package clientaddr

import (
	"net/netip"
	"testing"
)

func TestForwardedFor(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"no proxy configured peer", "198.51.100.7", []string{"1.2.3.4"}, "198.51.100.7"},
		{"trusted proxy", "10.0.0.2", []string{"198.51.100.7"}, "198.51.100.7"},
		{"client lies at the left", "10.0.0.2", []string{"1.2.3.4, 198.51.100.7"}, "198.51.100.7"},
		{"two trusted hops", "10.0.0.2", []string{"198.51.100.7, 10.0.0.9"}, "198.51.100.7"},
		{"several headers", "10.0.0.2", []string{"1.2.3.4", "198.51.100.7"}, "198.51.100.7"},
		{"garbage hop", "10.0.0.2", []string{"not-an-ip"}, "10.0.0.2"},
		{"no header", "10.0.0.2", nil, "10.0.0.2"},
		{"only trusted hops", "10.0.0.2", []string{"10.0.0.3"}, "10.0.0.2"},
		{"IPv6 proxy", "::1", []string{"2001:db8::7"}, "2001:db8::7"},
		{"mapped IPv4", "10.0.0.2", []string{"::ffff:198.51.100.7"}, "198.51.100.7"},
		{"hop with a port", "10.0.0.2", []string{"198.51.100.7:5555"}, "198.51.100.7"},
		{"IPv6 hop with a port", "10.0.0.2", []string{"[2001:db8::7]:443"}, "2001:db8::7"},
		{"IPv6 hop in brackets", "10.0.0.2", []string{"[2001:db8::7]"}, "2001:db8::7"},
		{"trusted hop with a port", "10.0.0.2", []string{"198.51.100.7, 10.0.0.9:80"}, "198.51.100.7"},
	} {
		if got := forwardedFor(tc.peer, tc.xff, proxies); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := forwardedFor("10.0.0.2", []string{"198.51.100.7"}, nil); got != "10.0.0.2" {
		t.Errorf("without trusted proxies the header was believed: %q", got)
	}
}
