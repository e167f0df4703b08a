// Package ssf is Vestibule's OpenID Shared Signals Framework transmitter:
// receivers (identity providers) manage streams with a receiver API token,
// and learn every change of a device's trust as a CAEP
// device-compliance-change Security Event Token (RFC 8417), signed ES256,
// delivered by push (RFC 8935) or poll (RFC 8936) from a durable outbox.
package ssf

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// Event types and delivery methods.
const (
	EventCompliance   = "https://schemas.openid.net/secevent/caep/event-type/device-compliance-change"
	EventVerification = "https://schemas.openid.net/secevent/ssf/event-type/verification"
	DeliveryPush      = "urn:ietf:rfc:8935"
	DeliveryPoll      = "urn:ietf:rfc:8936"
)

// Stream statuses (SSF §8.1.2).
const (
	StatusEnabled  = "enabled"
	StatusPaused   = "paused"
	StatusDisabled = "disabled"
)

// Stream is one receiver's stream.
type Stream struct {
	ID                  string
	TokenID             string
	Audience            string
	Description         string
	EventsRequested     []string
	Method              string
	EndpointURL         string // push: the receiver's; poll: ours
	AuthorizationHeader string
	DefaultSubjects     string // ALL or NONE
	Status              string
	StatusReason        string
	CreatedAt           time.Time
	UpdatedAt           time.Time
	LastDeliveredAt     *time.Time
	LastError           string
	LastErrorAt         *time.Time
	// Undelivered counts SETs waiting (read-only).
	Undelivered int
	// PushAttempts counts failed pushes since the last success.
	PushAttempts int
	// Subjects are the keys of subjects added (read by fan-out only).
	Subjects map[string]bool
}

// wants reports whether the stream receives event type t.
func (s Stream) wants(t string) bool {
	if t == EventVerification {
		return true
	}
	for _, e := range s.EventsRequested {
		if e == t {
			return true
		}
	}
	return false
}

// about reports whether the stream receives events about these subjects.
func (s Stream) about(keys ...string) bool {
	if s.DefaultSubjects != "NONE" {
		return true
	}
	for _, k := range keys {
		if s.Subjects[k] {
			return true
		}
	}
	return false
}

// Outgoing is one SET owed to a stream, as its claims: it is signed when
// sent, so it verifies with the keys published then.
type Outgoing struct {
	JTI          string
	StreamID     string
	EventID      string
	EnrollmentID string
	EventType    string
	Claims       string
	CreatedAt    time.Time
	Attempts     int
}

// Batch is a push stream leased by one worker until LeaseUntil, with its
// undelivered SETs in the order they were made.
type Batch struct {
	Stream     Stream
	SETs       []Outgoing
	LeaseUntil time.Time
}

// LastEvent is the latest SET about a device queued for a stream.
type LastEvent struct {
	StreamID    string
	Description string
	EventType   string
	Compliant   bool
	CreatedAt   time.Time
	DeliveredAt *time.Time
	LastError   string
}

// Store is what the transmitter needs from storage.
type Store interface {
	// CreateStream stores s unless its token has max streams (ErrConflict).
	CreateStream(ctx context.Context, s Stream, max int, ev enrollment.AuditEvent) error
	Stream(ctx context.Context, id string) (Stream, error)
	Streams(ctx context.Context, tokenID string) ([]Stream, error) // tokenID "" lists all
	UpdateStream(ctx context.Context, s Stream, ev enrollment.AuditEvent) error
	DeleteStream(ctx context.Context, id string, ev enrollment.AuditEvent) error
	// AddSubject adds a subject unless the stream has max (ErrConflict).
	AddSubject(ctx context.Context, streamID, key, subject string, max int) error
	RemoveSubject(ctx context.Context, streamID, key string) error
	// FanOut takes up to limit trust changes not yet queued and, in one
	// transaction, queues what build returns for each and marks them
	// queued. Replicas take disjoint changes.
	FanOut(ctx context.Context, limit int, build func(c enrollment.TrustChange, at time.Time, streams []Stream) ([]Outgoing, error)) (int, error)
	Enqueue(ctx context.Context, o Outgoing) error
	// AllowVerification records a verification request unless one was
	// made since (ErrConflict).
	AllowVerification(ctx context.Context, streamID string, since, at time.Time) error
	// ClaimStreams leases push streams with SETs due, each with its
	// undelivered SETs in order.
	ClaimStreams(ctx context.Context, limit, perStream int, now, leaseUntil time.Time) ([]Batch, error)
	// ReleaseStream ends the lease that ends at leaseUntil, if it is
	// still the stream's.
	ReleaseStream(ctx context.Context, streamID string, leaseUntil time.Time) error
	// Delivered marks SETs of a stream delivered (acknowledged);
	// refusal, when set, records that the receiver refused them.
	Delivered(ctx context.Context, streamID string, jtis []string, refusal string, at time.Time) error
	// RetryStream records a failed push and holds the stream until next.
	RetryStream(ctx context.Context, streamID, jti string, next time.Time, lastErr string, at time.Time) error
	// Pending returns up to max undelivered SETs of a stream, oldest
	// first, and whether more wait.
	Pending(ctx context.Context, streamID string, max int) ([]Outgoing, bool, error)
	LastEvents(ctx context.Context, enrollmentID string) ([]LastEvent, error)
	// PruneTrust deletes SETs delivered, and changes queued, before.
	PruneTrust(ctx context.Context, before time.Time) (int64, error)
}

