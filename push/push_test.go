package push_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/apnstest"
	"github.com/vestibule-mdm/vestibule/push"
	"github.com/vestibule-mdm/vestibule/store"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

const topic = "com.apple.mgmt.External.11111111-2222-3333-4444-555555555555"

// apnsServer speaks the APNs provider API over HTTP/2 and TLS: each device
// token answers with the statuses scripted for it, then 200.
type apnsServer struct {
	*httptest.Server
	mu       sync.Mutex
	script   map[string][]int
	received []received
}

type received struct {
	token  string
	header http.Header
	body   string
}

func newAPNs(t testing.TB) *apnsServer {
	s := &apnsServer{script: map[string][]int{}}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
		if r.Method != http.MethodPost || !ok || r.ProtoMajor != 2 {
			http.Error(w, `{"reason":"BadPath"}`, http.StatusNotFound)
			return
		}
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.received = append(s.received, received{token: token, header: r.Header.Clone(), body: string(body)})
		status := http.StatusOK
		if q := s.script[token]; len(q) > 0 {
			status, s.script[token] = q[0], q[1:]
		}
		s.mu.Unlock()
		w.Header().Set("apns-id", "00000000-0000-0000-0000-000000000001")
		switch status {
		case http.StatusOK:
			w.WriteHeader(http.StatusOK)
		case http.StatusGone:
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"reason":"Unregistered","timestamp":%d}`, time.Now().UnixMilli())
		case http.StatusTooManyRequests:
			w.WriteHeader(status)
			io.WriteString(w, `{"reason":"TooManyRequests"}`)
		default:
			w.WriteHeader(status)
			io.WriteString(w, `{"reason":"InternalServerError"}`)
		}
	}))
	s.EnableHTTP2 = true
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *apnsServer) got() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.received...)
}

// pushCert is an MDM push certificate as Apple issues it: the topic in the
// subject's UID.
func pushCert(t testing.TB) tls.Certificate {
	cert, _, _, err := apnstest.PushCertificate(topic)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newPusher(t testing.TB, st *store.Store, apns *apnsServer, c *clock, opts ...func(*push.Options)) *push.Pusher {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(apns.Certificate())
	o := push.Options{Certificate: pushCert(t), Host: apns.URL, RootCAs: roots, Store: st, Now: c.now, Batch: 50}
	for _, opt := range opts {
		opt(&o)
	}
	p, err := push.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// approvedDevice makes an approved enrollment with a push token.
func approvedDevice(t testing.TB, st *store.Store, token string, now time.Time) string {
	t.Helper()
	ctx := context.Background()
	email := "u-" + token + "@example.com"
	u, err := enrollment.NewUsers(st, func() time.Time { return now }).Add(ctx, enrollment.Actor{Name: "t"}, enrollment.UserInput{Email: email})
	if err != nil {
		t.Fatal(err)
	}
	r := enrollment.Reservation{ID: enrollment.NewID(), OrgID: "o", UserID: u.ID, ChallengeHash: enrollment.NewID(), TokenNonce: enrollment.NewID(),
		TokenKeyVersion: 1, CreatedAt: now, ExpiresAt: now.Add(time.Hour), CreatedBy: "t"}
	ev := enrollment.AuditEvent{At: now, Actor: "t", Action: "t"}
	if err := st.CreateReservation(ctx, r, ev); err != nil {
		t.Fatal(err)
	}
	e := enrollment.Enrollment{Facts: enrollment.DeviceFacts{UDID: "UDID-" + token, Serial: "S-" + token}}
	if _, err := st.ClaimReservation(ctx, r.ID, r.TokenNonce, e, now, ev, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.UpdatePushInfo(ctx, r.ID, enrollment.PushInfo{Token: token, Magic: "magic-" + token, Topic: topic}, now); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Decide(ctx, r.ID, enrollment.StatePending, enrollment.StateApproved, "t", "", now, enrollment.DecisionEffects(enrollment.StateApproved, nil), ev); err != nil {
		t.Fatal(err)
	}
	return r.ID
}

func hexToken(i int) string { return hex.EncodeToString([]byte(fmt.Sprintf("token-%026d", i))) }

func TestDeliveryAndFailures(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		st := storetest.Open(t, dialect)
		apns := newAPNs(t)
		c := &clock{t: time.Now()}
		p := newPusher(t, st, apns, c)

		ok, gone, busy, broken := hexToken(1), hexToken(2), hexToken(3), hexToken(4)
		apns.script[gone] = []int{410}
		apns.script[busy] = []int{429}
		apns.script[broken] = []int{500, 500}
		ids := map[string]string{}
		for _, tok := range []string{ok, gone, busy, broken} {
			ids[tok] = approvedDevice(t, st, tok, c.now())
		}
		if n, _ := p.Drain(ctx); n != 4 {
			t.Fatalf("first drain handled %d", n)
		}
		first := apns.got()
		for _, r := range first {
			if r.header.Get("apns-topic") != topic || r.header.Get("apns-push-type") != "mdm" || r.header.Get("apns-priority") != "10" ||
				r.header.Get("apns-expiration") == "" || r.body != `{"mdm":"magic-`+r.token+`"}` {
				t.Fatalf("push to %s: headers %v body %s", r.token, r.header, r.body)
			}
		}
		e, _ := st.Enrollment(ctx, ids[gone])
		if e.PushInvalidAt == nil {
			t.Error("410 did not mark the token invalid")
		}
		if n, _ := st.OutboxLen(ctx); n != 2 {
			t.Fatalf("after the first drain %d pushes are owed, want 2 (429 and 500)", n)
		}
		if n, _ := p.Drain(ctx); n != 0 {
			t.Fatalf("retries went out before their backoff: %d", n)
		}
		c.add(time.Second)
		p.Drain(ctx) // 429 → 200 now; 500 → 500 again, backoff 2s
		c.add(2 * time.Second)
		p.Drain(ctx) // 500 → 200
		if n, _ := st.OutboxLen(ctx); n != 0 {
			t.Fatalf("%d pushes still owed", n)
		}
		count := map[string]int{}
		for _, r := range apns.got() {
			count[r.token]++
		}
		if count[ok] != 1 || count[gone] != 1 || count[busy] != 2 || count[broken] != 3 {
			t.Fatalf("pushes per token: %v", count)
		}
		// A token APNs called invalid is not pushed again until the device
		// sends a new one.
		if err := st.EnqueuePush(ctx, ids[gone], c.now()); err != nil {
			t.Fatal(err)
		}
		if n, _ := st.OutboxLen(ctx); n != 0 {
			t.Fatal("a push was queued for an invalid token")
		}
	})
}

func TestCoalescingAndRestart(t *testing.T) {
	ctx := context.Background()
	dsn := storetest.DSN(t, "sqlite")
	st := storetest.OpenDSN(t, dsn, store.Options{})
	apns := newAPNs(t)
	c := &clock{t: time.Now()}
	tok := hexToken(7)
	id := approvedDevice(t, st, tok, c.now())
	for range 3 {
		cmd := enrollment.NewCommand{UUID: enrollment.NewID(), RequestType: "ProfileList", Body: []byte("<plist/>")}
		if err := st.EnqueueCommands(ctx, id, []enrollment.NewCommand{cmd}, "t", c.now(), enrollment.AuditEvent{At: c.now(), Actor: "t", Action: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := st.OutboxLen(ctx); n != 1 {
		t.Fatalf("approval and three commands owe %d pushes, want 1", n)
	}
	st.Close() // the process stops before pushing
	st2 := storetest.OpenDSN(t, dsn, store.Options{})
	p := newPusher(t, st2, apns, c)
	if n, err := p.Drain(ctx); n != 1 || err != nil {
		t.Fatalf("after a restart: %d %v", n, err)
	}
	if got := apns.got(); len(got) != 1 || got[0].token != tok {
		t.Fatalf("received %v", got)
	}
}

// twoReplicas opens two stores on one PostgreSQL database, as two
// replicas would, with n approved devices (tokens from first on) waiting
// for a push.
func twoReplicas(t *testing.T, n, first int) (st1, st2 *store.Store, apns *apnsServer, c *clock) {
	dsn := storetest.DSN(t, "postgres")
	st1 = storetest.OpenDSN(t, dsn, store.Options{})
	st2 = storetest.OpenDSN(t, dsn, store.Options{})
	apns = newAPNs(t)
	c = &clock{t: time.Now()}
	for i := range n {
		approvedDevice(t, st1, hexToken(first+i), c.now())
	}
	return st1, st2, apns, c
}

func TestTwoWorkersNeverPushTwice(t *testing.T) {
	ctx := context.Background()
	const n = 120
	st1, st2, apns, c := twoReplicas(t, n, 100)
	var wg sync.WaitGroup
	for _, st := range []*store.Store{st1, st2} {
		p := newPusher(t, st, apns, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k, err := p.Drain(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if k == 0 {
					return
				}
			}
		}()
	}
	wg.Wait()
	pushedOnceEach(t, apns, n)
}

// startPusher starts a pusher's workers until the test ends.
func startPusher(t *testing.T, o push.Options) *push.Pusher {
	t.Helper()
	p, err := push.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.Start(ctx)
	t.Cleanup(func() {
		cancel()
		p.Wait()
	})
	return p
}

// awaitOutbox waits until the outbox holds want items, failing t with
// the count and why after within.
func awaitOutbox(t *testing.T, st *store.Store, want int, within time.Duration, why string) {
	t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(5 * time.Millisecond) {
		n, err := st.OutboxLen(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s", n, why)
		}
	}
}

// pushedOnceEach fails t unless APNs got exactly one push for each of n
// devices.
func pushedOnceEach(t *testing.T, apns *apnsServer, n int) {
	t.Helper()
	seen := map[string]int{}
	for _, r := range apns.got() {
		seen[r.token]++
	}
	if len(seen) != n {
		t.Fatalf("%d devices pushed, want %d", len(seen), n)
	}
	for tok, k := range seen {
		if k != 1 {
			t.Fatalf("%s pushed %d times", tok, k)
		}
	}
}

// TestRunningWorkersNeverPushTwice: two replicas running two workers each,
// every worker claiming ahead of its answers, push each device once.
func TestRunningWorkersNeverPushTwice(t *testing.T) {
	const n = 300
	st1, st2, apns, c := twoReplicas(t, n, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	var pushers []*push.Pusher
	for _, st := range []*store.Store{st1, st2} {
		p := newPusher(t, st, apns, c, func(o *push.Options) {
			o.Batch, o.Workers, o.InFlight, o.Rate, o.Poll = 7, 2, 3, 5000, 10*time.Millisecond
		})
		p.Start(ctx)
		pushers = append(pushers, p)
	}
	awaitOutbox(t, st1, 0, 20*time.Second, "items left in the outbox")
	cancel()
	for _, p := range pushers {
		p.Wait()
	}
	pushedOnceEach(t, apns, n)
}

func TestCertificateChecks(t *testing.T) {
	st := storetest.Open(t, "sqlite")
	if _, err := push.New(push.Options{Store: st}); err == nil {
		t.Error("no certificate accepted")
	}
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not a push cert"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if _, err := push.New(push.Options{Store: st, Certificate: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}); err == nil ||
		!strings.Contains(err.Error(), "topic") {
		t.Errorf("a certificate without a topic: %v", err)
	}
	apns := newAPNs(t)
	c := &clock{t: time.Now().Add(400 * 24 * time.Hour)}
	p := newPusher(t, st, apns, c)
	if err := p.Health(context.Background()); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired certificate: %v", err)
	}
}

func BenchmarkWorker(b *testing.B) {
	ctx := context.Background()
	st := storetest.Open(b, "sqlite")
	apns := newAPNs(b)
	c := &clock{t: time.Now()}
	for i := range b.N {
		approvedDevice(b, st, hexToken(i), c.now())
	}
	p := newPusher(b, st, apns, c)
	b.ResetTimer()
	sent := 0
	for sent < b.N {
		n, err := p.Drain(ctx)
		if err != nil || n == 0 {
			b.Fatalf("drained %d of %d: %v", sent, b.N, err)
		}
		sent += n
	}
}

// TestPushesArePaced: every push waits for its turn at the configured rate,
// a worker claims no more than it can push well within its lease at that
// rate, and a worker stopped between turns leaves the rest of its batch to
// come back when the lease ends.
func TestPushesArePaced(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t, "sqlite")
	apns := newAPNs(t)
	c := &clock{t: time.Now()}
	for i := range 12 {
		approvedDevice(t, st, hexToken(100+i), c.now())
	}
	turns, stopAfter := 0, 5
	pace := func(ctx context.Context) error {
		if turns == stopAfter {
			return context.Canceled
		}
		turns++
		return nil
	}
	// At 0.1 pushes a second, a third of the one-minute lease holds 2.
	p := newPusher(t, st, apns, c, func(o *push.Options) { o.Rate, o.Pace = 0.1, pace })
	if n, err := p.Drain(ctx); n != 2 || err != nil || turns != 2 {
		t.Fatalf("slow rate: claimed and pushed %d (%v) in %d turns, want 2", n, err, turns)
	}
	p = newPusher(t, st, apns, c, func(o *push.Options) { o.Rate, o.Pace = 200, pace })
	// Stopped after 3 more turns, with 10 claimed.
	if n, err := p.Drain(ctx); n != 3 || !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped mid-batch: %d %v", n, err)
	}
	if got := len(apns.got()); got != 5 || turns != 5 {
		t.Fatalf("%d pushes in %d turns, want 5 and 5", got, turns)
	}
	// The unpushed rest is leased; once the lease ends another worker gets it.
	stopAfter = 100
	if n, _ := p.Drain(ctx); n != 0 {
		t.Fatalf("%d pushed while leased", n)
	}
	c.add(2 * time.Minute)
	if n, err := p.Drain(ctx); n != 7 || err != nil {
		t.Fatalf("after the lease: %d %v", n, err)
	}
	if got := len(apns.got()); got != 12 || turns != 12 {
		t.Fatalf("%d pushes in %d turns, want 12", got, turns)
	}
}

// TestPushQueuedAgainWhilePushingIsNotLost: a command queued for a device
// while its push is on the way queues the push again; completing the first
// push must not delete the second. And workers sharing the rate claim only
// their share.
func TestPushQueuedAgainWhilePushingIsNotLost(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t, "sqlite")
	apns := newAPNs(t)
	c := &clock{t: time.Now()}
	id := approvedDevice(t, st, hexToken(200), c.now())
	requeued := false
	pace := func(context.Context) error {
		if !requeued {
			requeued = true
			// A new command, queued between the claim and the push.
			return st.EnqueuePush(ctx, id, c.now())
		}
		return nil
	}
	p := newPusher(t, st, apns, c, func(o *push.Options) { o.Pace = pace })
	if n, err := p.Drain(ctx); n != 1 || err != nil {
		t.Fatalf("first push: %d %v", n, err)
	}
	if n, _ := st.OutboxLen(ctx); n != 1 {
		t.Fatalf("the push queued again was deleted with the first: %d left", n)
	}
	if n, err := p.Drain(ctx); n != 1 || err != nil || len(apns.got()) != 2 {
		t.Fatalf("second push: %d %v, APNs got %d", n, err, len(apns.got()))
	}
	if n, _ := st.OutboxLen(ctx); n != 0 {
		t.Fatalf("%d left after both pushes", n)
	}

	// Four workers sharing one push a second: each claims what it can push
	// in a third of the lease at a quarter of the rate, 5.
	for i := range 20 {
		approvedDevice(t, st, hexToken(300+i), c.now())
	}
	p = newPusher(t, st, apns, c, func(o *push.Options) {
		o.Rate, o.Workers, o.Pace = 1, 4, func(context.Context) error { return nil }
	})
	if n, err := p.Drain(ctx); n != 5 || err != nil {
		t.Fatalf("claimed %d (%v), want 5", n, err)
	}
}

// TestPushesRunSideBySide: a worker does not wait for APNs to answer one
// push before it starts the next (over the Internet each answer takes tens
// of milliseconds, which one at a time would cap a worker far below its
// rate), and it never has more than InFlight on their way.
func TestPushesRunSideBySide(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t, "sqlite")
	const inFlight = 4
	// Answered only once inFlight pushes wait together; pushes sent one at
	// a time would each wait out the timeout instead.
	apns := newBlockingAPNs(t)
	c := &clock{t: time.Now()}
	for i := range 3 * inFlight {
		approvedDevice(t, st, hexToken(300+i), c.now())
	}
	p, err := push.New(push.Options{Certificate: pushCert(t), Host: apns.URL, RootCAs: apns.Roots(), Store: st, Now: c.now, Rate: 10_000, InFlight: inFlight})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := apns.drainHeld(p, inFlight); n != 3*inFlight || err != nil {
		t.Fatalf("drained %d (%v), want %d", n, err, 3*inFlight)
	}
	if most := apns.peak(); most != inFlight || apns.Tokens() != 3*inFlight {
		t.Fatalf("%d pushes on their way at most, %d devices pushed; want %d and %d", most, apns.Tokens(), inFlight, 3*inFlight)
	}
	if n, _ := st.OutboxLen(ctx); n != 0 {
		t.Fatalf("%d pushes left in the outbox", n)
	}
}

// TestNoPushStartsLateInItsLease: a worker whose batch runs slow (APNs
// answering slowly) starts no push whose turn comes after the first third
// of the batch's lease, so none is still on its way when the lease ends
// and another worker pushes the item again; what it did not start goes
// back after the lease.
func TestNoPushStartsLateInItsLease(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t, "sqlite")
	apns := newAPNs(t)
	c := &clock{t: time.Now()}
	for i := range 5 {
		approvedDevice(t, st, hexToken(400+i), c.now())
	}
	// Each turn takes ten seconds of the one-minute lease: the third
	// comes at 30 s.
	pace := func(context.Context) error {
		c.add(10 * time.Second)
		return nil
	}
	p := newPusher(t, st, apns, c, func(o *push.Options) { o.Rate, o.Pace = 200, pace })
	if n, err := p.Drain(ctx); n != 2 || err != nil {
		t.Fatalf("pushed %d (%v), want the 2 whose turn came within 20 s", n, err)
	}
	if got := len(apns.got()); got != 2 {
		t.Fatalf("%d pushes, want 2", got)
	}
	if n, _ := st.OutboxLen(ctx); n != 3 {
		t.Fatalf("%d left in the outbox, want 3", n)
	}
	c.add(time.Minute)
	if n, err := p.Drain(ctx); n != 2 || err != nil {
		t.Fatalf("after the lease: %d (%v)", n, err)
	}
}

// blockingAPNs holds every push unanswered until release closes, counting
// how many wait together.
type blockingAPNs struct {
	*apnstest.Server
	mu            sync.Mutex
	waiting, most int
	release       chan struct{}
}

func newBlockingAPNs(t testing.TB) *blockingAPNs {
	b := &blockingAPNs{release: make(chan struct{})}
	b.Server = apnstest.Start(func(string) {
		b.mu.Lock()
		b.waiting++
		b.most = max(b.most, b.waiting)
		b.mu.Unlock()
		select {
		case <-b.release:
		case <-time.After(10 * time.Second):
		}
		b.mu.Lock()
		b.waiting--
		b.mu.Unlock()
	})
	t.Cleanup(b.Close)
	return b
}

func (b *blockingAPNs) peak() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.most
}

// awaitWaiting reports whether n pushes wait unanswered together within a
// few seconds.
func (b *blockingAPNs) awaitWaiting(n int) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		b.mu.Lock()
		got := b.waiting
		b.mu.Unlock()
		if got >= n {
			return true
		}
	}
	return false
}

// drainHeld drains one batch of p, holding every answer until n pushes
// wait together (or awaitWaiting gives up), then answering them all.
func (b *blockingAPNs) drainHeld(p *push.Pusher, n int) (int, error) {
	type result struct {
		n   int
		err error
	}
	done := make(chan result)
	go func() {
		n, err := p.Drain(context.Background())
		done <- result{n, err}
	}()
	b.awaitWaiting(n)
	close(b.release)
	r := <-done
	return r.n, r.err
}

// TestRunClaimsAheadOfAnswers: a running worker claims its next batch once
// every push of the last one has started, not once APNs has answered them
// all (waiting for the answers before each claim held a worker at 2,000 a
// second to about half its rate), and InFlight still bounds its pushes
// across batches; what it pushed leaves the outbox once answered.
func TestRunClaimsAheadOfAnswers(t *testing.T) {
	st := storetest.Open(t, "sqlite")
	apns := newBlockingAPNs(t)
	c := &clock{t: time.Now()}
	const batch, batches = 2, 3
	for i := range batch * batches {
		approvedDevice(t, st, hexToken(500+i), c.now())
	}
	const inFlight = 4 // more than a batch, fewer than all
	startPusher(t, push.Options{Certificate: pushCert(t), Host: apns.URL, RootCAs: apns.Roots(), Store: st, Now: c.now,
		Rate: 10_000, Batch: batch, InFlight: inFlight, Poll: 10 * time.Millisecond})
	if !apns.awaitWaiting(inFlight) {
		t.Fatalf("%d pushes on their way, want %d from two batches: the worker waited for answers before claiming", apns.peak(), inFlight)
	}
	time.Sleep(50 * time.Millisecond) // a push past InFlight would arrive meanwhile
	if most := apns.peak(); most != inFlight {
		t.Fatalf("%d pushes on their way at once, want InFlight's %d across batches", most, inFlight)
	}
	close(apns.release)
	awaitOutbox(t, st, 0, 5*time.Second, "pushed items still in the outbox while the worker idles")
	if got := apns.Tokens(); got != batch*batches {
		t.Fatalf("%d devices pushed, want %d", got, batch*batches)
	}
}

// TestInFlightFollowsTheRate: left unset, a worker's pushes on their way
// cover its rate with APNs answering in 100 ms: at 500 a second, 50 at
// once. A fixed 32 capped a worker at 320 a second with such answers.
func TestInFlightFollowsTheRate(t *testing.T) {
	st := storetest.Open(t, "sqlite")
	apns := newBlockingAPNs(t)
	c := &clock{t: time.Now()}
	const want = 50
	for i := range want + 5 {
		approvedDevice(t, st, hexToken(600+i), c.now())
	}
	p, err := push.New(push.Options{Certificate: pushCert(t), Host: apns.URL, RootCAs: apns.Roots(), Store: st, Now: c.now, Rate: 500})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := apns.drainHeld(p, want); n != want+5 || err != nil {
		t.Fatalf("drained %d (%v), want %d", n, err, want+5)
	}
	if most := apns.peak(); most != want {
		t.Fatalf("%d pushes on their way at most, want %d", most, want)
	}
}

// TestAnsweredPushLeavesWhileOthersHang: a push APNs answered leaves the
// outbox within a second or so, even when fewer than a write's worth have
// gathered and the pushes after it hang until the client's timeout.
// Waiting for those could outlast its lease, and another worker would
// push it again.
func TestAnsweredPushLeavesWhileOthersHang(t *testing.T) {
	st := storetest.Open(t, "sqlite")
	c := &clock{t: time.Now()}
	token := func(i int) string { return hexToken(700 + i) }
	release := make(chan struct{})
	var mu sync.Mutex
	hung := 0
	// The first batch's three answer after 300 ms, the last of them once
	// the second batch is claimed; the second batch's two hang.
	apns := apnstest.Start(func(tok string) {
		for i := range 3 {
			if tok == token(i) {
				time.Sleep(300 * time.Millisecond)
				return
			}
		}
		mu.Lock()
		hung++
		mu.Unlock()
		select {
		case <-release:
		case <-time.After(20 * time.Second):
		}
	})
	defer apns.Close()
	defer close(release)
	for i := range 5 {
		approvedDevice(t, st, token(i), c.now())
		c.add(time.Millisecond) // claimed in this order
	}
	startPusher(t, push.Options{Certificate: pushCert(t), Host: apns.URL, RootCAs: apns.Roots(), Store: st, Now: c.now,
		Rate: 10_000, Batch: 3, InFlight: 2, Poll: 10 * time.Millisecond})
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		h := hung
		mu.Unlock()
		if h == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pushes hang, want 2", h)
		}
	}
	awaitOutbox(t, st, 2, 4*time.Second, "items in the outbox, want the 2 hanging: an answered push waits behind them")
}

// TestStopCutsPushesShortQuietly: stopping cancels the pushes on their
// way; each goes back to the outbox when its lease ends, without a retry
// scheduled or an error logged for each.
func TestStopCutsPushesShortQuietly(t *testing.T) {
	st := storetest.Open(t, "sqlite")
	apns := newBlockingAPNs(t)
	defer close(apns.release)
	c := &clock{t: time.Now()}
	const n = 10
	for i := range n {
		approvedDevice(t, st, hexToken(800+i), c.now())
	}
	var logs safeBuffer
	p, err := push.New(push.Options{Certificate: pushCert(t), Host: apns.URL, RootCAs: apns.Roots(), Store: st, Now: c.now,
		Rate: 10_000, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.Start(ctx)
	if !apns.awaitWaiting(n) {
		t.Fatalf("%d pushes on their way, want %d", apns.peak(), n)
	}
	cancel()
	p.Wait()
	if got := logs.String(); got != "" {
		t.Fatalf("logged on stopping:\n%s", got)
	}
	if left, _ := st.OutboxLen(context.Background()); left != n {
		t.Fatalf("%d items in the outbox, want all %d back for after the lease", left, n)
	}
	c.add(pushLease + time.Second)
	items, err := st.ClaimOutbox(context.Background(), n, c.now(), c.now().Add(time.Minute))
	if err != nil || len(items) != n {
		t.Fatalf("claimed %d (%v) after the lease, want %d", len(items), err, n)
	}
	for _, it := range items {
		if it.Attempts != 0 {
			t.Fatalf("%s: %d attempts, want none counted for a push the stop cut short", it.EnrollmentID, it.Attempts)
		}
	}
}

// pushLease is the pusher's lease on a claimed batch.
const pushLease = time.Minute

type safeBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
