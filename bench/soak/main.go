// Command soak runs the whole ceremony across several `vestibule serve`
// replicas on one PostgreSQL database while it kills replicas with SIGKILL
// and restarts them, then checks from the database and its recorders that
// every promise held: no token claimed twice, no challenge used twice,
// every approved device served each command once, every approval pushed,
// every pending enrollment announced, every decision audited, no state
// impossible. It runs on loopback only, bounded in devices and time.
package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"

	"github.com/vestibule-mdm/vestibule/bench/internal/apiclient"
	"github.com/vestibule-mdm/vestibule/internal/apnstest"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
)

type options struct {
	bin       string
	pg        string
	replicas  int
	devices   int
	workers   int
	duration  time.Duration
	killMin   time.Duration
	killMax   time.Duration
	keep      bool
	logDir    string
	maxDevice time.Duration
	out       io.Writer // the report
	burst     bool
	pushRate  int
	seeded    int
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "", "the vestibule binary (go build -o /tmp/vestibule ./cmd/vestibule)")
	flag.StringVar(&o.pg, "pg", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "a PostgreSQL database to create the soak's own database from")
	flag.IntVar(&o.replicas, "replicas", 3, "replicas (1..8)")
	flag.IntVar(&o.devices, "devices", 100, "devices through the ceremony (1..20000)")
	flag.IntVar(&o.workers, "c", 16, "devices at once")
	flag.DurationVar(&o.duration, "duration", 0, "keep killing for at least this long (the ceremony of every device also has to finish)")
	flag.DurationVar(&o.killMin, "kill-min", 5*time.Second, "shortest wait between kills")
	flag.DurationVar(&o.killMax, "kill-max", 10*time.Second, "longest wait between kills")
	flag.BoolVar(&o.keep, "keep", false, "keep the soak's database afterwards")
	flag.BoolVar(&o.burst, "burst", false, "at the end, queue a command for every device at once: pushes wake the devices, /readyz is timed")
	flag.IntVar(&o.seeded, "seeded", 0, "instead of ceremonies and kills: seed this many approved devices (bench/seed's way), then the burst")
	flag.IntVar(&o.pushRate, "push-rate", 200, "the replicas' push.rate (pushes a second per replica)")
	flag.StringVar(&o.logDir, "logs", "", "write the replicas' logs to this directory (default: a temporary one, removed)")
	flag.DurationVar(&o.maxDevice, "device-timeout", 3*time.Minute, "give up on one device's ceremony after this long")
	flag.Parse()
	o.out = os.Stdout
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// replica is one `vestibule serve` process.
type replica struct {
	i    int
	addr string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	up   atomic.Bool
}

type soak struct {
	o        options
	dir      string
	dsn      string
	env      []string
	replicas []*replica
	next     atomic.Uint64
	kills    atomic.Int64
	requests atomic.Int64 // every request through the balancer
	failover atomic.Int64 // attempts that failed and went to another replica

	apns   *apnstest.Server
	pushMu sync.Mutex
	wake   func(token string) // set during the burst
	hookMu sync.Mutex
	hooks  map[string]int // enrollment ID → announcements received

	began   time.Time
	dep     *depWatch
	console *console
}

