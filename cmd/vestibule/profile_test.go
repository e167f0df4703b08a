package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vestibule-mdm/vestibule/internal/testenv"
)

func vestibule(t *testing.T, dataDir string, args ...string) (string, string, int) {
	t.Helper()
	// Admin commands need a store, as one a server made: make it once.
	if _, err := os.Stat(filepath.Join(dataDir, "vestibule.db")); err != nil && len(args) > 0 && args[0] != "migrate" {
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		var o, e bytes.Buffer
		if code := run(context.Background(), []string{"--dev", "--data-dir", dataDir, "migrate"}, &o, &e); code != 0 {
			t.Fatalf("migrate: %s", e.String())
		}
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"--dev", "--data-dir", dataDir}, args...), &out, &errOut)
	return out.String(), errOut.String(), code
}

// TestProfileIssueVerifiesWithOpenSSL follows the README: add a user, issue
// a profile for them, check its signature with openssl against the dev CA.
func TestProfileIssueVerifiesWithOpenSSL(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	if _, e, code := vestibule(t, dataDir, "user", "add", "alice@example.com"); code != 0 {
		t.Fatal(e)
	}
	p1, p2 := filepath.Join(t.TempDir(), "1.mobileconfig"), filepath.Join(t.TempDir(), "2.mobileconfig")
	out, e, code := vestibule(t, dataDir, "profile", "issue", "--user", "alice@example.com", "-o", p1)
	if code != 0 || !strings.Contains(out, "reserved device") {
		t.Fatalf("profile issue: %d %s %s", code, out, e)
	}
	if _, _, code := vestibule(t, dataDir, "profile", "issue", "--user", "alice@example.com", "-o", p2); code != 0 {
		t.Fatal("second issue failed")
	}
	b1, _ := os.ReadFile(p1)
	b2, _ := os.ReadFile(p2)
	if bytes.Equal(b1, b2) {
		t.Fatal("two issued profiles are identical")
	}
	if fi, _ := os.Stat(p1); fi.Mode().Perm() != 0o600 {
		t.Errorf("profile file mode %v: it carries a one-time secret", fi.Mode().Perm())
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"error/unknown user", []string{"profile", "issue", "--user", "bob@example.com", "-o", filepath.Join(t.TempDir(), "x")}, "not a known user"},
		{"error/no output", []string{"profile", "issue", "--user", "alice@example.com"}, `"output" not set`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, e, code := vestibule(t, dataDir, tc.args...)
			if code == 0 || !strings.Contains(out+e, tc.want) {
				t.Fatalf("exit %d: %s %s", code, out, e)
			}
		})
	}

	openssl := testenv.LookPath(t, "openssl", "openssl", "apt-get install openssl")
	content := filepath.Join(t.TempDir(), "content.plist")
	cmd := exec.Command(openssl, "smime", "-verify", "-inform", "DER", "-in", p1, "-CAfile", filepath.Join(dataDir, "ca.pem"), "-out", content)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, b)
	}
	plist, _ := os.ReadFile(content)
	id := regexp.MustCompile(`reserved device (\S+)`).FindStringSubmatch(out)[1]
	for _, want := range []string{"<string>" + id + "</string>", "/mdm/checkin?t=", "com.apple.security.scep", "<key>Challenge</key>"} {
		if !strings.Contains(string(plist), want) {
			t.Errorf("profile lacks %q", want)
		}
	}
}

func TestTokenCommands(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	out, e, code := vestibule(t, dataDir, "token", "create", "--name", "ci", "--role", "approver")
	if code != 0 || !strings.HasPrefix(out, "vst_") || !strings.Contains(e, "shown once") {
		t.Fatalf("create: %d %q %q", code, out, e)
	}
	if _, e, code := vestibule(t, dataDir, "token", "create", "--name", "ci"); code == 0 || !strings.Contains(e, "taken") {
		t.Errorf("duplicate name: %s", e)
	}
	if _, e, code := vestibule(t, dataDir, "token", "create", "--name", "x", "--role", "user"); code == 0 || !strings.Contains(e, "role must be") {
		t.Errorf("user role: %s", e)
	}
	list, _, _ := vestibule(t, dataDir, "token", "list")
	if !strings.Contains(list, "ci") || strings.Contains(list, strings.TrimSpace(out)) {
		t.Errorf("list: %s", list)
	}
	if o, _, code := vestibule(t, dataDir, "token", "revoke", "ci"); code != 0 || !strings.Contains(o, "revoked") {
		t.Errorf("revoke: %s", o)
	}
	if _, _, code := vestibule(t, dataDir, "token", "revoke", "ci"); code == 0 {
		t.Error("revoking twice succeeded")
	}
}
