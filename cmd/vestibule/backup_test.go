package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// loadDevice is one device the load enrolled while the backup ran.
type loadDevice struct {
	id, profile    string
	approvedBefore bool // approved before the backup started
}

// TestBackupAndRestore backs a running dev server up while devices enroll
// and get approved, restores the copy into a new data dir, starts a server
// on it, and has every device approved in the copy check in there: the
// store is consistent and every key it needs is in the backup.
func TestBackupAndRestore(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	startDev(t, dataDir)
	if _, e, code := cli(dataDir, "user", "add", "alice@example.com"); code != 0 {
		t.Fatal(e)
	}
	dir := t.TempDir()
	var (
		mu        sync.Mutex
		devices   []*loadDevice
		backingUp atomic.Bool
		stop      atomic.Bool
		wg        sync.WaitGroup
		loadErr   error
		approved  = make(chan struct{}, 100)
	)
	wg.Add(1)
	go func() { // the load: enroll, simulate, approve, until told to stop
		defer wg.Done()
		for i := 0; !stop.Load() && i < 40; i++ {
			profile := filepath.Join(dir, fmt.Sprintf("mac%d.mobileconfig", i))
			out, e, code := cli(dataDir, "profile", "issue", "--user", "alice@example.com", "-o", profile)
			if code != 0 {
				loadErr = fmt.Errorf("profile issue: %s", e)
				return
			}
			d := &loadDevice{id: regexp.MustCompile(`reserved device (\S+)`).FindStringSubmatch(out)[1], profile: profile}
			if _, e, code := cli(dataDir, "simulate", profile); code != 0 {
				loadErr = fmt.Errorf("simulate: %s", e)
				return
			}
			if _, e, code := cli(dataDir, "enrollments", "approve", d.id); code != 0 {
				loadErr = fmt.Errorf("approve: %s", e)
				return
			}
			d.approvedBefore = !backingUp.Load() // committed before the backup began
			mu.Lock()
			devices = append(devices, d)
			mu.Unlock()
			approved <- struct{}{}
		}
	}()
	for range 3 {
		<-approved
	}
	backup := filepath.Join(t.TempDir(), "backup")
	backingUp.Store(true)
	out, e, code := cli(dataDir, "backup", "--to", backup)
	<-approved // the load went on during and after the backup
	stop.Store(true)
	wg.Wait()
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	if code != 0 || !strings.Contains(out, "vestibule.db") || !strings.Contains(out, "ca.key") || !strings.Contains(out, "hmac-keys.json") {
		t.Fatalf("backup: %d %q %q", code, out, e)
	}
	if _, e, code := cli(dataDir, "backup", "--to", backup); code == 0 || !strings.Contains(e, "exists") {
		t.Errorf("a second backup into the same folder: %d %q", code, e)
	}
	if fi, err := os.Stat(filepath.Join(backup, "ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the CA key in the backup: %v %v", fi, err)
	}

	// Restore: the backup is a data dir. A server on it serves the devices
	// approved in it, and every approval made before the backup is there.
	restored, _ := startDev(t, backup)
	inCopy := 0
	for _, d := range devices {
		o, _, code := cli(backup, "enrollments", "show", d.id)
		switch {
		case code == 0 && strings.Contains(o, "approved"):
			inCopy++
			pointAt(t, d.profile, restored)
			out, e, code := cli(backup, "simulate", d.profile)
			if code != 0 || !strings.Contains(out, "connects again") || strings.Contains(out, "pending") {
				t.Errorf("device %s on the restored server: %d %q %q", d.id, code, out, e)
			}
		case d.approvedBefore:
			t.Errorf("device %s was approved before the backup began but is not in the copy: %q", d.id, o)
		}
	}
	t.Logf("%d devices enrolled during the load, %d approved in the copy", len(devices), inCopy)
	if inCopy < 3 {
		t.Errorf("only %d approved devices in the copy", inCopy)
	}
}

// pointAt rewrites a simulated device's saved profile to talk to url.
func pointAt(t *testing.T, profile, url string) {
	t.Helper()
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
			p[k] = strings.Replace(s, old, url, 1)
		}
	}
	b, _ = json.Marshal(dev)
	if err := os.WriteFile(state, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
