package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/testserver"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

// TestPendingWebhook: a device waiting for approval is announced to the
// webhook with a signature the receiver can check; a failing receiver gets
// the call again.
func TestPendingWebhook(t *testing.T) {
	secret := "webhook-secret-0123456789"
	var mu sync.Mutex
	var got []map[string]any
	calls := 0
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(r.Header.Get("X-Vestibule-Timestamp") + "."))
		mac.Write(body)
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable) // the first call fails: it must be retried
			return
		}
		if r.Header.Get("X-Vestibule-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
			t.Errorf("bad signature")
		}
		var ev map[string]any
		json.Unmarshal(body, &ev)
		got = append(got, ev)
	}))
	defer recv.Close()
	e := newEnv(t, "sqlite", func(c *config.Config) {
		f := filepath.Join(t.TempDir(), "whsecret")
		os.WriteFile(f, []byte(secret), 0o600)
		c.MDM.WebhookURL, c.MDM.WebhookSecretFile = recv.URL, f
		c.MDM.WebhookRetryDelay = 0
	})
	d, r := e.enrolledDevice("alice@example.com", "SER-HOOK")
	if code, err := d.Authenticate(e.ctx); err != nil || code != 200 {
		t.Fatal(code, err)
	}
	d.Authenticate(e.ctx) // a retry announces nothing new
	if _, err := e.app.Webhook.Drain(e.ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 2 || len(got) != 1 || got[0]["event"] != "enrollment.pending" || got[0]["enrollment_id"] != r.ID || got[0]["serial"] != "SER-HOOK" {
		t.Fatalf("calls %d, events %v", calls, got)
	}
}

// TestWebhookSurvivesARestart: an announcement the receiver did not take
// before the server stopped is delivered by the next server on the same
// database.
func TestWebhookSurvivesARestart(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		var mu sync.Mutex
		up, got := false, 0
		recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			if !up {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
			got++
		}))
		defer recv.Close()
		secret := filepath.Join(t.TempDir(), "whsecret")
		os.WriteFile(secret, []byte("s3cret"), 0o600)
		withHook := func(c *config.Config) {
			c.MDM.WebhookURL, c.MDM.WebhookSecretFile, c.MDM.WebhookRetryDelay = recv.URL, secret, 0
		}
		dsn, dataDir := storetest.DSN(t, dialect), t.TempDir()
		_, first := testserver.Start(t, dsn, dataDir, withHook)
		e := &env{t: t, url: "", app: first, ctx: context.Background()}
		if _, err := first.Users.Add(e.ctx, admin, enrollment.UserInput{Email: "alice@example.com"}); err != nil {
			t.Fatal(err)
		}
		url, _ := testserver.Start(t, dsn, dataDir, withHook) // the device talks to a second replica
		e.url = url
		d, _ := e.enrolledDevice("alice@example.com", "SER-OUTAGE")
		d.Profile.CheckInURL = strings.Replace(d.Profile.CheckInURL, d.Profile.ServerURL[:strings.Index(d.Profile.ServerURL, "/mdm")], url, 1)
		if code, err := d.Authenticate(e.ctx); err != nil || code != 200 {
			t.Fatal(code, err)
		}
		// The receiver is down while the first server tries; then that
		// server is gone, and another one delivers.
		if _, err := first.Webhook.Drain(e.ctx); err != nil {
			t.Fatal(err)
		}
		first.Close()
		mu.Lock()
		up = true
		mu.Unlock()
		_, next := testserver.Start(t, dsn, dataDir, withHook)
		if n, err := next.Webhook.Drain(e.ctx); err != nil || n != 1 {
			t.Fatalf("after the restart: %d delivered, %v", n, err)
		}
		if n, _ := next.Webhook.Drain(e.ctx); n != 0 {
			t.Fatal("delivered twice")
		}
		mu.Lock()
		defer mu.Unlock()
		if got != 1 {
			t.Fatalf("the receiver got %d announcements", got)
		}
	})
}