func run(o options) error {
	if o.bin == "" {
		return errors.New("-bin is required")
	}
	if o.seeded < 0 || o.seeded > 200_000 {
		return errors.New("-seeded must be 0..200000")
	}
	if o.replicas < 1 || o.replicas > 8 || o.devices < 1 || o.devices > 20000 || o.workers < 1 || o.killMin <= 0 || o.killMax < o.killMin {
		return errors.New("bad -replicas, -devices, -c or kill interval")
	}
	s := &soak{o: o, hooks: map[string]int{}, began: time.Now()}
	var err error
	if s.dir, err = os.MkdirTemp("", "vestibule-soak-"); err != nil {
		return err
	}
	defer os.RemoveAll(s.dir)
	if o.logDir == "" {
		o.logDir = s.dir
		s.o.logDir = s.dir
	} else if err := os.MkdirAll(o.logDir, 0o700); err != nil {
		return err
	}
	cleanupDB, err := s.createDatabase()
	if err != nil {
		return err
	}
	if !o.keep {
		defer cleanupDB()
	}
	stopAPNs, err := s.startAPNs()
	if err != nil {
		return err
	}
	defer stopAPNs()
	stopDEP, err := s.startDEP()
	if err != nil {
		return err
	}
	defer stopDEP()
	hook := httptest.NewServer(http.HandlerFunc(s.webhook))
	defer hook.Close()
	secret := filepath.Join(s.dir, "webhook-secret")
	if err := os.WriteFile(secret, []byte("soak-secret"), 0o600); err != nil {
		return err
	}
	s.env = append(s.env, "VESTIBULE_MDM_WEBHOOK_URL="+hook.URL, "VESTIBULE_MDM_WEBHOOK_SECRET_FILE="+secret,
		"VESTIBULE_MDM_WEBHOOK_RETRY_DELAY=200ms")

	for i := range o.replicas {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		s.replicas = append(s.replicas, &replica{i: i, addr: ln.Addr().String()})
		ln.Close()
	}
	public := "http://" + s.replicas[0].addr
	for _, r := range s.replicas { // one after another: the first makes the keys
		if err := s.start(r, public); err != nil {
			return err
		}
	}
	defer func() {
		for _, r := range s.replicas {
			s.stop(r)
		}
	}()
	token, err := s.admin()
	if err != nil {
		return err
	}
	if err := s.uploadDEPToken(); err != nil {
		return err
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &spread{s: s, next: http.DefaultTransport}}
	api := apiclient.Client{Base: public, Token: token, HTTP: client}
	if s.console, err = s.signIn(public, s.replicas[len(s.replicas)-1]); err != nil {
		return err
	}
	if o.seeded > 0 {
		return s.seededBurst(api, client, public)
	}

	// Kill a random replica every killMin..killMax, and restart it.
	ctx, stopKilling := context.WithCancel(context.Background())
	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		for {
			wait := o.killMin + time.Duration(mrand.Int64N(int64(o.killMax-o.killMin)+1))
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			r := s.replicas[mrand.IntN(len(s.replicas))]
			s.kill(r)
			s.dep.grow(5) // Apple's inventory changes while replicas die
			_ = s.start(r, public)
		}
	}()

	start := time.Now()
	s.progress("%d devices through the ceremony, %d at once, on %d replicas", o.devices, o.workers, o.replicas)
	results := s.ceremonies(api, client)
	s.progress("ceremonies done")
	if rest := o.duration - time.Since(start); rest > 0 {
		// The devices finished early: keep killing, with idle check-ins.
		s.idle(ctx, results, rest)
	}
	stopKilling()
	<-killerDone
	for _, r := range s.replicas {
		if !r.up.Load() {
			if err := s.start(r, public); err != nil {
				return err
			}
		}
	}
	took := time.Since(start)
	// One more kill and restart: a replica that starts syncs at once, so
	// the last devices added reach the inventory through a survivor.
	s.kill(s.replicas[0])
	if err := s.start(s.replicas[0], public); err != nil {
		return err
	}
	// Let the outboxes drain, then let every device pick up what is left.
	s.progress("killing stopped after %d kills; waiting for the outboxes", s.kills.Load())
	if err := s.waitDrained(); err != nil {
		return err
	}
	s.progress("outboxes drained; every device checks in once more")
	s.finalDrain(results)
	var burst *burstResult
	if o.burst {
		if burst, err = s.burst(api, results); err != nil {
			return err
		}
	}
	s.progress("checking the invariants")
	return s.report(results, took, burst)
}

func (s *soak) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "soak %s: %s\n", time.Since(s.began).Round(100*time.Millisecond), fmt.Sprintf(format, args...))
}

func (s *soak) createDatabase() (func(), error) {
	admin, err := sqlx.Open("pgx", s.o.pg)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("vestibule_soak_%d", time.Now().UnixNano())
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		admin.Close()
		return nil, fmt.Errorf("create database: %w", err)
	}
	u, err := url.Parse(s.o.pg)
	if err != nil {
		return nil, err
	}
	u.Path = "/" + name
	s.dsn = u.String()
	return func() {
		_, _ = admin.Exec("DROP DATABASE " + name + " WITH (FORCE)")
		admin.Close()
	}, nil
}

