// Package deptest is a DEP API server for tests that keeps state and
// follows Apple's documented behaviour: OAuth-authenticated /session,
// X-ADM-Auth-Session on every call with sessions that expire, cursor
// paging of /server/devices, incremental /devices/sync with added,
// modified and deleted records, and 429 when told to throttle.
package deptest

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
)

// Device is a record in the test inventory.
type Device struct {
	Serial, Model, Description, Color, Family, OS string
}

type event struct {
	d  Device
	op string
	at time.Time
}

// Server is the test DEP service.
type Server struct {
	*httptest.Server
	ConsumerKey, AccessToken string

	mu          sync.Mutex
	devices     []Device // the fetch order
	deleted     map[string]bool
	events      []event
	sessions    map[string]int // token -> requests left
	SessionLife int
	throttle    int // how many next calls get 429
	// Profiles are the defined DEP profiles by UUID; Assigned maps serials
	// to a profile UUID.
	Profiles map[string]map[string]any
	Assigned map[string]string
	Sessions int // sessions issued
	Requests int
}

// Start runs the server for one test.
func Start(t testing.TB) *Server {
	s := New()
	t.Cleanup(s.Close)
	return s
}

// New runs the server until Close (tools outside tests: the soak).
func New() *Server {
	s := &Server{ConsumerKey: "CK_test", AccessToken: "AT_test", deleted: map[string]bool{}, sessions: map[string]int{}, SessionLife: 1000,
		Profiles: map[string]map[string]any{}, Assigned: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /session", s.session)
	mux.HandleFunc("GET /account", s.authed(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"server_name": "Vestibule test", "server_uuid": "00000000-0000-0000-0000-000000000001",
			"org_name": "Acme", "org_email": "it@acme.test"})
	}))
	mux.HandleFunc("POST /server/devices", s.authed(s.fetch))
	mux.HandleFunc("POST /profile", s.authed(s.defineProfile))
	mux.HandleFunc("PUT /profile/devices", s.authed(s.assignProfile))
	mux.HandleFunc("POST /devices/sync", s.authed(s.sync))
	s.Server = httptest.NewServer(mux)
	return s
}

// ServerTokenFile makes the server token file Apple Business Manager gives
// for download: the OAuth tokens as JSON in a text MIME part between
// BEGIN/END MESSAGE lines, CMS-enveloped to the certificate the MDM
// uploaded, base64 under S/MIME headers.
func (s *Server) ServerTokenFile(to *x509.Certificate, expiry time.Time) ([]byte, error) {
	tokens, err := json.Marshal(map[string]string{"consumer_key": s.ConsumerKey, "consumer_secret": "cs",
		"access_token": s.AccessToken, "access_secret": "as", "access_token_expiry": expiry.UTC().Format(time.RFC3339)})
	if err != nil {
		return nil, err
	}
	inner := "Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n" +
		"-----BEGIN MESSAGE-----\r\n" + string(tokens) + "\r\n-----END MESSAGE-----\r\n"
	der, err := pkcs7.Encrypt([]byte(inner), []*x509.Certificate{to})
	if err != nil {
		return nil, fmt.Errorf("server token: %w", err)
	}
	var b strings.Builder
	b.WriteString("Content-Type: application/pkcs7-mime; name=\"smime.p7m\"; smime-type=enveloped-data\r\n" +
		"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\n" +
		"Content-Description: S/MIME Encrypted Message\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(der)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	return []byte(b.String()), nil
}

// Add puts devices in the inventory (an "added" event each).
func (s *Server) Add(devices ...Device) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range devices {
		s.devices = append(s.devices, d)
		s.events = append(s.events, event{d: d, op: "added", at: time.Now()})
	}
}

// Modify records a change to a device.
func (s *Server) Modify(serial, description string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, d := range s.devices {
		if d.Serial == serial {
			s.devices[i].Description = description
			s.events = append(s.events, event{d: s.devices[i], op: "modified", at: time.Now()})
		}
	}
}

// Delete removes a device from the organisation.
func (s *Server) Delete(serial string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.devices {
		if d.Serial == serial && !s.deleted[serial] {
			s.deleted[serial] = true
			s.events = append(s.events, event{d: d, op: "deleted", at: time.Now()})
		}
	}
}

// Throttle makes the next n API calls answer 429.
func (s *Server) Throttle(n int) { s.mu.Lock(); s.throttle = n; s.mu.Unlock() }

func (s *Server) session(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "OAuth ") || !strings.Contains(auth, `oauth_consumer_key="`+s.ConsumerKey+`"`) ||
		!strings.Contains(auth, `oauth_token="`+s.AccessToken+`"`) || !strings.Contains(auth, "oauth_signature=") {
		http.Error(w, "UNAUTHORIZED", http.StatusUnauthorized)
		return
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	s.mu.Lock()
	s.sessions[tok] = s.SessionLife
	s.Sessions++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"auth_session_token": tok})
}

