package testenv

import (
	"os"
	"testing"
)

// TestRequireNamesKnownServices fails the suite when the environment's
// VESTIBULE_TEST_REQUIRE has a typo, even where every service is present.
func TestRequireNamesKnownServices(t *testing.T) {
	if bad := Unknown(); len(bad) > 0 {
		t.Fatalf("%s=%s names unknown services %v", RequireEnv, os.Getenv(RequireEnv), bad)
	}
}

func TestUnknown(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want int
	}{{"", 0}, {"postgres,vault", 0}, {"all", 0}, {" postgres , browser ", 0}, {"postgre", 1}, {"postgres,chrome,x", 2}} {
		t.Setenv(RequireEnv, tc.env)
		if got := Unknown(); len(got) != tc.want {
			t.Errorf("%q: unknown %v, want %d", tc.env, got, tc.want)
		}
	}
}