// startAPNs runs an HTTP/2 TLS server that takes pushes as APNs does and
// records them, and writes the push certificate the replicas present.
func (s *soak) startAPNs() (func(), error) {
	s.apns = apnstest.Start(func(token string) {
		s.pushMu.Lock()
		wake := s.wake
		s.pushMu.Unlock()
		if wake != nil {
			wake(token) // the device answers its push, as a real one does
		}
	})
	topic := "com.apple.mgmt.External.5ea1c0de-0000-4000-8000-000000000000"
	_, certPEM, keyPEM, err := apnstest.PushCertificate(topic)
	if err != nil {
		s.apns.Close()
		return nil, err
	}
	files := map[string][]byte{"apns-ca.pem": s.apns.RootPEM(), "push.pem": certPEM, "push.key": keyPEM}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(s.dir, n), b, 0o600); err != nil {
			s.apns.Close()
			return nil, err
		}
	}
	s.env = append(s.env, "SSL_CERT_FILE="+filepath.Join(s.dir, "apns-ca.pem"), "VESTIBULE_PUSH_CERT_FILE="+filepath.Join(s.dir, "push.pem"),
		"VESTIBULE_PUSH_KEY_FILE="+filepath.Join(s.dir, "push.key"), "VESTIBULE_PUSH_HOST="+s.apns.URL, "VESTIBULE_MDM_TOPIC="+topic,
		"VESTIBULE_PUSH_WORKERS=2", fmt.Sprintf("VESTIBULE_PUSH_RATE=%d", s.o.pushRate))
	return s.apns.Close, nil
}

func (s *soak) webhook(w http.ResponseWriter, r *http.Request) {
	var ev struct {
		EnrollmentID string `json:"enrollment_id"`
	}
	b, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if json.Unmarshal(b, &ev) != nil || ev.EnrollmentID == "" {
		http.Error(w, "bad event", http.StatusBadRequest)
		return
	}
	s.hookMu.Lock()
	s.hooks[ev.EnrollmentID]++
	s.hookMu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *soak) command(args ...string) *exec.Cmd {
	cmd := exec.Command(s.o.bin, append([]string{"--dev", "--db", s.dsn, "--data-dir", filepath.Join(s.dir, "data")}, args...)...)
	cmd.Env = append(os.Environ(), s.env...)
	return cmd
}

func (s *soak) start(r *replica, public string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.up.Load() {
		return nil
	}
	cmd := s.command("serve", "--listen", r.addr, "--public-url", public)
	logf, err := os.OpenFile(s.logFile(r), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	r.cmd, r.done = cmd, done
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-done:
			return fmt.Errorf("replica %d exited at start: %s", r.i, lastLines(s.logFile(r)))
		default:
		}
		resp, err := http.Get("http://" + r.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				r.up.Store(true)
				return nil
			}
		}
	}
	return fmt.Errorf("replica %d did not become ready within 60 s; the end of its log:\n%s", r.i, lastLines(s.logFile(r)))
}

func (s *soak) logFile(r *replica) string {
	return filepath.Join(s.o.logDir, fmt.Sprintf("replica-%d.log", r.i))
}

func lastLines(file string) string {
	b, _ := os.ReadFile(file)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (s *soak) kill(r *replica) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil && r.up.Load() {
		r.up.Store(false)
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		<-r.done // the port is free only once the process is gone
		s.kills.Add(1)
	}
}

func (s *soak) stop(r *replica) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			_ = r.cmd.Process.Kill()
		}
	}
}

