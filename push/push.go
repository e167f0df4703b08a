package push

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sideshow/apns2"
	"golang.org/x/net/http2"
	"golang.org/x/time/rate"
)

// Item is a push owed to one device.
type Item struct {
	EnrollmentID string
	Token        string // hex
	Magic        string
	Topic        string
	Attempts     int
	// LeaseUntil is the lease this claim holds; completing or retrying
	// changes the row only while it still holds it, so a push queued
	// again meanwhile (a new command) is not lost.
	LeaseUntil time.Time
}

// Store is the outbox.
type Store interface {
	// ClaimOutbox leases up to limit due items until leaseUntil; two
	// workers never get the same item.
	ClaimOutbox(ctx context.Context, limit int, now, leaseUntil time.Time) ([]Item, error)
	// CompleteOutbox removes pushed items while their claim still holds
	// their lease; RetryOutbox schedules one again under the same
	// condition.
	CompleteOutbox(ctx context.Context, items []Item) error
	RetryOutbox(ctx context.Context, it Item, next time.Time, lastErr string) error
	// DropOutbox gives up on an item and, when invalid, marks the
	// device's push token invalid.
	DropOutbox(ctx context.Context, enrollmentID string, invalidToken bool, at time.Time, reason string) error
	EnqueuePush(ctx context.Context, enrollmentID string, at time.Time) error
}

// Options configure the pusher.
type Options struct {
	Certificate tls.Certificate
	// Host is the APNs endpoint: apns2.HostProduction, apns2.HostDevelopment,
	// or a test server.
	Host string
	// RootCAs replaces the system roots (tests).
	RootCAs    *x509.CertPool
	Store      Store
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Batch is how many items a worker claims at once.
	Batch int
	// Poll is how often an idle worker looks for work.
	Poll time.Duration
	// Rate paces pushes across this pusher's workers, per second (0: 200).
	// Each push wakes a device that checks in: a burst of pushes is a
	// burst of check-ins.
	Rate float64
	// Workers is how many goroutines run this pusher's Run, sharing Rate.
	Workers int
	// InFlight is how many pushes one worker has on its way at once (0:
	// enough for its share of Rate with APNs answering in 100 ms, from 32
	// to 500). APNs answers each over the Internet in tens of
	// milliseconds: one at a time, a worker would push far below Rate, and
	// a fixed 32 answering in 20 ms caps it at 1,600 a second. Where APNs
	// allows fewer streams on a connection, the transport opens another;
	// 500 stays under every limit APNs is known to have advertised.
	InFlight int
	// Pace waits for the next push's turn; nil paces at Rate (tests count
	// the turns).
	Pace        func(ctx context.Context) error
	MaxAttempts int
	Now         func() time.Time
}

// Pusher drains the outbox into APNs.
type Pusher struct {
	o       Options
	client  *apns2.Client
	topic   string
	expires time.Time
	log     *slog.Logger
	m       *metrics
	workers sync.WaitGroup
}

// New checks the certificate and builds the APNs client. Its HTTP/2
// connection is reused for every push.
func New(o Options) (*Pusher, error) {
	if o.Store == nil || len(o.Certificate.Certificate) == 0 {
		return nil, errors.New("push: a store and an MDM push certificate are required")
	}
	leaf, err := x509.ParseCertificate(o.Certificate.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("push certificate: %w", err)
	}
	topic := TopicOf(leaf)
	if topic == "" {
		return nil, errors.New("push certificate: no com.apple.mgmt topic in its subject UID; is it an MDM push certificate?")
	}
	if o.Host == "" {
		o.Host = apns2.HostProduction
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Batch <= 0 {
		o.Batch = 100
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 10
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rate <= 0 {
		o.Rate = 200
	}
	if o.Workers <= 0 {
		o.Workers = 1
	}
	if o.InFlight <= 0 {
		o.InFlight = min(500, max(32, int(o.Rate/float64(o.Workers)*apnsAnswer.Seconds())))
	}
	if o.Pace == nil {
		// A burst of a tenth of a second's worth: pushes go out evenly,
		// not in lumps a second apart.
		l := rate.NewLimiter(rate.Limit(o.Rate), max(1, int(o.Rate/10)))
		o.Pace = func(ctx context.Context) error { return l.Wait(ctx) }
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{o.Certificate}, RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12}
	// Connections opened beyond APNs' stream limit close once idle.
	transport := &http2.Transport{TLSClientConfig: tlsCfg, ReadIdleTimeout: 15 * time.Second, IdleConnTimeout: 10 * time.Minute,
		DialTLSContext: func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
			d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 20 * time.Second, KeepAlive: 60 * time.Second}, Config: cfg}
			return d.DialContext(ctx, network, addr)
		}}
	client := &apns2.Client{Host: o.Host, Certificate: o.Certificate, HTTPClient: &http.Client{Transport: transport, Timeout: 30 * time.Second}}
	return &Pusher{o: o, client: client, topic: topic, expires: leaf.NotAfter, log: o.Logger, m: newMetrics(o.Registerer)}, nil
}