func (s *Server) authed(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.Requests++
		if s.throttle > 0 {
			s.throttle--
			s.mu.Unlock()
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"error":"TOO_MANY_REQUESTS"}`, http.StatusTooManyRequests)
			return
		}
		tok := r.Header.Get("X-ADM-Auth-Session")
		left, ok := s.sessions[tok]
		if !ok || left <= 0 {
			delete(s.sessions, tok)
			s.mu.Unlock()
			http.Error(w, "UNAUTHORIZED", http.StatusUnauthorized)
			return
		}
		s.sessions[tok] = left - 1
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json;charset=UTF8")
		next(w, r)
	}
}

type page struct {
	Limit  int    `json:"limit"`
	Cursor string `json:"cursor"`
}

func record(d Device, op string, at time.Time) map[string]any {
	m := map[string]any{"serial_number": d.Serial, "model": d.Model, "description": d.Description, "color": d.Color,
		"device_family": d.Family, "os": d.OS, "profile_status": "empty", "device_assigned_by": "it@acme.test",
		"device_assigned_date": "2026-01-02T03:04:05Z"}
	if op != "" {
		m["op_type"] = op
		m["op_date"] = at.UTC().Format(time.RFC3339)
	}
	return m
}

// readPage reads a fetch or sync request, with Apple's default limit.
func readPage(w http.ResponseWriter, r *http.Request) (page, bool) {
	var p page
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
		http.Error(w, `{"error":"MALFORMED_REQUEST_BODY"}`, http.StatusBadRequest)
		return p, false
	}
	if p.Limit <= 0 || p.Limit > 1000 {
		p.Limit = 100
	}
	return p, true
}

// fetch pages through the inventory: the cursor is the next offset and,
// for the sync that follows, the event index the fetch started at.
func (s *Server) fetch(w http.ResponseWriter, r *http.Request) {
	p, ok := readPage(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	offset, mark := 0, len(s.events)
	if p.Cursor != "" {
		if _, err := fmt.Sscanf(p.Cursor, "f-%d-%d", &offset, &mark); err != nil {
			http.Error(w, "INVALID_CURSOR", http.StatusBadRequest)
			return
		}
	}
	var out []map[string]any
	i := offset
	for ; i < len(s.devices) && len(out) < p.Limit; i++ {
		if !s.deleted[s.devices[i].Serial] {
			out = append(out, record(s.devices[i], "", time.Time{}))
		}
	}
	more := i < len(s.devices)
	cursor := fmt.Sprintf("f-%d-%d", i, mark)
	if !more {
		cursor = "s-" + strconv.Itoa(mark)
	}
	json.NewEncoder(w).Encode(map[string]any{"devices": out, "cursor": cursor, "more_to_follow": more,
		"fetched_until": time.Now().UTC().Format(time.RFC3339)})
}

func (s *Server) sync(w http.ResponseWriter, r *http.Request) {
	p, ok := readPage(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var from int
	if _, err := fmt.Sscanf(p.Cursor, "s-%d", &from); err != nil || from > len(s.events) {
		http.Error(w, "INVALID_CURSOR", http.StatusBadRequest)
		return
	}
	var out []map[string]any
	i := from
	for ; i < len(s.events) && len(out) < p.Limit; i++ {
		out = append(out, record(s.events[i].d, s.events[i].op, s.events[i].at))
	}
	json.NewEncoder(w).Encode(map[string]any{"devices": out, "cursor": "s-" + strconv.Itoa(i), "more_to_follow": i < len(s.events),
		"fetched_until": time.Now().UTC().Format(time.RFC3339)})
}

func (s *Server) defineProfile(w http.ResponseWriter, r *http.Request) {
	var p map[string]any
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil || p["profile_name"] == nil || p["url"] == nil {
		http.Error(w, `{"error":"INVALID_PROFILE"}`, http.StatusBadRequest)
		return
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	uuid := strings.ToUpper(hex.EncodeToString(b))
	s.mu.Lock()
	s.Profiles[uuid] = p
	s.mu.Unlock()
	json.NewEncoder(w).Encode(map[string]any{"profile_uuid": uuid, "devices": map[string]string{}})
}

func (s *Server) assignProfile(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ProfileUUID string   `json:"profile_uuid"`
		Devices     []string `json:"devices"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error":"MALFORMED_REQUEST_BODY"}`, http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.Profiles[req.ProfileUUID]; !ok {
		http.Error(w, `{"error":"PROFILE_NOT_FOUND"}`, http.StatusBadRequest)
		return
	}
	known := map[string]bool{}
	for _, d := range s.devices {
		known[d.Serial] = !s.deleted[d.Serial]
	}
	out := map[string]string{}
	for _, serial := range req.Devices {
		if known[serial] {
			s.Assigned[serial] = req.ProfileUUID
			out[serial] = "SUCCESS"
		} else {
			out[serial] = "NOT_ACCESSIBLE"
		}
	}
	json.NewEncoder(w).Encode(map[string]any{"profile_uuid": req.ProfileUUID, "devices": out})
}
