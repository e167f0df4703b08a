package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// SignatureHeader carries HMAC-SHA256(secret, timestamp + "." + body) so a
// receiver can check the call came from Vestibule and is fresh.
const webhookSignatureHeader = "X-Vestibule-Signature"

// webhook posts a JSON event to the configured URL when an enrollment
// becomes pending, retrying a few times in the background.
type webhook struct {
	url, consoleURL string
	secret          []byte
	client          *http.Client
	log             *slog.Logger
	wg              sync.WaitGroup
	attempts        int
	backoff         time.Duration
}

func newWebhook(url, consoleURL string, secret []byte, retryDelay time.Duration, log *slog.Logger) *webhook {
	return &webhook{url: url, consoleURL: consoleURL, secret: secret, client: &http.Client{Timeout: 10 * time.Second}, log: log,
		attempts: 5, backoff: retryDelay}
}

type pendingEvent struct {
	Event        string    `json:"event"`
	EnrollmentID string    `json:"enrollment_id"`
	User         string    `json:"user"`
	Serial       string    `json:"serial"`
	Model        string    `json:"model"`
	ReEnrollment bool      `json:"re_enrollment"`
	At           time.Time `json:"at"`
	ConsoleURL   string    `json:"console_url"`
}

// Pending sends the event without holding up the device's check-in.
func (w *webhook) Pending(e enrollment.Enrollment) {
	body, _ := json.Marshal(pendingEvent{Event: "enrollment.pending", EnrollmentID: e.ID, User: e.UserEmail, Serial: e.Facts.Serial,
		Model: e.Facts.Model, ReEnrollment: e.ReEnrollment, At: e.CreatedAt, ConsoleURL: w.consoleURL + "/console/devices/" + e.ID})
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for attempt := range w.attempts {
			err := w.post(body)
			if err == nil {
				return
			}
			w.log.Warn("webhook", "attempt", attempt+1, "err", err)
			time.Sleep(w.backoff << attempt)
		}
		w.log.Error("webhook given up", "enrollment", e.ID)
	}()
}

func (w *webhook) post(body []byte) error {
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, w.secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Vestibule-Timestamp", ts)
	req.Header.Set(webhookSignatureHeader, "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// Wait lets tests and shutdown see deliveries through.
func (w *webhook) Wait() { w.wg.Wait() }
