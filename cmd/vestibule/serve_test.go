package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
	"github.com/vestibule-mdm/vestibule/server"
	"github.com/vestibule-mdm/vestibule/store"
)

// syncBuffer is written by the command and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDev runs `serve --dev` in-process on a random port and returns its
// URL and printed banner once it answers.
func startDev(t *testing.T, dataDir string) (url, banner string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir", dataDir}, &out, &errOut)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("serve exited %d: %s", code, errOut.String())
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not shut down")
		}
	})
	urlRE := regexp.MustCompile(`URL:\s+(http://127\.0\.0\.1:\d+)`)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := urlRE.FindStringSubmatch(out.String()); m != nil {
			return m[1], out.String()
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited %d early: %s", code, errOut.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("serve printed no URL: %s %s", out.String(), errOut.String())
	return "", ""
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeDev(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	url, banner := startDev(t, dataDir)

	if code, body := get(t, url+"/healthz"); code != 200 || !strings.Contains(body, `"ok"`) {
		t.Errorf("/healthz: %d %s", code, body)
	}
	if code, body := get(t, url+"/readyz"); code != 200 || !strings.Contains(body, `"migrations":"ok"`) || !strings.Contains(body, `"database":"ok"`) {
		t.Errorf("/readyz: %d %s", code, body)
	}
	code, body := get(t, url+"/metrics")
	if code != 200 || !strings.Contains(body, `vestibule_http_requests_total{code="200",method="GET",route="GET /readyz"} 1`) {
		t.Errorf("/metrics: %d, request counter by route missing", code)
	}
	if code, _ := get(t, url+"/no/such/page"); code != 404 {
		t.Errorf("unknown path: %d", code)
	}

	// The printed password is the dev admin's, and only its hash is stored.
	m := regexp.MustCompile(`Password:\s+(\S+)`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("no password in banner: %s", banner)
	}
	cfg, err := config.Load(config.Overrides{Dev: true, DataDir: dataDir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), cfg.Database.DSN, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	admin, err := st.UserByEmail(context.Background(), server.DevAdminEmail)
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.VerifyPassword(admin.PasswordHash, m[1]); err != nil {
		t.Errorf("printed password does not match the admin account: %v", err)
	}
}

// TestAdminCommandsBesideServer runs the CLI on the data dir of a running
// dev server, as the README tells an admin to.
func TestAdminCommandsBesideServer(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	startDev(t, dataDir)
	csv := filepath.Join(t.TempDir(), "users.csv")
	writeTestFile(t, csv, "email,name,role\ncarol@example.com,Carol,approver\n")

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"ok/add", []string{"user", "add", "Bob@Example.com", "--name", "Bob"}, 0, "added bob@example.com (user)"},
		{"error/add twice", []string{"user", "add", "bob@example.com"}, 1, "already exists"},
		{"error/bad email", []string{"user", "add", "bob"}, 1, "not an e-mail address"},
		{"error/bad role", []string{"user", "add", "eve@example.com", "--role", "root"}, 1, "not one of user"},
		{"ok/import", []string{"user", "import", csv}, 0, "1 created, 0 updated"},
		{"ok/list", []string{"user", "list"}, 0, "carol@example.com  Carol"},
		{"ok/list json", []string{"user", "list", "--json"}, 0, `"email": "bob@example.com"`},
		{"ok/migrate is idempotent", []string{"migrate"}, 0, "schema is current"},
		{"ok/version", []string{"version"}, 0, "vestibule "},
		{"error/unknown command", []string{"frobnicate"}, 1, "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{"--dev", "--data-dir", dataDir}, tc.args...)
			code := run(context.Background(), args, &out, &errOut)
			if code != tc.code || !strings.Contains(out.String()+errOut.String(), tc.want) {
				t.Fatalf("exit %d (want %d), output %q %q, want %q", code, tc.code, out.String(), errOut.String(), tc.want)
			}
		})
	}
}

func TestNonDevRequiresSettings(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"serve"}, &out, &errOut)
	if code == 0 {
		t.Fatal("serve without config started")
	}
	sc := bufio.NewScanner(strings.NewReader(errOut.String()))
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	for _, key := range []string{"public_url", "database.dsn", "org.id"} {
		if !strings.Contains(errOut.String(), key+": is required") {
			t.Errorf("error does not name %s: %v", key, lines)
		}
	}
}

