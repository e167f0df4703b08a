package web

import (
	"testing"
	"time"
)

func TestAgo(t *testing.T) {
	for d, want := range map[time.Duration]string{
		10 * time.Second: "just now", 12 * time.Minute: "12 min ago", 5 * time.Hour: "5 h ago", 72 * time.Hour: "3 days ago",
		-59 * time.Minute: "in 59 min", -30 * time.Second: "just now",
	} {
		if got := ago(d); got != want {
			t.Errorf("ago(%s) = %q, want %q", d, got, want)
		}
	}
}
