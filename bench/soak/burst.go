package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/vestibule-mdm/vestibule/bench/internal/apiclient"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/seed"
	"github.com/vestibule-mdm/vestibule/server"
	"github.com/vestibule-mdm/vestibule/store"
)

// burstResult is what a fleet-wide command did: every device must get it,
// and the replicas must stay responsive while the woken fleet checks in.
type burstResult struct {
	devices, served int
	took            time.Duration
	// queued is how long the fleet-wide requests took; readyz holds the
	// probes after them, readyzQueueing those while they ran.
	queued                 time.Duration
	readyz, readyzQueueing []time.Duration
	readyzFailed           int
}

func (b *burstResult) invariant() invariant {
	return invariant{"a command to the whole fleet reaches every device", b.devices, b.devices - b.served + b.readyzFailed,
		fmt.Sprintf("all served in %s (queued in %s); /readyz after queueing %s, while queueing %s, %d failed",
			b.took.Round(100*time.Millisecond), b.queued.Round(100*time.Millisecond), percentiles(b.readyz), percentiles(b.readyzQueueing), b.readyzFailed)}
}

// percentiles says p50, p99 and max of probe times.
func percentiles(d []time.Duration) string {
	if len(d) == 0 {
		return "no probes"
	}
	slices.Sort(d)
	pct := func(p float64) time.Duration {
		return d[min(len(d)-1, int(p*float64(len(d))))].Round(100 * time.Microsecond)
	}
	return fmt.Sprintf("p50 %s, p99 %s, max %s over %d probes", pct(0.5), pct(0.99), pct(1), len(d))
}