// admin adds the devices' user and an admin token with the command line.
func (s *soak) admin() (string, error) {
	if out, err := s.command("user", "add", "soak@example.com").CombinedOutput(); err != nil {
		return "", fmt.Errorf("user add: %v %s", err, out)
	}
	out, err := s.command("token", "create", "--name", "soak", "--role", "admin").Output()
	if err != nil {
		return "", fmt.Errorf("token create: %v", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// spread sends each request to the next live replica, round robin, with no
// stickiness, and sends it to another one when a replica is down: a load
// balancer in front of replicas that die.
type spread struct {
	s    *soak
	next http.RoundTripper
}

func (t *spread) RoundTrip(req *http.Request) (*http.Response, error) {
	var lastErr error
	t.s.requests.Add(1)
	for attempt := range 40 {
		r := t.s.replicas[int(t.s.next.Add(1))%len(t.s.replicas)]
		if !r.up.Load() {
			continue
		}
		out := req.Clone(req.Context())
		out.URL.Host, out.Host = r.addr, r.addr
		if req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			out.Body = body
		}
		resp, err := t.next.RoundTrip(out)
		switch {
		case err != nil:
			lastErr = err
			t.s.failover.Add(1)
		case resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable:
			resp.Body.Close()
			lastErr = fmt.Errorf("HTTP %d", resp.StatusCode)
			t.s.failover.Add(1)
		case req.Method == http.MethodGet:
			// A replica killed while it sends a body cuts the body, not
			// the request: a person downloading a profile downloads it
			// again, so a GET read short goes to the next replica.
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				resp.Body = io.NopCloser(bytes.NewReader(b))
				return resp, nil
			}
			lastErr = fmt.Errorf("reading the answer: %w", err)
			t.s.failover.Add(1)
		default:
			return resp, nil
		}
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	return nil, fmt.Errorf("no replica answered: %w", lastErr)
}

// device is what the soak remembers of one device's ceremony.
type device struct {
	d              *devicesim.Device
	id             string
	approved       bool
	approvedAt     time.Time
	firstPushToken []byte
	received       []string // command UUIDs, in order
	answered       map[string]bool
	duplicates     int    // commands handed out again after the device answered them
	replayOK       bool   // a second device got in with this device's token
	reenrolled     string // the enrollment that superseded it
	err            error
}

func (s *soak) ceremonies(api apiclient.Client, client *http.Client) []*device {
	out := make([]*device, s.o.devices)
	work := make(chan int)
	var wg sync.WaitGroup
	for range s.o.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				ctx, cancel := context.WithTimeout(context.Background(), s.o.maxDevice)
				out[i] = s.ceremony(ctx, api, client, i)
				cancel()
			}
		}()
	}
	for i := range s.o.devices {
		work <- i
	}
	close(work)
	wg.Wait()
	return out
}

func (s *soak) ceremony(ctx context.Context, api apiclient.Client, client *http.Client, i int) *device {
	dv := &device{d: devicesim.New(client, fmt.Sprintf("SOAK%08d", i))}
	dv.firstPushToken = dv.d.PushToken
	fail := func(step string, err error) *device { dv.err = fmt.Errorf("%s: %w", step, err); return dv }
	var err error
	if dv.id, err = api.Reserve("soak@example.com"); err != nil {
		return fail("reserve", err)
	}
	b, err := api.Get("/api/v1/reservations/" + dv.id + "/profile")
	if err != nil {
		return fail("profile", err)
	}
	if err := dv.d.Install(b); err != nil {
		return fail("install", err)
	}
	if err := dv.d.Enroll(ctx); err != nil {
		return fail("SCEP", err)
	}
	if err := ok(dv.d.Authenticate(ctx)); err != nil {
		return fail("Authenticate", err)
	}
	if err := ok(dv.d.TokenUpdate(ctx)); err != nil {
		return fail("TokenUpdate", err)
	}
	if i%10 == 3 {
		// The token replayed by another device with the certificate: refused.
		thief := *dv.d
		thief.UDID = "THIEF-" + dv.d.UDID
		if code, err := thief.Authenticate(ctx); err == nil && code == http.StatusOK {
			dv.replayOK = true
		}
	}
	if err := s.serve(ctx, dv); err != nil { // pending: the attestation question at most
		return fail("Connect pending", err)
	}
	dv.approvedAt = time.Now()
	if i%5 == 1 {
		// An admin approves in the console, each page on another replica.
		if err := s.console.approve(dv.id); err != nil {
			return fail("approve in the console", err)
		}
	} else if err := api.Approve(dv.id, "soak"); err != nil && !strings.Contains(err.Error(), "HTTP 409") {
		return fail("approve", err)
	}
	// Whoever answered, and however often it was retried, the decision is
	// recorded once.
	if st, err := api.State(dv.id); err != nil || st != "approved" {
		return fail("approval recorded", fmt.Errorf("state %q: %v", st, err))
	}
	dv.approved = true
	if err := s.serve(ctx, dv); err != nil {
		return fail("Connect approved", err)
	}
	if i%20 == 7 {
		// The same device enrolls again: a new pending enrollment, approved;
		// the old one is superseded.
		again, err := s.ceremonyAgain(ctx, api, client, dv)
		if err != nil {
			return fail("re-enrollment", err)
		}
		dv.reenrolled = again
	}
	return dv
}