// Keys signs SETs and publishes their keys.
type Keys interface {
	Sign(payload []byte) (string, error)
}

// Options configure the Transmitter.
type Options struct {
	Store Store
	Keys  *Keyring
	// Issuer is the server's public URL: the iss of every SET, and where
	// discovery lives.
	Issuer string
	// Receivers authenticates receiver API tokens.
	Receivers Receivers
	// Client delivers pushes; its timeout bounds each attempt.
	Client *http.Client
	// AllowHTTPPush admits http:// push endpoints (development only).
	AllowHTTPPush bool
	// AllowPrivateEndpoints lets pushes reach loopback and private
	// addresses: a receiver inside the company's network. Off, a receiver
	// token cannot make the server POST to its own neighbours.
	AllowPrivateEndpoints bool
	// Registerer, when set, gets the transmitter's metrics.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// Transmitter is the SSF transmitter.
type Transmitter struct {
	o         Options
	kick      chan struct{}
	metrics   *metrics
	longPolls chan struct{} // polls waiting for events now
	pollMu    sync.Mutex
	polling   map[string]int // long polls waiting, by stream
}

type metrics struct {
	queued  prometheus.Counter
	pushed  *prometheus.CounterVec
	acked   prometheus.Counter
	latency prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		queued: prometheus.NewCounter(prometheus.CounterOpts{Name: "vestibule_ssf_sets_queued_total",
			Help: "Security Event Tokens queued for a stream (one per event and stream)."}),
		pushed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vestibule_ssf_pushes_total",
			Help: "SET pushes by outcome: delivered, refused (HTTP 400, not retried), retry."}, []string{"outcome"}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{Name: "vestibule_ssf_poll_acks_total",
			Help: "SETs acknowledged by polling receivers."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vestibule_ssf_push_duration_seconds",
			Help: "Receiver push latency.", Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
	}
	if reg != nil {
		reg.MustRegister(m.queued, m.pushed, m.acked, m.latency)
	}
	return m
}

