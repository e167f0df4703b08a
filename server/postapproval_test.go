package server

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/micromdm/plist"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// TestPostApprovalFollowsTheFolder: an approval queues DeviceInformation,
// then each profile of the folder in name order, every command with a UUID
// of its own that its body carries; one reading of the folder serves the
// approvals of the next second, and a profile added, changed or removed
// applies after it.
func TestPostApprovalFollowsTheFolder(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	p := newPostApproval(dir, func() time.Time { return now })
	seen := map[string]bool{}
	queued := func() []string {
		t.Helper()
		cmds, err := p.Commands(enrollment.Enrollment{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range cmds {
			var body struct {
				CommandUUID string
				Command     struct {
					RequestType string
					Payload     []byte
				}
			}
			if err := plist.Unmarshal(c.Body, &body); err != nil {
				t.Fatal(err)
			}
			if body.CommandUUID != c.UUID || body.Command.RequestType != c.RequestType || seen[c.UUID] {
				t.Fatalf("command %s (%s): body says %s (%s), or the UUID came before", c.UUID, c.RequestType, body.CommandUUID, body.Command.RequestType)
			}
			seen[c.UUID] = true
			got = append(got, c.RequestType+":"+string(body.Command.Payload))
		}
		return got
	}
	expect := func(want ...string) {
		t.Helper()
		if got := queued(); !slices.Equal(got, want) {
			t.Fatalf("queued %q, want %q", got, want)
		}
	}

	write("b.mobileconfig", "<plist>b</plist>")
	write("a.mobileconfig", "<plist>a</plist>")
	write("notes.txt", "not a profile")
	expect("DeviceInformation:", "InstallProfile:<plist>a</plist>", "InstallProfile:<plist>b</plist>")
	expect("DeviceInformation:", "InstallProfile:<plist>a</plist>", "InstallProfile:<plist>b</plist>")

	write("c.mobileconfig", "<plist>c</plist>")
	write("a.mobileconfig", "<plist>a, changed</plist>")
	if err := os.Remove(filepath.Join(dir, "b.mobileconfig")); err != nil {
		t.Fatal(err)
	}
	now = now.Add(profileReload - time.Millisecond)
	expect("DeviceInformation:", "InstallProfile:<plist>a</plist>", "InstallProfile:<plist>b</plist>")
	now = now.Add(time.Millisecond)
	expect("DeviceInformation:", "InstallProfile:<plist>a, changed</plist>", "InstallProfile:<plist>c</plist>")

	// A clock set back reads the folder again rather than serving it
	// until the clock catches up.
	write("a.mobileconfig", "<plist>a, once more</plist>")
	now = now.Add(-time.Hour)
	expect("DeviceInformation:", "InstallProfile:<plist>a, once more</plist>", "InstallProfile:<plist>c</plist>")

	// A profile too large fails the approval, and every one after it
	// until it is fixed: nothing is queued without it.
	write("d.mobileconfig", strings.Repeat("x", maxProfileSize+1))
	now = now.Add(profileReload)
	for range 2 {
		if cmds, err := p.Commands(enrollment.Enrollment{}); err == nil {
			t.Fatalf("a profile over %d bytes queued %d commands", maxProfileSize, len(cmds))
		}
	}
	write("d.mobileconfig", "<plist>d</plist>")
	expect("DeviceInformation:", "InstallProfile:<plist>a, once more</plist>", "InstallProfile:<plist>c</plist>", "InstallProfile:<plist>d</plist>")
}

// BenchmarkPostApprovalCommands: the commands one approval queues, with
// the example profile in the folder.
func BenchmarkPostApprovalCommands(b *testing.B) {
	dir := b.TempDir()
	profile, err := os.ReadFile(filepath.Join("..", "configs", "profiles", "restrictions.mobileconfig"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "restrictions.mobileconfig"), profile, 0o600); err != nil {
		b.Fatal(err)
	}
	p := newPostApproval(dir, time.Now)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Commands(enrollment.Enrollment{}); err != nil {
			b.Fatal(err)
		}
	}
}