// burst queues a DeviceInformation command for every device at once, as an
// admin asking the whole fleet would. Pushes wake the devices (the APNs
// recorder hands each push to its device), which check in and answer.
// /readyz is probed on every replica all along.
func (s *soak) burst(api apiclient.Client, devices []*device) (*burstResult, error) {
	var live []*device
	byToken := map[string]*device{}
	for _, dv := range devices {
		if dv != nil && dv.err == nil {
			live = append(live, dv)
			byToken[hex.EncodeToString(dv.d.PushToken)] = dv
		}
	}
	s.progress("burst: a command for all %d devices at once", len(live))
	res := &burstResult{devices: len(live)}
	want := make(map[*device]string, len(live))
	var wantMu sync.Mutex
	served := make(map[*device]bool, len(live))
	var servedCount atomic.Int64
	// One session at a time per device, as on a real one: a push while a
	// session runs asks for one more session after it.
	type state struct {
		mu      sync.Mutex
		running bool
		again   bool
	}
	states := map[*device]*state{}
	for _, dv := range live {
		states[dv] = &state{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var sessions sync.WaitGroup
	var session func(dv *device)
	session = func(dv *device) {
		defer sessions.Done()
		st := states[dv]
		for {
			_ = s.serve(ctx, dv)
			wantMu.Lock()
			uuid := want[dv]
			if uuid != "" && !served[dv] && slices.Contains(dv.received, uuid) {
				served[dv] = true
				servedCount.Add(1)
			}
			wantMu.Unlock()
			st.mu.Lock()
			if !st.again {
				st.running = false
				st.mu.Unlock()
				return
			}
			st.again = false
			st.mu.Unlock()
		}
	}
	s.pushMu.Lock()
	s.wake = func(token string) {
		dv := byToken[token]
		if dv == nil {
			return
		}
		st := states[dv]
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.running {
			st.again = true
			return
		}
		st.running = true
		sessions.Add(1)
		go session(dv)
	}
	s.pushMu.Unlock()
	defer func() { s.pushMu.Lock(); s.wake = nil; s.pushMu.Unlock() }()

	// /readyz on every replica, round robin, every 10 ms.
	probeDone := make(chan struct{})
	var queueing atomic.Bool
	queueing.Store(true)
	var probes sync.WaitGroup
	probes.Add(1)
	go func() {
		defer probes.Done()
		c := &http.Client{Timeout: 5 * time.Second}
		for i := 0; ; i++ {
			select {
			case <-probeDone:
				return
			case <-time.After(10 * time.Millisecond):
			}
			r := s.replicas[i%len(s.replicas)]
			start := time.Now()
			resp, err := c.Get("http://" + r.addr + "/readyz")
			d := time.Since(start)
			if err == nil {
				resp.Body.Close()
			}
			if err != nil || resp.StatusCode != http.StatusOK {
				res.readyzFailed++
				continue
			}
			if queueing.Load() {
				res.readyzQueueing = append(res.readyzQueueing, d)
			} else {
				res.readyz = append(res.readyz, d)
			}
		}
	}()

	start := time.Now()
	// The fleet-wide command API, 500 devices a request, one request after
	// another as an admin's script sends them: push.rate paces the wake.
	for _, dv := range live {
		if dv.reenrolled != "" {
			// The device speaks with its new enrollment.
			dv.id = dv.reenrolled
		}
	}
	var queueErr error
	for chunk := range slices.Chunk(live, enrollment.MaxFleetCommand) {
		if queueErr = s.queueFleet(api, chunk, func(dv *device, uuid string) {
			wantMu.Lock()
			want[dv] = uuid
			wantMu.Unlock()
		}); queueErr != nil {
			break
		}
	}
	queueing.Store(false)
	res.queued = time.Since(start)
	if queueErr != nil {
		close(probeDone)
		probes.Wait()
		return nil, fmt.Errorf("burst: %w", queueErr)
	}
	for ctx.Err() == nil && int(servedCount.Load()) < len(live) {
		time.Sleep(20 * time.Millisecond)
		// A session may have got the command before its UUID came back
		// from the API: look again at every device between sessions.
		for _, dv := range live {
			st := states[dv]
			st.mu.Lock()
			if !st.running {
				wantMu.Lock()
				if uuid := want[dv]; uuid != "" && !served[dv] && slices.Contains(dv.received, uuid) {
					served[dv] = true
					servedCount.Add(1)
				}
				wantMu.Unlock()
			}
			st.mu.Unlock()
		}
	}
	res.took = time.Since(start)
	close(probeDone)
	probes.Wait()
	cancel()
	sessions.Wait()
	res.served = int(servedCount.Load())
	s.progress("burst: %d of %d devices served in %s", res.served, len(live), res.took.Round(100*time.Millisecond))
	return res, nil
}

// queueFleet queues DeviceInformation for the devices in one fleet-wide
// request and tells each device's command UUID.
func (s *soak) queueFleet(api apiclient.Client, devices []*device, queued func(dv *device, uuid string)) error {
	ids := make([]string, len(devices))
	for i, dv := range devices {
		ids[i] = dv.id
	}
	body, _ := json.Marshal(map[string]any{"request_type": "DeviceInformation", "devices": ids})
	b, err := api.Do(http.MethodPost, "/api/v1/commands", body)
	if err != nil {
		return err
	}
	var r struct {
		Items []struct {
			UUID string `json:"command_uuid"`
		} `json:"items"`
	}
	if json.Unmarshal(b, &r) != nil || len(r.Items) != len(devices) {
		return fmt.Errorf("queue: %.200s", b)
	}
	for i, dv := range devices {
		queued(dv, r.Items[i].UUID)
	}
	return nil
}

// seededBurst is the burst alone, on s.o.seeded devices seeded straight
// into the database (internal/seed) instead of enrolled through the
// ceremony: fleets of 10,000 and more, without an hour of ceremonies.
func (s *soak) seededBurst(api apiclient.Client, client *http.Client, public string) error {
	ctx := context.Background()
	dataDir := filepath.Join(s.dir, "data")
	ca, err := server.LoadKeyPair(filepath.Join(dataDir, "ca.pem"), filepath.Join(dataDir, "ca.key"))
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, s.dsn, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	keys, err := seed.Keys(8)
	if err != nil {
		return err
	}
	s.progress("seeding %d approved devices", s.o.seeded)
	seeded, err := seed.Run(ctx, st, seed.Options{Devices: s.o.seeded, Users: 100, Keys: keys, CA: ca.Certificate(), CAKey: ca.Signer(),
		Prefix: "SOAK", Workers: 8})
	if err != nil {
		return err
	}
	devices := make([]*device, len(seeded))
	for i, d := range seeded {
		sim, err := d.Simulator(client, keys, public)
		if err != nil {
			return err
		}
		if sim.PushToken, err = hex.DecodeString(d.PushToken); err != nil {
			return err
		}
		devices[i] = &device{d: sim, id: d.ID, approved: true}
	}
	res, err := s.burst(api, devices)
	if err != nil {
		return err
	}
	inv := res.invariant()
	tw := tabwriter.NewWriter(s.o.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "soak: %d replicas, %d seeded devices, push.rate %d per replica\n\n", s.o.replicas, s.o.seeded, s.o.pushRate)
	fmt.Fprintln(tw, "INVARIANT\tCHECKED\tVIOLATIONS\tNOTE")
	fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", inv.name, inv.checked, inv.violations, inv.note)
	tw.Flush()
	if inv.violations > 0 {
		return fmt.Errorf("%d devices not served or probes failed", inv.violations)
	}
	return nil
}
