// Command load drives a running Vestibule server with simulated devices
// through the whole enrollment ceremony, then a steady state of idle
// check-ins, and reports throughput, latency percentiles, errors and the
// server's CPU and memory per phase. It talks to loopback only, and every
// loop is bounded in count and time.
package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/micromdm/plist"

	"github.com/vestibule-mdm/vestibule/bench/internal/apiclient"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
	"github.com/vestibule-mdm/vestibule/internal/seed"
)

type options struct {
	url         string
	token       string
	user        string
	devices     int
	concurrency int
	duration    time.Duration
	pid         int
	jsonOut     string
	maxRequests int
	seeded      string
	signAhead   bool
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", "http://127.0.0.1:8080", "server URL (loopback only)")
	flag.StringVar(&o.token, "token", os.Getenv("VESTIBULE_TOKEN"), "admin API token (or VESTIBULE_TOKEN)")
	flag.StringVar(&o.user, "user", "load@example.com", "a known user the devices enroll for")
	flag.IntVar(&o.devices, "devices", 100, "simulated devices")
	flag.IntVar(&o.concurrency, "c", 8, "concurrent devices")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "steady-state idle check-ins duration")
	flag.IntVar(&o.pid, "pid", 0, "server process ID for CPU and RSS (default: found by the listening port)")
	flag.StringVar(&o.jsonOut, "json", "", "also write the results as JSON to this file")
	flag.IntVar(&o.maxRequests, "max-requests", 1_000_000, "upper bound of steady-state requests")
	flag.StringVar(&o.seeded, "seeded", "", "skip the ceremony: check in as the approved devices of this bench/seed file")
	flag.BoolVar(&o.signAhead, "sign-ahead", false, "devices sign Authenticate and TokenUpdate before those phases, not while they run on the server's cores")
	flag.Parse()
	if err := run(context.Background(), o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// phase accumulates one phase's latencies and errors.
type phase struct {
	Name      string         `json:"name"`
	Requests  int            `json:"requests"`
	Errors    map[string]int `json:"errors"`
	Seconds   float64        `json:"seconds"`
	PerSecond float64        `json:"per_second"`
	P50ms     float64        `json:"p50_ms"`
	P95ms     float64        `json:"p95_ms"`
	P99ms     float64        `json:"p99_ms"`
	ServerCPU float64        `json:"server_cpu_ms_per_request"`
	ServerRSS int64          `json:"server_rss_mb"`
	// NotIdle counts check-ins of the idle steady state that were handed
	// a command (a device-trust profile queued after the ceremony, say):
	// the device answers it, and those round trips are not idle ones.
	NotIdle    int `json:"not_idle"`
	latencies  []time.Duration
	mu         sync.Mutex
	cpuAtStart float64
	start      time.Time
}

func newPhase(name string, pid int) *phase {
	p := &phase{Name: name, Errors: map[string]int{}, start: time.Now()}
	p.cpuAtStart, _ = procCPU(pid)
	return p
}

func (p *phase) record(d time.Duration, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Requests++
	if err != nil {
		p.Errors[errorKind(err)]++
		return
	}
	p.latencies = append(p.latencies, d)
}

func (p *phase) finish(pid int) {
	p.Seconds = time.Since(p.start).Seconds()
	sort.Slice(p.latencies, func(i, j int) bool { return p.latencies[i] < p.latencies[j] })
	pct := func(q float64) float64 {
		if len(p.latencies) == 0 {
			return 0
		}
		return float64(p.latencies[int(q*float64(len(p.latencies)-1))]) / 1e6
	}
	p.P50ms, p.P95ms, p.P99ms = pct(.50), pct(.95), pct(.99)
	if p.Seconds > 0 {
		p.PerSecond = float64(p.Requests) / p.Seconds
	}
	if cpu, err := procCPU(pid); err == nil && p.Requests > 0 {
		p.ServerCPU = (cpu - p.cpuAtStart) * 1000 / float64(p.Requests)
	}
	p.ServerRSS, _ = procRSSMB(pid)
}

func errorKind(err error) string {
	var se *devicesim.SCEPError
	switch {
	case errors.As(err, &se):
		return "scep " + se.FailInfo
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	s := err.Error()
	if i := strings.Index(s, "HTTP "); i >= 0 && len(s) >= i+8 {
		return s[i : i+8]
	}
	if len(s) > 40 {
		s = s[:40]
	}
	return s
}

// timed runs fn and records it.
func timed(p *phase, fn func() error) error {
	start := time.Now()
	err := fn()
	p.record(time.Since(start), err)
	return err
}

func run(ctx context.Context, o options, out io.Writer) error {
	u, err := url.Parse(o.url)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(u.Hostname()); (ip == nil && u.Hostname() != "localhost") || (ip != nil && !ip.IsLoopback()) {
		return fmt.Errorf("%s is not a loopback address: the load tool only targets this machine", u.Host)
	}
	if o.concurrency < 1 || o.concurrency > 1024 {
		return errors.New("-c must be 1..1024")
	}
	if o.pid == 0 {
		o.pid = findPID(u.Port())
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: o.concurrency * 2}}
	var devices []*devicesim.Device
	var phases []*phase
	if o.seeded != "" {
		devices, err = seededDevices(o, client)
	} else {
		devices, phases, err = ceremony(ctx, &o, client, out)
	}
	if err != nil {
		return err
	}
	o.devices = len(devices)
	baseline, err := measureBaseline(o, client)
	if err != nil {
		return err
	}
	rsaOps := rsaSignsPerSecond(time.Second)

	// Steady state: idle check-ins from every device, round robin. Devices
	// sign an Idle report once and resend it, as the server's cost, not the
	// simulator's RSA signing on the same cores, is what is measured.
	for _, d := range devices {
		if d != nil {
			d.CacheSignatures = true
		}
	}
	p := newPhase("Connect idle (steady)", o.pid)
	deadline := time.Now().Add(o.duration)
	var next int64
	var mu sync.Mutex
	parallel(o.concurrency, o.concurrency, func(int) {
		for time.Now().Before(deadline) {
			mu.Lock()
			if next >= int64(o.maxRequests) {
				mu.Unlock()
				return
			}
			i := int(next % int64(o.devices))
			next++
			mu.Unlock()
			if devices[i] == nil {
				continue
			}
			_ = timed(p, func() error {
				code, cmd, err := devices[i].Connect(ctx, "Idle", "")
				for n := 0; err == nil && code == http.StatusOK && cmd != nil && n < 5; n++ {
					p.mu.Lock()
					p.NotIdle++
					p.mu.Unlock()
					code, cmd, err = devices[i].Answer(ctx, cmd)
				}
				return status(code, err)
			})
		}
	})
	p.finish(o.pid)
	phases = append(phases, p)

	report(out, o, phases, baseline, rsaOps)
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(map[string]any{"devices": o.devices, "concurrency": o.concurrency, "phases": phases,
			"baseline_per_second": baseline, "rsa2048_signs_per_second": rsaOps}, "", "  ")
		if err := os.WriteFile(o.jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	for _, p := range phases {
		if len(p.Errors) > 0 {
			return fmt.Errorf("phase %q had errors", p.Name)
		}
	}
	return nil
}

// ceremony takes o.devices new devices through the whole enrollment
// ceremony, a phase at a time, and returns those that made it.
func ceremony(ctx context.Context, o *options, client *http.Client, out io.Writer) ([]*devicesim.Device, []*phase, error) {
	if o.token == "" {
		return nil, nil, errors.New("an admin API token is required: -token or VESTIBULE_TOKEN")
	}
	if o.devices < 1 || o.devices > 100_000 {
		return nil, nil, errors.New("-devices must be 1..100000")
	}

	fmt.Fprintf(out, "generating %d RSA-2048 device keys (not timed)...\n", o.devices)
	keys, err := generateKeys(o.devices, o.concurrency)
	if err != nil {
		return nil, nil, err
	}
	api := apiclient.Client{Base: o.url, Token: o.token, HTTP: client}
	devices := make([]*devicesim.Device, o.devices)
	ids := make([]string, o.devices)
	for i := range devices {
		devices[i] = devicesim.New(client, fmt.Sprintf("LOAD%08d", i))
		devices[i].Key = keys[i]
	}
	var phases []*phase
	each := func(name string, fn func(i int) error) *phase {
		p := newPhase(name, o.pid)
		parallel(o.devices, o.concurrency, func(i int) {
			if devices[i] == nil {
				return
			}
			if err := timed(p, func() error { return fn(i) }); err != nil {
				devices[i] = nil // a failed device sits out the later phases
			}
		})
		p.finish(o.pid)
		phases = append(phases, p)
		return p
	}
	each("reserve (API)", func(i int) (err error) { ids[i], err = api.Reserve(o.user); return err })
	each("profile download (API)", func(i int) error {
		b, err := api.Get("/api/v1/reservations/" + ids[i] + "/profile")
		if err != nil {
			return err
		}
		return devices[i].Install(b)
	})
	each("SCEP issuance", func(i int) error { return devices[i].Enroll(ctx) })
	if o.signAhead {
		// A real device signs on its own processor. Off by default so
		// that figures compare with the earlier ones, measured while the
		// generator's signing kept the second core busy.
		fmt.Fprintln(out, "signing Authenticate and TokenUpdate ahead (not timed)...")
		parallel(o.devices, o.concurrency, func(i int) {
			if devices[i] != nil && devices[i].SignCheckinsAhead() != nil {
				devices[i] = nil
			}
		})
	}
	each("Authenticate", func(i int) error { return status(devices[i].Authenticate(ctx)) })
	each("TokenUpdate", func(i int) error { return status(devices[i].TokenUpdate(ctx)) })
	if o.signAhead {
		for _, d := range devices {
			if d != nil {
				d.CacheSignatures = false // the later phases sign as before
			}
		}
	}
	each("Connect (pending)", func(i int) error {
		code, cmd, err := devices[i].Connect(ctx, "Idle", "")
		if err == nil && cmd != nil && cmd.RequestType == "DeviceInformation" {
			// The attestation question, the one command a pending device
			// may get; this simulated Mac has no Secure Enclave to answer
			// it with, as a Mac without attestation would.
			code, cmd, err = devices[i].Answer(ctx, cmd)
		}
		if err == nil && cmd != nil {
			return fmt.Errorf("a pending device got a %s command", cmd.RequestType)
		}
		return status(code, err)
	})
	each("approve (API)", func(i int) error { return api.Approve(ids[i], "load test") })
	each("Connect until Idle", func(i int) error {
		_, err := devices[i].DrainCommands(ctx, 20)
		return err
	})

	return devices, phases, nil
}

// seededDevices are the approved devices of a bench/seed file, already
// enrolled in the server's database.
func seededDevices(o options, client *http.Client) ([]*devicesim.Device, error) {
	keys, seeded, err := seed.ReadFile(o.seeded)
	if err != nil {
		return nil, err
	}
	var out []*devicesim.Device
	for _, d := range seeded {
		if d.Pending {
			continue
		}
		sim, err := d.Simulator(client, keys, o.url)
		if err != nil {
			return nil, err
		}
		out = append(out, sim)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no approved device", o.seeded)
	}
	return out, nil
}

func status(code int, err error) error {
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("HTTP %d", code)
	}
	return nil
}

func parallel(n, workers int, fn func(i int)) {
	var wg sync.WaitGroup
	work := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				fn(i)
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
}

func generateKeys(n, workers int) ([]*rsa.PrivateKey, error) {
	keys := make([]*rsa.PrivateKey, n)
	var mu sync.Mutex
	var firstErr error
	parallel(n, workers, func(i int) {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		mu.Lock()
		defer mu.Unlock()
		if err != nil && firstErr == nil {
			firstErr = err
		}
		keys[i] = k
	})
	return keys, firstErr
}

// measureBaseline is the framework ceiling: the standard library reading
// the same signed plist body on a bare handler, over loopback, with the
// same concurrency, for a second.
func measureBaseline(o options, client *http.Client) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var report struct{ UDID, Status string }
		_ = plist.Unmarshal(b, &report)
		w.WriteHeader(http.StatusOK)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	body, _ := plist.Marshal(map[string]string{"UDID": "BASELINE", "Status": "Idle"})
	sig := strings.Repeat("A", 2400) // the size of a real Mdm-Signature
	var count int64
	var mu sync.Mutex
	deadline := time.Now().Add(time.Second)
	parallel(o.concurrency, o.concurrency, func(int) {
		for time.Now().Before(deadline) {
			req, _ := http.NewRequest(http.MethodPut, "http://"+ln.Addr().String()+"/mdm/connect", bytes.NewReader(body))
			req.Header.Set("Mdm-Signature", sig)
			resp, err := client.Do(req)
			if err != nil {
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mu.Lock()
			count++
			mu.Unlock()
		}
	})
	return float64(count), nil
}

func rsaSignsPerSecond(d time.Duration) float64 {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	digest := make([]byte, 32)
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		_, _ = rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest)
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}

