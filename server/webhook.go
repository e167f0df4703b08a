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
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/store"
)

// SignatureHeader carries HMAC-SHA256(secret, timestamp + "." + body) so a
// receiver can check the call came from Vestibule and is fresh.
const webhookSignatureHeader = "X-Vestibule-Signature"

// webhookStore is the outbox the webhook drains, and where it reads the
// enrollment it announces.
type webhookStore interface {
	ClaimWebhooks(ctx context.Context, limit int, now, leaseUntil time.Time) ([]store.WebhookItem, error)
	WebhookDelivered(ctx context.Context, id string, at time.Time) error
	RetryWebhook(ctx context.Context, id string, next time.Time, lastErr string) error
	PruneWebhooks(ctx context.Context, before time.Time) error
	Enrollment(ctx context.Context, id string) (enrollment.Enrollment, error)
}

// webhook posts a JSON event to the configured URL when an enrollment
// becomes pending. The announcement is queued in the database with the
// enrollment; any replica delivers it, retrying with backoff until the
// receiver takes it, across restarts.
type webhook struct {
	store           webhookStore
	url, consoleURL string
	secret          []byte
	client          *http.Client
	log             *slog.Logger
	backoff         time.Duration
}

func newWebhook(st webhookStore, url, consoleURL string, secret []byte, retryDelay time.Duration, log *slog.Logger) *webhook {
	return &webhook{store: st, url: url, consoleURL: consoleURL, secret: secret, client: &http.Client{Timeout: webhookTimeout}, log: log,
		backoff: retryDelay}
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

// Run delivers queued announcements until ctx ends, and prunes delivered
// ones older than a week once an hour.
func (w *webhook) Run(ctx context.Context) {
	var pruned time.Time
	for ctx.Err() == nil {
		if _, err := w.Drain(ctx); err != nil && ctx.Err() == nil {
			w.log.Error("webhook delivery failed", "err", err)
		}
		if time.Since(pruned) > time.Hour {
			pruned = time.Now()
			if err := w.store.PruneWebhooks(ctx, time.Now().Add(-7*24*time.Hour)); err != nil && ctx.Err() == nil {
				w.log.Error("pruning webhook deliveries failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// webhookTimeout bounds one delivery. An announcement is leased one at a
// time for a little longer, so a replica that dies holds back only the one
// it was sending, for seconds, and a slow receiver never sees an
// announcement twice because its lease ran out behind a batch.
const (
	webhookTimeout = 10 * time.Second
	webhookLease   = webhookTimeout + 5*time.Second
)

// maxWebhookBackoff caps the wait between attempts; attempts never stop.
const maxWebhookBackoff = 10 * time.Minute

// attemptsPerDrain bounds how often one Drain tries one announcement, so
// a receiver that is down (with no retry delay) cannot keep it busy.
const attemptsPerDrain = 3

// Drain delivers every announcement due now and returns how many it sent.
func (w *webhook) Drain(ctx context.Context) (int, error) {
	sent := 0
	tried := map[string]int{}
	for {
		now := time.Now()
		// One at a time: see webhookLease.
		batch, err := w.store.ClaimWebhooks(ctx, 1, now, now.Add(webhookLease))
		if err != nil || len(batch) == 0 {
			return sent, err
		}
		it := batch[0]
		tried[it.ID]++
		if err := w.deliver(ctx, it); err != nil {
			wait := min(w.backoff<<min(it.Attempts, 20), maxWebhookBackoff)
			w.log.Warn("webhook", "enrollment", it.EnrollmentID, "attempt", it.Attempts+1, "retry_in", wait.String(), "err", err)
			if err := w.store.RetryWebhook(ctx, it.ID, time.Now().Add(wait), err.Error()); err != nil {
				return sent, err
			}
		} else {
			sent++
			if err := w.store.WebhookDelivered(ctx, it.ID, time.Now()); err != nil {
				return sent, err
			}
		}
		if tried[it.ID] >= attemptsPerDrain {
			return sent, nil
		}
	}
}

func (w *webhook) deliver(ctx context.Context, it store.WebhookItem) error {
	e, err := w.store.Enrollment(ctx, it.EnrollmentID)
	if err != nil {
		return err
	}
	body, err := json.Marshal(pendingEvent{Event: it.Event, EnrollmentID: e.ID, User: e.UserEmail, Serial: e.Facts.Serial,
		Model: e.Facts.Model, ReEnrollment: e.ReEnrollment, At: e.CreatedAt, ConsoleURL: w.consoleURL + "/console/devices/" + e.ID})
	if err != nil {
		return err
	}
	return w.post(body)
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