// TestSelfApprovalNeedsTheFlag: the command line refuses to approve an
// enrollment for the person named by --as unless --self-approval is given,
// and audits that approval as a self-approval.
func TestSelfApprovalNeedsTheFlag(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	url, _ := startDev(t, dataDir)
	profile := filepath.Join(t.TempDir(), "alice.mobileconfig")
	for _, args := range [][]string{
		{"user", "add", "alice@example.com"},
		{"--public-url", url, "profile", "issue", "--user", "alice@example.com", "-o", profile},
	} {
		if out, e, code := vestibule(t, dataDir, args...); code != 0 {
			t.Fatalf("%v: %s %s", args, out, e)
		}
	}
	b, err := os.ReadFile(profile)
	if err != nil {
		t.Fatal(err)
	}
	d := devicesim.New(http.DefaultClient, "C02SELFAPPR1")
	if err := d.Install(b); err != nil {
		t.Fatal(err)
	}
	if err := d.Enroll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, err := d.Authenticate(context.Background()); err != nil || code != 200 {
		t.Fatalf("Authenticate: %d %v", code, err)
	}
	id := d.Profile.CN
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"error/own enrollment", []string{"enrollments", "approve", id, "--as", "Alice@example.com"}, 1, "own name"},
		{"error/flag without --as", []string{"enrollments", "approve", id, "--self-approval"}, 1, "needs --as"},
		{"ok/explicit self-approval", []string{"enrollments", "approve", id, "--as", "alice@example.com", "--self-approval"}, 0, "approved " + id},
		{"ok/decided by", []string{"enrollments", "show", id}, 0, "as alice@example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, e, code := vestibule(t, dataDir, tc.args...)
			if code != tc.code || !strings.Contains(out+e, tc.want) {
				t.Fatalf("exit %d (want %d): %s %s; want %q", code, tc.code, out, e, tc.want)
			}
		})
	}
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(dataDir, "vestibule.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	events, err := st.ListAudit(context.Background(), enrollment.AuditFilter{Action: "enrollment.self_approve", TargetID: id})
	if err != nil || len(events) != 1 {
		t.Fatalf("self-approval audit rows: %v %+v", err, events)
	}
}

// TestAdminCommandsContactNoIdP: with an identity provider configured that
// does not answer, the commands that only administer still work; only the
// server needs the IdP.
func TestAdminCommandsContactNoIdP(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	secret := filepath.Join(t.TempDir(), "oidc-secret")
	writeTestFile(t, secret, "s3cret")
	// A loopback port nobody listens on: a contact fails at once.
	t.Setenv("VESTIBULE_OIDC_ISSUER", "http://127.0.0.1:9/unreachable")
	t.Setenv("VESTIBULE_OIDC_CLIENT_ID", "vestibule")
	t.Setenv("VESTIBULE_OIDC_CLIENT_SECRET_FILE", secret)
	for _, args := range [][]string{
		{"user", "add", "carol@example.com"},
		{"user", "list"},
		{"enrollments", "list"},
		{"token", "list"},
	} {
		if out, e, code := vestibule(t, dataDir, args...); code != 0 {
			t.Fatalf("%v with an unreachable IdP: exit %d %s %s", args, code, out, e)
		}
	}
	if _, e, code := vestibule(t, dataDir, "serve", "--listen", "127.0.0.1:0"); code == 0 || !strings.Contains(strings.ToLower(e), "oidc") {
		t.Fatalf("serve with an unreachable IdP should fail naming it: exit %d %s", code, e)
	}
}

// TestGCFloorYieldsToTheEnvironment: the floor applies unless it is 0 or
// GOGC or GOMEMLIMIT tune the collector.
func TestGCFloorYieldsToTheEnvironment(t *testing.T) {
	for _, c := range []struct {
		name string
		mib  int
		env  map[string]string
		want bool
	}{
		{"the default applies", 16, nil, true},
		{"0 is Go's default", 0, nil, false},
		{"GOGC wins", 16, map[string]string{"GOGC": "200"}, false},
		{"GOMEMLIMIT wins", 16, map[string]string{"GOMEMLIMIT": "1GiB"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := startGCFloor(c.mib, func(k string) string { return c.env[k] }, slog.New(slog.DiscardHandler))
			if (f != nil) != c.want {
				t.Fatalf("floor started: %v, want %v", f != nil, c.want)
			}
			if f != nil {
				f.Stop()
			}
		})
	}
}