func report(out io.Writer, o options, phases []*phase, baseline, rsaOps float64) {
	fmt.Fprintf(out, "\n%d devices, concurrency %d, server pid %d\n\n", o.devices, o.concurrency, o.pid)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\trequests\terrors\treq/s\tp50 ms\tp95 ms\tp99 ms\tserver CPU ms/req\tserver RSS MB\t")
	for _, p := range phases {
		errs := 0
		for _, n := range p.Errors {
			errs += n
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.3f\t%d\t\n", p.Name, p.Requests, errs, p.PerSecond, p.P50ms, p.P95ms, p.P99ms, p.ServerCPU, p.ServerRSS)
	}
	tw.Flush()
	for _, p := range phases {
		for kind, n := range p.Errors {
			fmt.Fprintf(out, "  %s: %d × %s\n", p.Name, n, kind)
		}
	}
	steady := phases[len(phases)-1]
	if steady.NotIdle > 0 {
		fmt.Fprintf(out, "  %s: %d check-ins were handed a command and answered it (not idle)\n", steady.Name, steady.NotIdle)
	}
	fmt.Fprintf(out, "\nbaseline (stdlib bare handler, same body, same concurrency): %.0f req/s\n", baseline)
	if baseline > 0 {
		fmt.Fprintf(out, "idle check-ins: %.0f req/s = %.2f × baseline\n", steady.PerSecond, steady.PerSecond/baseline)
	}
	for _, p := range phases {
		if p.Name == "SCEP issuance" && rsaOps > 0 {
			ceiling := rsaOps / 3 // decrypt the envelope, sign the certificate, sign the reply
			fmt.Fprintf(out, "RSA-2048 signs/s on this machine: %.0f; SCEP ceiling %.0f/s at 3 private ops each; measured %.0f/s = %.2f × ceiling (client on the same cores)\n",
				rsaOps, ceiling, p.PerSecond, p.PerSecond/ceiling)
		}
	}
}
