package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/store"
)

// cli runs a command on dataDir, without making a store first.
func cli(dataDir string, args ...string) (string, string, int) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"--dev", "--data-dir", dataDir}, args...), &out, &errOut)
	return out.String(), errOut.String(), code
}

// TestFirstFiveMinutes follows a newcomer beside `serve --dev` on a port
// of its own: profiles point at that server, typos and mistyped stores
// fail, messages are for people, and `simulate` plays the Mac through
// pending, approval and service.
func TestFirstFiveMinutes(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	url, _ := startDev(t, dataDir)
	if _, e, code := cli(dataDir, "user", "add", "alice@example.com"); code != 0 {
		t.Fatal(e)
	}

	// 1. Profiles point at the running server, and say so.
	dir := t.TempDir()
	profile := filepath.Join(dir, "mac.mobileconfig")
	out, errOut, code := cli(dataDir, "profile", "issue", "--user", "alice@example.com", "-o", profile)
	if code != 0 || !strings.Contains(errOut, "using the public URL the running server recorded: "+url) {
		t.Fatalf("profile issue: %d %q %q", code, out, errOut)
	}
	if b, _ := os.ReadFile(profile); !bytes.Contains(b, []byte(url+"/mdm/checkin")) {
		t.Fatal("the profile does not point at the running server")
	}
	id := regexp.MustCompile(`reserved device (\S+)`).FindStringSubmatch(out)[1]

	// 2. Typos fail, with a suggestion.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"enrollments", "aprove", id}, `did you mean approve`},
		{[]string{"user", "disable", "x"}, `unknown command "disable" for "vestibule user"`},
		{[]string{"token", "delete", "y"}, `unknown command "delete" for "vestibule token"`},
	} {
		if _, e, code := cli(dataDir, tc.args...); code == 0 || !strings.Contains(e, tc.want) {
			t.Errorf("%v: exit %d, %q", tc.args, code, e)
		}
	}
	if _, e, code := cli(dataDir, "enrollments"); code != 0 || e != "" {
		t.Errorf("a group alone prints its help: %d %q", code, e)
	}

	// 3. A mistyped data dir is an error, not a new store.
	typo := filepath.Join(t.TempDir(), "dta")
	if _, e, code := cli(typo, "user", "list"); code == 0 || !strings.Contains(e, "there is no Vestibule store") {
		t.Errorf("a mistyped --data-dir: %d %q", code, e)
	}
	if _, err := os.Stat(typo); err == nil {
		t.Error("a mistyped --data-dir was created")
	}

	// 5. A profile that cannot be written leaves no reservation behind.
	if _, e, code := cli(dataDir, "profile", "issue", "--user", "alice@example.com", "-o", filepath.Join(dir, "missing", "p.mobileconfig")); code == 0 ||
		!strings.Contains(e, "cannot write the profile") {
		t.Errorf("profile issue into a missing folder: %d %q", code, e)
	}
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(dataDir, "vestibule.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if list, _ := st.ListReservations(context.Background(), enrollment.ReservationFilter{}, time.Now()); len(list) != 1 {
		t.Errorf("%d reservations after a failed issue, want the first one only", len(list))
	}

	// 6. Messages for people.
	if _, e, _ := cli(dataDir, "profile", "issue", "--user", "nobody@example.com", "-o", filepath.Join(dir, "n.mobileconfig")); !strings.Contains(e,
		"nobody@example.com is not a known user: add them with `vestibule user add nobody@example.com`") || strings.Contains(e, "forbidden") {
		t.Errorf("unknown user: %q", e)
	}

	// 4. The simulated Mac: pending, then approved and served.
	out, e, code := cli(dataDir, "simulate", profile)
	if code != 0 || !strings.Contains(out, "pending, nothing received but the attestation question") {
		t.Fatalf("simulate before approval: %d %q %q", code, out, e)
	}
	// 7. One vocabulary: deny is for pending, revoke for approved; a unique
	// 8-character prefix names an enrollment.
	short := id[:8]
	if _, e, code := cli(dataDir, "enrollments", "revoke", short, "--reason", "x"); code == 0 || !strings.Contains(e, "is pending") {
		t.Errorf("revoke of a pending enrollment: %d %q", code, e)
	}
	if o, e, code := cli(dataDir, "enrollments", "approve", short, "--note", "the simulated Mac"); code != 0 || !strings.Contains(o, "approved "+id) {
		t.Fatalf("approve by prefix: %d %q %q", code, o, e)
	}
	out, e, code = cli(dataDir, "simulate", profile)
	if code != 0 || !strings.Contains(out, "received and acknowledged") || !strings.Contains(out, "    DeviceInformation\n") {
		t.Fatalf("simulate after approval: %d %q %q", code, out, e)
	}
	// Served, with nothing queued: approved, not "pending".
	out, e, code = cli(dataDir, "simulate", profile)
	if code != 0 || !strings.Contains(out, "approved, no command waiting") || strings.Contains(out, "pending") {
		t.Fatalf("simulate with nothing queued: %d %q %q", code, out, e)
	}
	if _, e, code := cli(dataDir, "enrollments", "deny", short, "--reason", "x"); code == 0 || !strings.Contains(e, "use `enrollments revoke`") {
		t.Errorf("deny of an approved enrollment: %d %q", code, e)
	}
	if o, _, code := cli(dataDir, "enrollments", "revoke", short, "--reason", "lost"); code != 0 || !strings.Contains(o, "revoked "+id) {
		t.Errorf("revoke: %d %q", code, o)
	}
	out, _, code = cli(dataDir, "simulate", profile)
	if code == 0 || strings.Contains(out, "acknowledged") {
		t.Errorf("a revoked simulated Mac was served: %d %q", code, out)
	}
	// The least privilege by default.
	if _, e, code := cli(dataDir, "token", "create", "--name", "newcomer"); code != 0 || !strings.Contains(e, "(viewer)") {
		t.Errorf("token create default: %d %q", code, e)
	}
}