// TopicOf reads the MDM push topic from a push certificate's subject UID
// (OID 0.9.2342.19200300.100.1.1), where Apple puts it.
func TopicOf(c *x509.Certificate) string {
	uid := asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}
	for _, n := range c.Subject.Names {
		if n.Type.Equal(uid) {
			if s, ok := n.Value.(string); ok && strings.HasPrefix(s, "com.apple.mgmt.") {
				return s
			}
		}
	}
	return ""
}

// Topic is the certificate's push topic.
func (p *Pusher) Topic() string { return p.topic }

// Expires is when the push certificate stops working.
func (p *Pusher) Expires() time.Time { return p.expires }

// Health fails when the push certificate has expired; it is the most
// common MDM outage, so /readyz says so.
func (p *Pusher) Health(context.Context) error {
	left := p.expires.Sub(p.o.Now())
	switch {
	case left <= 0:
		return fmt.Errorf("the MDM push certificate expired on %s", p.expires.Format("2006-01-02"))
	case left < 30*24*time.Hour:
		p.log.Warn("the MDM push certificate expires soon; renew it", "expires", p.expires.Format("2006-01-02"))
	}
	return nil
}

// Start runs Options.Workers workers, each draining the outbox until ctx
// ends: the same count claimSize shares the rate between.
func (p *Pusher) Start(ctx context.Context) {
	for range p.o.Workers {
		p.workers.Add(1)
		go func() {
			defer p.workers.Done()
			p.Run(ctx)
		}()
	}
}

// Wait returns once the workers Start ran have stopped and the pushes APNs
// answered have left the outbox: the store must stay open until then.
// Pushes the stop cut short go back when their lease ends.
func (p *Pusher) Wait() { p.workers.Wait() }

