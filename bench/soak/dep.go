package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/vestibule-mdm/vestibule/depsync/deptest"
)

// depWatch stands between the replicas and the DEP service. It slows each
// call down so that kills land in the middle of syncs, and it records every
// call by its DEP session so that the report can tell whether two live
// replicas ever synced at once.
type depWatch struct {
	dep   *deptest.Server
	proxy *httptest.Server
	delay time.Duration

	mu       sync.Mutex
	serials  []string
	calls    []depCall
	inFlight map[int]depCall
	nextCall int
}

type depCall struct {
	session    string
	start, end time.Time
	cut        bool // the replica went away before the answer
}

func (s *soak) startDEP() (func(), error) {
	w := &depWatch{dep: deptest.New(), delay: 150 * time.Millisecond, inFlight: map[int]depCall{}}
	w.grow(40)
	target, err := url.Parse(w.dep.URL)
	if err != nil {
		return nil, err
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0) // a killed replica's call ends in a canceled context: expected
	w.proxy = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		c := depCall{session: r.Header.Get("X-ADM-Auth-Session"), start: time.Now()}
		if c.session == "" {
			c.session = "new session " + r.RemoteAddr // GET /session: the start of a sync
		}
		w.mu.Lock()
		id := w.nextCall
		w.nextCall++
		w.inFlight[id] = c
		w.mu.Unlock()
		select {
		case <-time.After(w.delay):
			rp.ServeHTTP(rw, r)
		case <-r.Context().Done():
		}
		c.end, c.cut = time.Now(), r.Context().Err() != nil
		w.mu.Lock()
		delete(w.inFlight, id)
		w.calls = append(w.calls, c)
		w.mu.Unlock()
	}))
	s.dep = w
	s.env = append(s.env, "VESTIBULE_DEP_ENABLED=true", "VESTIBULE_DEP_SERVER_URL="+w.proxy.URL, "VESTIBULE_DEP_SYNC_INTERVAL=1m")
	return func() { w.proxy.Close(); w.dep.Close() }, nil
}

// grow adds n devices to Apple's inventory.
func (w *depWatch) grow(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for range n {
		serial := fmt.Sprintf("DEPSOAK%05d", len(w.serials))
		w.serials = append(w.serials, serial)
		w.dep.Add(deptest.Device{Serial: serial, Model: "MacBook Pro", Description: "MBP 14", Family: "Mac", OS: "OSX"})
	}
}

// uploadDEPToken does what an admin does: make the key pair, give its
// certificate to Apple, upload the token file Apple gives back.
func (s *soak) uploadDEPToken() error {
	certFile := filepath.Join(s.dir, "dep.pem")
	if out, err := s.command("dep", "keypair", "-o", certFile).CombinedOutput(); err != nil {
		return fmt.Errorf("dep keypair: %v %s", err, out)
	}
	cert, err := readCertificate(certFile)
	if err != nil {
		return err
	}
	token, err := s.dep.dep.ServerTokenFile(cert, time.Now().Add(24*time.Hour))
	if err != nil {
		return err
	}
	tokenFile := filepath.Join(s.dir, "dep-token.p7m")
	if err := os.WriteFile(tokenFile, token, 0o600); err != nil {
		return err
	}
	if out, err := s.command("dep", "token", "upload", tokenFile).CombinedOutput(); err != nil {
		return fmt.Errorf("dep token upload: %v %s", err, out)
	}
	return nil
}

// depReport waits until the inventory Apple holds is in the database, then
// judges the syncs: never two live replicas at once, and syncs cut by a
// kill followed by syncs of a survivor.
func (s *soak) depReport(ctx context.Context, db *sqlx.DB) invariant {
	w := s.dep
	w.mu.Lock()
	want := len(w.serials)
	w.mu.Unlock()
	have := -1
	waitStart := time.Now()
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(time.Second) {
		if err := db.Get(&have, `SELECT COUNT(*) FROM dep_devices WHERE serial LIKE 'DEPSOAK%'`); err != nil {
			break
		}
		if have == want {
			break
		}
	}
	s.progress("DEP inventory in the database after waiting %s", time.Since(waitStart).Round(time.Second))
	w.mu.Lock()
	defer w.mu.Unlock()
	calls := append([]depCall(nil), w.calls...)
	overlaps := 0
	sessions := map[string]bool{}
	cutSessions := map[string]time.Time{}
	for i, a := range calls {
		sessions[a.session] = true
		if a.cut {
			cutSessions[a.session] = a.end
			continue
		}
		for _, b := range calls[i+1:] {
			if !b.cut && a.session != b.session && a.start.Before(b.end) && b.start.Before(a.end) &&
				!isNewSession(a.session) && !isNewSession(b.session) {
				overlaps++
			}
		}
	}
	handovers := 0
	for session, at := range cutSessions {
		for _, c := range calls {
			if c.session != session && !c.cut && c.start.After(at) {
				handovers++
				break
			}
		}
	}
	syncs := 0
	for session := range sessions {
		if isNewSession(session) {
			syncs++
		}
	}
	violations := overlaps + len(cutSessions) - handovers
	if have != want {
		violations++
	}
	return invariant{"DEP sync: one replica at a time, taken over after a kill", syncs, violations,
		fmt.Sprintf("%d/%d devices synced in %d DEP calls; %d syncs cut by a kill, %d taken over; %d overlaps",
			have, want, len(calls), len(cutSessions), handovers, overlaps)}
}

func isNewSession(s string) bool { return len(s) > 12 && s[:12] == "new session " }