func (s *soak) ceremonyAgain(ctx context.Context, api apiclient.Client, client *http.Client, old *device) (string, error) {
	id, err := api.Reserve("soak@example.com")
	if err != nil {
		return "", err
	}
	b, err := api.Get("/api/v1/reservations/" + id + "/profile")
	if err != nil {
		return "", err
	}
	d := devicesim.New(client, old.d.Serial)
	d.UDID = old.d.UDID
	if err := d.Install(b); err != nil {
		return "", err
	}
	if err := d.Enroll(ctx); err != nil {
		return "", err
	}
	if err := ok(d.Authenticate(ctx)); err != nil {
		return "", err
	}
	if err := ok(d.TokenUpdate(ctx)); err != nil {
		return "", err
	}
	if err := api.Approve(id, "soak"); err != nil && !strings.Contains(err.Error(), "HTTP 409") {
		return "", err
	}
	nd := &device{d: d, id: id, approved: true}
	if err := s.serve(ctx, nd); err != nil {
		return "", err
	}
	old.d = d // the device now speaks with its new identity
	old.received = append(old.received, nd.received...)
	for u := range nd.answered {
		if old.answered == nil {
			old.answered = map[string]bool{}
		}
		old.answered[u] = true
	}
	old.duplicates += nd.duplicates
	return id, nil
}

// serve connects and answers every command, acknowledging each.
func (s *soak) serve(ctx context.Context, dv *device) error {
	code, cmd, err := dv.d.Connect(ctx, "Idle", "")
	for range 50 {
		if err := ok(code, err); err != nil {
			return err
		}
		if cmd == nil {
			return nil
		}
		if dv.answered == nil {
			dv.answered = map[string]bool{}
		}
		if dv.answered[cmd.UUID] {
			dv.duplicates++
		}
		dv.received = append(dv.received, cmd.UUID)
		if cmd.RequestType == "InstallProfile" {
			if err := dv.d.InstallTrustProfile(ctx, cmd); err != nil && !errors.Is(err, devicesim.ErrNotTrustProfile) {
				return err
			}
		}
		code, cmd, err = dv.d.Answer(ctx, cmd)
		if err == nil && code == http.StatusOK {
			dv.answered[dv.received[len(dv.received)-1]] = true
		}
	}
	return errors.New("too many commands")
}

// idle keeps devices checking in while replicas die. Each worker owns its
// devices: a device never runs two sessions at once.
func (s *soak) idle(ctx context.Context, devices []*device, d time.Duration) {
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range s.o.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				for j := w; j < len(devices) && time.Now().Before(deadline) && ctx.Err() == nil; j += s.o.workers {
					dv := devices[j]
					if dv == nil || dv.err != nil {
						continue
					}
					if err := s.serve(ctx, dv); err != nil && ctx.Err() == nil {
						dv.err = fmt.Errorf("idle: %w", err)
					}
				}
			}
		}()
	}
	wg.Wait()
}

func (s *soak) finalDrain(devices []*device) {
	for _, dv := range devices {
		if dv != nil && dv.err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := s.serve(ctx, dv); err != nil {
				dv.err = fmt.Errorf("final drain: %w", err)
			}
			cancel()
		}
	}
}

// waitDrained waits for the push and webhook outboxes to empty.
func (s *soak) waitDrained() error {
	db, err := sqlx.Open("pgx", s.dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	began, told := time.Now(), false
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		var pushes, hooks int
		if err := db.Get(&pushes, `SELECT COUNT(*) FROM push_outbox`); err != nil {
			return err
		}
		if err := db.Get(&hooks, `SELECT COUNT(*) FROM webhook_outbox WHERE delivered_at IS NULL`); err != nil {
			return err
		}
		if pushes == 0 && hooks == 0 {
			time.Sleep(3 * time.Second) // trust profiles queued by the issuers
			return nil
		}
		if !told && time.Since(began) > 5*time.Second {
			told = true
			var leased int
			_ = db.Get(&leased, db.Rebind(`SELECT (SELECT COUNT(*) FROM push_outbox WHERE lease_until > ?) +
				(SELECT COUNT(*) FROM webhook_outbox WHERE delivered_at IS NULL AND lease_until > ?)`), time.Now().UnixMilli(), time.Now().UnixMilli())
			s.progress("%d pushes and %d announcements still due, %d of them leased by a replica that may have been killed (leases last a minute)",
				pushes, hooks, leased)
		}
	}
	return errors.New("the outboxes did not drain within 2 minutes")
}