// Run drains the outbox until ctx ends. It claims the next batch as soon
// as every push of the last one has started, not once APNs has answered
// them all: waiting for a batch's last answers (tens of milliseconds over
// the Internet) and its completion write before each claim held a worker
// to about half its rate.
func (p *Pusher) Run(ctx context.Context) {
	t := time.NewTicker(p.o.Poll)
	defer t.Stop()
	f := p.newFlight()
	defer f.settle(ctx)
	for {
		n, err := f.drain(ctx)
		if err != nil && ctx.Err() == nil {
			p.log.Error("push outbox", "err", err)
		}
		if n >= p.claimSize() {
			continue // a full batch: more may be waiting
		}
		// A short batch: the outbox is empty for now. Claiming again at
		// once would spin, a write per handful of items, beside the
		// approvals filling it. What is on its way is answered and
		// leaves the outbox before the worker sleeps.
		f.settle(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// apnsAnswer is how long APNs takes to answer a push, for sizing
// InFlight: tens of milliseconds over the Internet.
const apnsAnswer = 100 * time.Millisecond

// pushLease is how long a claimed batch is a worker's own.
const pushLease = time.Minute

// claimSize is how many items one worker claims: at most Batch, and no
// more than it can push within a third of the lease at its share of the
// paced rate (the workers share one limiter), so that pacing never lets a
// lease run out under a batch.
func (p *Pusher) claimSize() int {
	return max(1, min(p.o.Batch, int(p.o.Rate/float64(p.o.Workers)*pushLease.Seconds()/3)))
}

// Drain claims one batch and pushes it at the paced rate; it returns how
// many it handled once APNs has answered them all and the pushed ones
// have left the outbox.
func (p *Pusher) Drain(ctx context.Context) (int, error) {
	f := p.newFlight()
	defer f.settle(ctx)
	return f.drain(ctx)
}

// flight is a worker's pushes on their way, across the batches it claims:
// at most InFlight at once (HTTP/2 streams), and the pushed ones waiting
// to leave the outbox completeEvery at a time, in one write instead of
// one each (SQLite has one writer). A worker killed before that pushes
// them again after the lease, which only wakes devices twice.
type flight struct {
	p      *Pusher
	slots  chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	pushed []Item
	// flush completes the pushed items completeWithin after the first of
	// them was answered, however few and whatever else is on its way;
	// flushes counts the flushes running or due.
	flush   *time.Timer
	flushes sync.WaitGroup
}

func (p *Pusher) newFlight() *flight {
	return &flight{p: p, slots: make(chan struct{}, p.o.InFlight)}
}

// drain claims one batch and starts its pushes at their paced turns; it
// returns once the last has started.
func (f *flight) drain(ctx context.Context) (int, error) {
	p := f.p
	// Answered pushes of earlier batches leave the outbox before the next
	// claim, however few.
	f.complete(ctx)
	now := p.o.Now()
	items, err := p.o.Store.ClaimOutbox(ctx, p.claimSize(), now, now.Add(pushLease))
	if err != nil {
		return 0, err
	}
	// New pushes start only in the first third of the lease: one started
	// later could still wait on APNs (up to the client's 30 s timeout)
	// when the lease ends and another worker takes its item. claimSize
	// makes the paced batch fit; slow answers filling every slot may not.
	startBy := now.Add(pushLease / 3)
	for i, it := range items {
		if p.o.Now().After(startBy) {
			// The rest go back when the lease ends.
			return i, nil
		}
		if err := p.o.Pace(ctx); err != nil {
			// Stopping: what is left goes back when its lease ends.
			return i, err
		}
		select {
		case f.slots <- struct{}{}:
		case <-ctx.Done():
			return i, ctx.Err()
		}
		if p.o.Now().After(startBy) {
			// The wait for a slot ran past the first third.
			<-f.slots
			return i, nil
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() { <-f.slots }()
			if p.send(ctx, it) {
				f.answered(ctx, it)
			}
		}()
	}
	return len(items), nil
}

// answered keeps a pushed item to leave the outbox with others: once
// completeEvery have gathered, or completeWithin after the first. Waiting
// for company (the next claim, or pushes that hang until the client's
// timeout) could outlast the item's lease, and another worker would push
// it again.
func (f *flight) answered(ctx context.Context, it Item) {
	f.mu.Lock()
	f.pushed = append(f.pushed, it)
	full := len(f.pushed) >= completeEvery
	if !full && f.flush == nil {
		f.flushes.Add(1)
		f.flush = time.AfterFunc(completeWithin, func() {
			defer f.flushes.Done()
			f.complete(ctx)
		})
	}
	f.mu.Unlock()
	if full {
		f.complete(ctx)
	}
}

// settle waits for every push on its way and completes the pushed ones.
func (f *flight) settle(ctx context.Context) {
	f.wg.Wait()
	f.complete(ctx)
	f.flushes.Wait()
}

// complete removes the answered items from the outbox.
func (f *flight) complete(ctx context.Context) {
	f.mu.Lock()
	if len(f.pushed) == 0 {
		f.mu.Unlock()
		return
	}
	done := f.pushed
	f.pushed = nil
	if f.flush != nil && f.flush.Stop() {
		f.flushes.Done() // its work is done here
	}
	f.flush = nil
	f.mu.Unlock()
	cctx, cancel := outboxWrite(ctx)
	defer cancel()
	if err := f.p.o.Store.CompleteOutbox(cctx, done); err != nil {
		f.p.log.Error("complete pushes", "count", len(done), "err", err)
	}
}

// outboxWrite is the context of a write that records what APNs answered:
// it is made even when the worker is stopping, within bounds.
func outboxWrite(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

// completeEvery is how many pushed items leave the outbox in one write;
// completeWithin is the longest an answered one waits for the others.
const (
	completeEvery  = 32
	completeWithin = time.Second
)

// send pushes it and handles a failure; it reports whether APNs took the
// push, for the caller to complete.
func (p *Pusher) send(ctx context.Context, it Item) (pushed bool) {
	n := &apns2.Notification{DeviceToken: it.Token, Topic: it.Topic, Payload: []byte(`{"mdm":"` + jsonEscape(it.Magic) + `"}`),
		PushType: apns2.PushTypeMDM, Priority: apns2.PriorityHigh, Expiration: p.o.Now().Add(24 * time.Hour)}
	if n.Topic == "" {
		n.Topic = p.topic
	}
	start := time.Now()
	res, err := p.client.PushWithContext(ctx, n)
	if err != nil && ctx.Err() != nil {
		// Stopping cut it short: the item goes back when its lease ends.
		return false
	}
	p.m.latency.Observe(time.Since(start).Seconds())
	if err == nil && res.Sent() {
		p.m.sent.Inc()
		return true
	}
	// APNs refused it or could not be reached: what that asks of the
	// outbox is written even if the worker is stopping meanwhile.
	wctx, cancel := outboxWrite(ctx)
	defer cancel()
	now := p.o.Now()
	switch {
	case err == nil && (res.StatusCode == http.StatusGone || res.Reason == apns2.ReasonBadDeviceToken || res.Reason == apns2.ReasonUnregistered):
		p.m.failed.Inc()
		p.log.Warn("push token no longer valid", "enrollment", it.EnrollmentID, "status", res.StatusCode, "reason", res.Reason)
		if err := p.o.Store.DropOutbox(wctx, it.EnrollmentID, true, now, res.Reason); err != nil {
			p.log.Error("drop push", "err", err)
		}
	case it.Attempts+1 >= p.o.MaxAttempts || (err == nil && res.StatusCode < 500 && res.StatusCode != http.StatusTooManyRequests):
		p.m.failed.Inc()
		reason := describe(res, err)
		p.log.Error("push given up", "enrollment", it.EnrollmentID, "attempts", it.Attempts+1, "reason", reason)
		if err := p.o.Store.DropOutbox(wctx, it.EnrollmentID, false, now, reason); err != nil {
			p.log.Error("drop push", "err", err)
		}
	default:
		p.m.retried.Inc()
		backoff := min(time.Duration(1<<it.Attempts)*time.Second, 10*time.Minute)
		if err := p.o.Store.RetryOutbox(wctx, it, now.Add(backoff), describe(res, err)); err != nil {
			p.log.Error("retry push", "err", err)
		}
	}
	return false
}

func describe(res *apns2.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d %s", res.StatusCode, res.Reason)
}

// jsonEscape keeps a PushMagic (a UUID from the device) from breaking the
// JSON payload.
func jsonEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// PushNow asks for a push to a device at once (manual pushes).
func (p *Pusher) PushNow(ctx context.Context, enrollmentID string) error {
	return p.o.Store.EnqueuePush(ctx, enrollmentID, p.o.Now())
}

type metrics struct {
	sent, failed, retried prometheus.Counter
	latency               prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sent:    prometheus.NewCounter(prometheus.CounterOpts{Name: "vestibule_push_sent_total", Help: "MDM pushes APNs accepted."}),
		failed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "vestibule_push_failed_total", Help: "MDM pushes given up."}),
		retried: prometheus.NewCounter(prometheus.CounterOpts{Name: "vestibule_push_retried_total", Help: "MDM pushes scheduled again after a failure."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vestibule_push_duration_seconds", Help: "APNs request latency.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}),
	}
	if reg != nil {
		reg.MustRegister(m.sent, m.failed, m.retried, m.latency)
	}
	return m
}
