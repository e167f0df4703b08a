package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vestibule-mdm/vestibule/config"
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
	e.app.Webhook.Wait()
	mu.Lock()
	defer mu.Unlock()
	if calls != 2 || len(got) != 1 || got[0]["event"] != "enrollment.pending" || got[0]["enrollment_id"] != r.ID || got[0]["serial"] != "SER-HOOK" {
		t.Fatalf("calls %d, events %v", calls, got)
	}
}