// New returns the transmitter.
func New(o Options) (*Transmitter, error) {
	if o.Store == nil || o.Keys == nil || o.Receivers == nil || o.Issuer == "" {
		return nil, errors.New("ssf: Store, Keys, Receivers and Issuer are required")
	}
	if o.Client == nil {
		o.Client = pushClient(o.AllowPrivateEndpoints)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Transmitter{o: o, kick: make(chan struct{}, 1), metrics: newMetrics(o.Registerer), longPolls: make(chan struct{}, maxLongPolls), polling: map[string]int{}}, nil
}

// Kick asks the worker to look for work now. It never blocks.
func (t *Transmitter) Kick() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

func newJTI() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// subjectKeys name a device and its owner for stream subject matching.
func subjectKeys(deviceID, email string) []string {
	return []string{"device:" + deviceID, "email:" + lowerASCII(email)}
}

// setClaims are the claims of a SET (SSF §4: sub_id at the top level, no
// sub, no exp).
type setClaims struct {
	Iss    string         `json:"iss"`
	JTI    string         `json:"jti"`
	IAT    int64          `json:"iat"`
	Aud    string         `json:"aud"`
	Txn    string         `json:"txn,omitempty"`
	SubID  any            `json:"sub_id"`
	Events map[string]any `json:"events"`
}

func marshalClaims(c setClaims) (string, error) {
	b, err := json.Marshal(c)
	return string(b), err
}

// complianceClaims are the CAEP event about one trust change for one
// stream.
func (t *Transmitter) complianceClaims(c enrollment.TrustChange, at time.Time, s Stream, jti string) (string, error) {
	status := map[bool]string{true: "compliant", false: "not-compliant"}
	return marshalClaims(setClaims{Iss: t.o.Issuer, JTI: jti, IAT: t.o.Now().Unix(), Aud: s.Audience, Txn: c.ID,
		SubID: map[string]any{
			"format": "complex",
			"device": map[string]string{"format": "iss_sub", "iss": t.o.Issuer, "sub": c.EnrollmentID},
			"user":   map[string]string{"format": "email", "email": c.UserEmail},
		},
		Events: map[string]any{EventCompliance: map[string]any{
			"previous_status":   status[!c.Compliant],
			"current_status":    status[c.Compliant],
			"event_timestamp":   at.Unix(),
			"initiating_entity": c.Initiator,
			"reason_admin":      map[string]string{"en": c.Reason},
		}}})
}

// fanOut queues each new trust change for every stream that wants it.
func (t *Transmitter) fanOut(ctx context.Context) (int, error) {
	queued := 0
	n, err := t.o.Store.FanOut(ctx, 100, func(c enrollment.TrustChange, at time.Time, streams []Stream) ([]Outgoing, error) {
		var out []Outgoing
		for _, s := range streams {
			if s.Status == StatusDisabled || !s.wants(EventCompliance) || !s.about(subjectKeys(c.EnrollmentID, c.UserEmail)...) {
				continue
			}
			jti := newJTI()
			claims, err := t.complianceClaims(c, at, s, jti)
			if err != nil {
				return nil, err
			}
			out = append(out, Outgoing{JTI: jti, StreamID: s.ID, EventID: c.ID, EnrollmentID: c.EnrollmentID,
				EventType: EventCompliance, Claims: claims, CreatedAt: t.o.Now()})
		}
		queued += len(out)
		return out, nil
	})
	if err == nil {
		t.metrics.queued.Add(float64(queued))
	}
	return n, err
}

// retention is how long delivered SETs and queued changes are kept.
const retention = 30 * 24 * time.Hour

// Run fans out and pushes until ctx ends, and prunes what was delivered
// long ago once an hour; every replica may run it. Fan-out and each push
// worker run on their own, so a slow receiver delays neither the queuing
// of new events nor any other stream.
func (t *Transmitter) Run(ctx context.Context, interval time.Duration) {
	for range pushWorkers {
		go func() {
			for ctx.Err() == nil {
				more, err := t.pushOne(ctx)
				if err != nil && ctx.Err() == nil {
					t.o.Logger.ErrorContext(ctx, "SET push round failed", "err", err)
				}
				if !more || err != nil {
					select {
					case <-ctx.Done():
					case <-time.After(interval):
					}
				}
			}
		}()
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var pruned time.Time
	for {
		if _, err := t.fanOut(ctx); err != nil && ctx.Err() == nil {
			t.o.Logger.ErrorContext(ctx, "queuing trust events failed", "err", err)
		}
		if time.Since(pruned) > time.Hour {
			pruned = time.Now()
			if n, err := t.o.Store.PruneTrust(ctx, t.o.Now().Add(-retention)); err != nil && ctx.Err() == nil {
				t.o.Logger.ErrorContext(ctx, "pruning delivered SETs failed", "err", err)
			} else if n > 0 {
				t.o.Logger.InfoContext(ctx, "pruned delivered SETs and queued trust changes", "rows", n, "older_than", retention.String())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-t.kick:
		}
	}
}

// Work runs one round: queue new changes, then push every stream that is
// due until none is.
func (t *Transmitter) Work(ctx context.Context) error {
	if _, err := t.fanOut(ctx); err != nil {
		return fmt.Errorf("fan out: %w", err)
	}
	return t.push(ctx)
}

// Push scheduling: pushWorkers workers each lease one stream at a time and
// give it at most streamBudget before handing it back, so a slow receiver
// holds one worker for seconds, never the others for minutes.
const (
	pushWorkers  = 16
	streamBudget = 5 * time.Second
	// pushLease outlasts a budget plus one push at the client's timeout.
	pushLease   = time.Minute
	setsPerTurn = 50
)

func (t *Transmitter) push(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, pushWorkers)
	for range pushWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				more, err := t.pushOne(ctx)
				if err != nil {
					errs <- err
					return
				}
				if !more {
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// pushOne leases the stream waiting longest and pushes its SETs in order
// for at most streamBudget; more is false when no stream was due.
func (t *Transmitter) pushOne(ctx context.Context) (more bool, err error) {
	now := t.o.Now()
	batches, err := t.o.Store.ClaimStreams(ctx, 1, setsPerTurn, now, now.Add(pushLease))
	if err != nil || len(batches) == 0 {
		return false, err
	}
	b := batches[0]
	err = t.pushStream(ctx, b)
	if rerr := t.o.Store.ReleaseStream(context.WithoutCancel(ctx), b.Stream.ID, b.LeaseUntil); rerr != nil && err == nil {
		err = rerr
	}
	return true, err
}

// pushStream delivers a stream's SETs in order within the budget,
// stopping at the first that fails: the stream is held, as a whole, until
// its retry.
func (t *Transmitter) pushStream(ctx context.Context, b Batch) error {
	start := time.Now()
	for _, o := range b.SETs {
		if time.Since(start) > streamBudget {
			return nil // the rest at the stream's next turn
		}
		set, err := t.o.Keys.Sign([]byte(o.Claims))
		if err != nil {
			return err
		}
		began := time.Now()
		refusal, err := t.deliver(ctx, b.Stream, set)
		t.metrics.latency.Observe(time.Since(began).Seconds())
		if err != nil {
			t.metrics.pushed.WithLabelValues("retry").Inc()
			next := t.o.Now().Add(backoff(b.Stream.PushAttempts))
			t.o.Logger.WarnContext(ctx, "SET push failed; the stream waits for a retry", "stream", b.Stream.ID, "jti", o.JTI,
				"attempt", b.Stream.PushAttempts+1, "retry_at", next.Format(time.RFC3339), "err", err)
			return t.o.Store.RetryStream(ctx, b.Stream.ID, o.JTI, next, err.Error(), t.o.Now())
		}
		outcome := "delivered"
		if refusal != "" {
			outcome = "refused"
			t.o.Logger.WarnContext(ctx, "receiver refused a SET", "stream", b.Stream.ID, "jti", o.JTI, "err", refusal)
		}
		t.metrics.pushed.WithLabelValues(outcome).Inc()
		if err := t.o.Store.Delivered(ctx, b.Stream.ID, []string{o.JTI}, refusal, t.o.Now()); err != nil {
			return err
		}
	}
	return nil
}

// backoff after n failed attempts: 2s doubling, at most 10 minutes.
func backoff(n int) time.Duration {
	d := 2 * time.Second << min(n, 9)
	return min(d, 10*time.Minute)
}

// maxReceiverReply bounds what is read of a receiver's answer.
const maxReceiverReply = 8 << 10

// deliver pushes one SET (RFC 8935). A 202 delivers it; a 400 is the
// receiver refusing this SET for good (retrying cannot help), returned as
// refusal; anything else is an error to retry.
func (t *Transmitter) deliver(ctx context.Context, s Stream, set string) (refusal string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.EndpointURL, stringsReader(set))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/secevent+jwt")
	req.Header.Set("Accept", "application/json")
	if s.AuthorizationHeader != "" {
		req.Header.Set("Authorization", s.AuthorizationHeader)
	}
	resp, err := t.o.Client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body := readLimited(resp.Body, maxReceiverReply)
	switch {
	case resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusOK:
		return "", nil
	case resp.StatusCode == http.StatusBadRequest:
		var e struct {
			Err         string `json:"err"`
			Description string `json:"description"`
		}
		_ = json.Unmarshal(body, &e)
		msg := fmt.Sprintf("HTTP 400 %s: %s", cutString(e.Err, 64), cutString(e.Description, 256))
		if e.Err == "invalid_key" {
			// Most likely a JWKS the receiver cached before a rotation:
			// worth another try once it refreshes.
			return "", errors.New(msg)
		}
		return msg, nil
	default:
		return "", fmt.Errorf("receiver answered HTTP %d", resp.StatusCode)
	}
}