func readCertificate(file string) (*x509.Certificate, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM certificate", file)
	}
	return x509.ParseCertificate(block.Bytes)
}

func ok(code int, err error) error {
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("HTTP %d", code)
	}
	return nil
}

// invariant is one promise and how often it was broken.
type invariant struct {
	name       string
	checked    int
	violations int
	note       string
}

func (s *soak) report(devices []*device, took time.Duration, burst *burstResult) error {
	db, err := sqlx.Open("pgx", s.dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	count := func(q string, args ...any) int {
		var n int
		if err := db.Get(&n, q, args...); err != nil {
			fmt.Fprintln(os.Stderr, "soak: query:", err)
			return -1
		}
		return n
	}
	var inv []invariant
	failed, replays, duplicates, lost, delivered := 0, 0, 0, 0, 0
	for _, dv := range devices {
		if dv == nil || dv.err != nil {
			failed++
			continue
		}
		if dv.replayOK {
			replays++
		}
		duplicates += dv.duplicates
		// Every command the server queued for this device reached it (a
		// superseded enrollment's last commands are moot: the device
		// speaks with its new identity).
		var queued []string
		ids := []string{dv.id}
		if dv.reenrolled != "" {
			ids = append(ids, dv.reenrolled)
		}
		for _, id := range ids {
			var q []string
			if err := db.Select(&q, db.Rebind(`SELECT c.id FROM commands c JOIN enrollments e ON e.id = c.enrollment_id
				WHERE c.enrollment_id = ? AND (e.state = 'approved' OR c.status <> 'queued')`), id); err != nil {
				fmt.Fprintln(os.Stderr, "soak: query:", err)
				lost++
			}
			queued = append(queued, q...)
		}
		got := map[string]bool{}
		for _, u := range dv.received {
			got[u] = true
		}
		for _, u := range queued {
			delivered++
			if !got[u] {
				lost++
				fmt.Fprintf(s.o.out, "device %s never received command %s\n", dv.d.Serial, u)
			}
		}
	}
	enrollments := count(`SELECT COUNT(*) FROM enrollments`)
	approved := count(`SELECT COUNT(*) FROM enrollments WHERE decided_at IS NOT NULL AND state IN ('approved', 'superseded')`)
	inv = append(inv,
		invariant{"no token claimed by two devices", enrollments,
			replays + count(`SELECT COUNT(*) FROM reservations r JOIN enrollments e ON e.id = r.id WHERE r.claimed_udid <> e.udid`),
			fmt.Sprintf("%d replays on a second device refused", s.o.devices/10)},
		invariant{"no SCEP challenge used twice", count(`SELECT COUNT(DISTINCT reservation_id) FROM certificates`),
			count(`SELECT COUNT(*) FROM (SELECT reservation_id FROM certificates GROUP BY reservation_id HAVING COUNT(DISTINCT key_sha256) > 1) x`), ""},
		invariant{"every command of an approved device acknowledged", count(`SELECT COUNT(*) FROM commands c JOIN enrollments e ON e.id = c.enrollment_id WHERE e.state = 'approved'`),
			count(`SELECT COUNT(*) FROM commands c JOIN enrollments e ON e.id = c.enrollment_id WHERE e.state = 'approved' AND (c.status <> 'acknowledged' OR c.result_at IS NULL)`), ""},
		invariant{"no command lost or handed out again after its answer", delivered, lost + duplicates,
			fmt.Sprintf("%d lost, %d duplicated", lost, duplicates)},
		invariant{"every decision has its audit row", approved,
			count(`SELECT COUNT(*) FROM enrollments e WHERE e.decided_at IS NOT NULL AND NOT EXISTS
				(SELECT 1 FROM audit_log a WHERE a.target_id = e.id AND a.action IN ('enrollment.approve', 'enrollment.deny'))`), ""},
		invariant{"no enrollment in an impossible state", enrollments,
			count(`SELECT COUNT(*) FROM enrollments e WHERE e.state NOT IN ('pending', 'approved', 'denied', 'superseded', 'unenrolled')
				OR (e.state = 'approved' AND (e.decided_at IS NULL OR NOT EXISTS (SELECT 1 FROM commands c WHERE c.enrollment_id = e.id AND c.pre_approval = 0)))
				OR (e.state = 'pending' AND (e.decided_at IS NOT NULL OR e.trust_compliant <> 0))
				OR (e.state <> 'approved' AND e.trust_compliant <> 0)`), ""},
	)
	// Pushes: every approved device's token reached APNs.
	var toks []struct {
		ID    string `db:"id"`
		Token string `db:"push_token"`
	}
	_ = db.Select(&toks, `SELECT id, push_token FROM enrollments WHERE decided_at IS NOT NULL AND state IN ('approved', 'superseded') AND push_token <> ''`)
	missing := 0
	got := s.apns.Pushes()
	for _, t := range toks {
		if len(got[t.Token]) == 0 {
			missing++
		}
	}
	pushes := 0
	for _, at := range got {
		pushes += len(at)
	}
	// From approval to the first push APNs got after it.
	var delays []time.Duration
	for _, dv := range devices {
		if dv == nil || dv.approvedAt.IsZero() {
			continue
		}
		for _, at := range got[hex.EncodeToString(dv.firstPushToken)] {
			if at.After(dv.approvedAt) {
				delays = append(delays, at.Sub(dv.approvedAt))
				break
			}
		}
	}
	slices.Sort(delays)
	pct := func(p float64) time.Duration {
		if len(delays) == 0 {
			return 0
		}
		return delays[min(len(delays)-1, int(p*float64(len(delays))))].Round(time.Millisecond)
	}
	inv = append(inv, invariant{"every approval pushed", len(toks), missing, fmt.Sprintf("%d pushes received by APNs; approval to push p50 %s, p99 %s, max %s",
		pushes, pct(0.5), pct(0.99), pct(1))})
	// Webhook: every enrollment that waited was announced.
	var ids []string
	_ = db.Select(&ids, `SELECT id FROM enrollments`)
	unannounced, announcements := 0, 0
	s.hookMu.Lock()
	for _, id := range ids {
		if s.hooks[id] == 0 {
			unannounced++
		}
	}
	for _, n := range s.hooks {
		announcements += n
	}
	s.hookMu.Unlock()
	inv = append(inv, invariant{"every pending enrollment announced (webhook)", len(ids), unannounced,
		fmt.Sprintf("%d announcements received", announcements)})
	if burst != nil {
		inv = append(inv, burst.invariant())
	}
	inv = append(inv, s.depReport(context.Background(), db))
	inv = append(inv, invariant{"one console session holds on every replica", int(s.console.requests.Load()), int(s.console.refused.Load()),
		fmt.Sprintf("%d approvals made in the console", count(`SELECT COUNT(*) FROM enrollments WHERE decision_note = 'soak, from the console'`))})

	tw := tabwriter.NewWriter(s.o.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "soak: %d replicas, %d devices, %d killed with SIGKILL in %s (%d devices failed a step)\n",
		s.o.replicas, s.o.devices, s.kills.Load(), took.Round(time.Second), failed)
	fmt.Fprintf(tw, "%d requests through the balancer; %d attempts failed with a dying replica and went to another\n\n",
		s.requests.Load(), s.failover.Load())
	fmt.Fprintln(tw, "INVARIANT\tCHECKED\tVIOLATIONS\tNOTE")
	violations := failed
	for _, i := range inv {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", i.name, i.checked, i.violations, i.note)
		if i.violations != 0 {
			violations++
		}
	}
	tw.Flush()
	for _, dv := range devices {
		if dv != nil && dv.err != nil {
			fmt.Fprintln(s.o.out, "device", dv.d.Serial, dv.err)
		}
	}
	if violations > 0 {
		return fmt.Errorf("%d invariants broken or devices failed", violations)
	}
	return nil
}
