package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestBackupAndRestore backs a running dev server up, restores the copy
// into a new data dir, starts a server on it, and has the approved device
// check in there: the store and every key it needs are in the backup.
func TestBackupAndRestore(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	startDev(t, dataDir)
	if _, e, code := cli(dataDir, "user", "add", "alice@example.com"); code != 0 {
		t.Fatal(e)
	}
	profile := filepath.Join(t.TempDir(), "mac.mobileconfig")
	out, e, code := cli(dataDir, "profile", "issue", "--user", "alice@example.com", "-o", profile)
	if code != 0 {
		t.Fatal(e)
	}
	id := regexp.MustCompile(`reserved device (\S+)`).FindStringSubmatch(out)[1]
	if _, e, code := cli(dataDir, "simulate", profile); code != 0 {
		t.Fatal(e)
	}
	if _, e, code := cli(dataDir, "enrollments", "approve", id); code != 0 {
		t.Fatal(e)
	}

	backup := filepath.Join(t.TempDir(), "backup")
	out, e, code = cli(dataDir, "backup", "--to", backup)
	if code != 0 || !strings.Contains(out, "vestibule.db") || !strings.Contains(out, "ca.key") || !strings.Contains(out, "hmac-keys.json") {
		t.Fatalf("backup: %d %q %q", code, out, e)
	}
	if _, e, code := cli(dataDir, "backup", "--to", backup); code == 0 || !strings.Contains(e, "exists") {
		t.Errorf("a second backup into the same folder: %d %q", code, e)
	}
	if fi, err := os.Stat(filepath.Join(backup, "ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the CA key in the backup: %v %v", fi, err)
	}

	// Restore: the backup is a data dir. A server on it serves the device.
	restored, _ := startDev(t, backup)
	state := strings.TrimSuffix(profile, ".mobileconfig") + ".device.json"
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	var dev map[string]any
	if err := json.Unmarshal(b, &dev); err != nil {
		t.Fatal(err)
	}
	p := dev["profile"].(map[string]any)
	old := p["ServerURL"].(string)[:strings.Index(p["ServerURL"].(string), "/mdm")]
	for k, v := range p {
		if s, ok := v.(string); ok {
			p[k] = strings.Replace(s, old, restored, 1)
		}
	}
	b, _ = json.Marshal(dev)
	if err := os.WriteFile(state, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, e, code = cli(backup, "simulate", profile)
	if code != 0 || !strings.Contains(out, "connects again") || strings.Contains(out, "pending") {
		t.Fatalf("the approved device on the restored server: %d %q %q", code, out, e)
	}
	if o, _, _ := cli(backup, "enrollments", "show", id); !strings.Contains(o, "approved") {
		t.Fatalf("the restored enrollment: %q", o)
	}
}
