package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// ssfReceiver is an SSF receiver as an identity provider runs one: it
// verifies every SET with a maintained JOSE library (lestrrat-go/jwx)
// against the transmitter's published JWKS, fetched over HTTP, checks the
// issuer, audience and typ, and keeps each jti once.
type ssfReceiver struct {
	t        testing.TB
	issuer   string
	audience string
	secret   string // the Authorization header pushes must carry
	srv      *httptest.Server

	mu     sync.Mutex
	events []receivedSET
	seen   map[string]bool
	// fail, when set, makes pushes fail with this status (a receiver down).
	fail int
	// posts counts accepted pushes, duplicates included.
	posts int
}

// receivedSET is what a receiver learned from one verified SET.
type receivedSET struct {
	JTI      string
	Type     string
	Device   string
	User     string
	Previous string
	Current  string
	Reason   string
	State    string // verification events
}

func newSSFReceiver(t testing.TB, issuer, audience string) *ssfReceiver {
	r := &ssfReceiver{t: t, issuer: issuer, audience: audience, secret: "Bearer receiver-" + audience, seen: map[string]bool{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.push))
	t.Cleanup(r.srv.Close)
	return r
}

// push is the RFC 8935 endpoint.
func (r *ssfReceiver) push(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	fail := r.fail
	r.mu.Unlock()
	if fail != 0 {
		w.WriteHeader(fail)
		return
	}
	if req.Header.Get("Authorization") != r.secret {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if req.Header.Get("Content-Type") != "application/secevent+jwt" {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"err":"invalid_request","description":"Content-Type"}`)
		return
	}
	b, _ := io.ReadAll(io.LimitReader(req.Body, 64<<10))
	r.mu.Lock()
	r.posts++
	r.mu.Unlock()
	if _, err := r.accept(string(b)); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"err": "invalid_key", "description": err.Error()})
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// accept verifies a SET and records it once.
func (r *ssfReceiver) accept(token string) (receivedSET, error) {
	ctx := context.Background()
	set, err := jwk.Fetch(ctx, r.issuer+"/ssf/jwks.json")
	if err != nil {
		return receivedSET{}, fmt.Errorf("fetch JWKS: %w", err)
	}
	msg, err := jws.Parse([]byte(token))
	if err != nil {
		return receivedSET{}, err
	}
	if typ, _ := msg.Signatures()[0].ProtectedHeaders().Type(); typ != "secevent+jwt" {
		return receivedSET{}, fmt.Errorf("typ %q", typ)
	}
	tok, err := jwt.Parse([]byte(token), jwt.WithKeySet(set), jwt.WithIssuer(r.issuer), jwt.WithAudience(r.audience), jwt.WithValidate(true))
	if err != nil {
		return receivedSET{}, fmt.Errorf("verify SET: %w", err)
	}
	var jti string
	_ = tok.Get("jti", &jti)
	var events map[string]any
	if err := tok.Get("events", &events); err != nil || len(events) != 1 {
		return receivedSET{}, fmt.Errorf("events claim must hold one event: %v", err)
	}
	var sub map[string]any
	_ = tok.Get("sub_id", &sub)
	rs := receivedSET{JTI: jti}
	for typ, raw := range events {
		ev, _ := raw.(map[string]any)
		rs.Type = typ
		rs.Previous, _ = ev["previous_status"].(string)
		rs.Current, _ = ev["current_status"].(string)
		rs.State, _ = ev["state"].(string)
		if ra, ok := ev["reason_admin"].(map[string]any); ok {
			rs.Reason, _ = ra["en"].(string)
		}
	}
	if dev, ok := sub["device"].(map[string]any); ok {
		rs.Device, _ = dev["sub"].(string)
		if iss, _ := dev["iss"].(string); iss != r.issuer {
			return receivedSET{}, fmt.Errorf("device subject issuer %q", iss)
		}
	}
	if u, ok := sub["user"].(map[string]any); ok {
		rs.User, _ = u["email"].(string)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.seen[jti] {
		r.seen[jti] = true
		r.events = append(r.events, rs)
	}
	return rs, nil
}

func (r *ssfReceiver) received() []receivedSET {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedSET(nil), r.events...)
}

func (r *ssfReceiver) setFail(status int) {
	r.mu.Lock()
	r.fail = status
	r.mu.Unlock()
}

// poll asks a poll stream (RFC 8936) for its SETs, acknowledging ack, and
// verifies what it gets.
func (r *ssfReceiver) poll(url, token string, ack []string) ([]receivedSET, []string) {
	r.t.Helper()
	body, _ := json.Marshal(map[string]any{"maxEvents": 50, "returnImmediately": true, "ack": ack})
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Sets          map[string]string `json:"sets"`
		MoreAvailable bool              `json:"moreAvailable"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&out) != nil {
		r.t.Fatalf("poll: HTTP %d", resp.StatusCode)
	}
	var got []receivedSET
	var jtis []string
	for jti, set := range out.Sets {
		rs, err := r.accept(set)
		if err != nil {
			r.t.Fatalf("polled SET %s: %v", jti, err)
		}
		if rs.JTI != jti {
			r.t.Fatalf("polled SET keyed %s carries jti %s", jti, rs.JTI)
		}
		got = append(got, rs)
		jtis = append(jtis, jti)
	}
	return got, jtis
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// drain polls a stream until it is empty, acknowledging everything, and
// returns the SETs in the order they were made (oldest first: one poll of
// a map has no order, so a test that needs order drains after each change).
func (r *ssfReceiver) drain(url, token string) []receivedSET {
	r.t.Helper()
	var all []receivedSET
	got, ack := r.poll(url, token, nil)
	for len(got) > 0 {
		all = append(all, got...)
		got, ack = r.poll(url, token, ack)
	}
	return all
}

func (r *ssfReceiver) pushes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.posts
}
