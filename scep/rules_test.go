package scep_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	smallscep "github.com/smallstep/scep"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
	"github.com/vestibule-mdm/vestibule/scep"
)

// memCA is an RSA CA in memory.
type memCA struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
}

func (c memCA) Certificate() *x509.Certificate { return c.cert }
func (c memCA) Signer() crypto.Signer          { return c.key }
func (c memCA) Decrypter() crypto.Decrypter    { return c.key }

var (
	caOnce sync.Once
	testCA memCA
)

// sharedCA makes one CA for every rule test: RSA key generation is the
// slow part.
func sharedCA(t *testing.T) memCA {
	caOnce.Do(func() {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rules CA"}, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		cert, _ := x509.ParseCertificate(der)
		testCA = memCA{cert: cert, key: key}
	})
	return testCA
}

// memStore is scep.Store in memory: challenges by hash, certificates by
// fingerprint, approved reservations, and a switch that makes every call
// fail as a database outage would.
type memStore struct {
	mu         sync.Mutex
	challenges map[string]string // hash → reservation ID, while unused
	certs      []scep.Certificate
	approved   map[string]bool
	audit      []enrollment.AuditEvent
	down       bool
	// onRecord, when set, runs as RecordIssued starts, outside the lock.
	onRecord func()
}

var errDown = errors.New("database is down")

func newMemStore() *memStore {
	return &memStore{challenges: map[string]string{}, approved: map[string]bool{}}
}

func (m *memStore) OpenReservationForChallenge(_ context.Context, hash string, _ time.Time) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return "", errDown
	}
	id, ok := m.challenges[hash]
	if !ok {
		return "", enrollment.ErrNotFound
	}
	return id, nil
}

func (m *memStore) IssuedByTransaction(_ context.Context, tx, key string) (scep.Certificate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return scep.Certificate{}, errDown
	}
	for _, c := range m.certs {
		if c.TransactionID == tx && c.KeySHA256 == key {
			return c, nil
		}
	}
	return scep.Certificate{}, enrollment.ErrNotFound
}

func (m *memStore) RecordIssued(_ context.Context, c scep.Certificate, hash string, _ time.Time, ev enrollment.AuditEvent) error {
	if m.onRecord != nil {
		m.onRecord()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return errDown
	}
	if hash != "" {
		if m.challenges[hash] != c.ReservationID {
			return fmt.Errorf("challenge: %w", enrollment.ErrConflict)
		}
		delete(m.challenges, hash)
	}
	m.certs = append(m.certs, c)
	m.audit = append(m.audit, ev)
	return nil
}

func (m *memStore) CertificateBySHA256(_ context.Context, fp string) (scep.Certificate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return scep.Certificate{}, errDown
	}
	for _, c := range m.certs {
		if c.SHA256 == fp {
			return c, nil
		}
	}
	return scep.Certificate{}, enrollment.ErrNotFound
}

func (m *memStore) EnrollmentApproved(_ context.Context, id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return false, errDown
	}
	return m.approved[id], nil
}

func (m *memStore) AppendAudit(_ context.Context, ev enrollment.AuditEvent) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.audit = append(m.audit, ev)
	return nil
}

func (m *memStore) revokeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for i := range m.certs {
		m.certs[i].RevokedAt = &now
	}
}

// TestReplyWaitsForTheRecord: the reply is signed while the certificate's
// record is written, and leaves only once that is done. A record that
// fails (here the challenge, used by another request in the meantime)
// turns it into a failure with no certificate; a record that panics
// panics in the request's goroutine, where the server recovers it.
func TestReplyWaitsForTheRecord(t *testing.T) {
	st := newMemStore()
	svc, err := scep.New(scep.Options{Authority: sharedCA(t), Store: st, Validity: 24 * time.Hour, MinRSABits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	request := func(t *testing.T) []byte {
		resID, challenge := enrollment.NewID(), enrollment.NewID()
		st.challenges[enrollment.HashChallenge(challenge)] = resID
		d := devicesim.New(http.DefaultClient, "SER")
		d.Key = key(1)
		msg, _, err := d.PKCSReq(sharedCA(t).cert, challenge, resID)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	ctx := context.Background()

	t.Run("slow record", func(t *testing.T) {
		var recorded atomic.Bool
		st.onRecord = func() { time.Sleep(50 * time.Millisecond); recorded.Store(true) }
		defer func() { st.onRecord = nil }()
		rep, err := svc.PKIOperation(ctx, request(t), "127.0.0.1")
		if err != nil || len(rep) == 0 {
			t.Fatalf("PKIOperation: %d bytes, %v", len(rep), err)
		}
		if !recorded.Load() {
			t.Fatal("the reply left before the certificate was recorded")
		}
	})
	t.Run("challenge used meanwhile", func(t *testing.T) {
		before := len(st.certs)
		st.onRecord = func() {
			st.mu.Lock()
			clear(st.challenges)
			st.mu.Unlock()
		}
		defer func() { st.onRecord = nil }()
		rep, err := svc.PKIOperation(ctx, request(t), "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		msg, err := smallscep.ParsePKIMessage(rep)
		if err != nil {
			t.Fatal(err)
		}
		if msg.PKIStatus != smallscep.FAILURE || msg.FailInfo != smallscep.BadRequest || len(st.certs) != before {
			t.Fatalf("status %s, fail info %s, %d certificates recorded; want a badRequest failure and none", msg.PKIStatus, msg.FailInfo,
				len(st.certs)-before)
		}
	})
	t.Run("record panics", func(t *testing.T) {
		st.onRecord = func() { panic("record exploded") }
		defer func() { st.onRecord = nil }()
		defer func() {
			// The value and the stack where it was raised, which the
			// server's recovery logs.
			p, _ := recover().(error)
			if p == nil || !strings.Contains(p.Error(), "record exploded") || !strings.Contains(p.Error(), "memStore).RecordIssued") {
				t.Fatalf("recovered %v; want the record's panic, with its stack, in the request's goroutine", p)
			}
		}()
		svc.PKIOperation(ctx, request(t), "127.0.0.1")
		t.Fatal("PKIOperation returned")
	})
	t.Run("record goroutine exits", func(t *testing.T) {
		before := len(st.certs)
		st.onRecord = runtime.Goexit
		defer func() { st.onRecord = nil }()
		rep, err := svc.PKIOperation(ctx, request(t), "127.0.0.1")
		if !errors.Is(err, scep.ErrUnavailable) || rep != nil || len(st.certs) != before {
			t.Fatalf("%d bytes, %v, %d certificates recorded; want ErrUnavailable and none", len(rep), err, len(st.certs)-before)
		}
	})
}

// rules is the SCEP service over the memory store, served on loopback so
// the device simulator speaks to it as a device would.
type rules struct {
	store *memStore
	url   string
}

func newRules(t *testing.T) *rules {
	st := newMemStore()
	svc, err := scep.New(scep.Options{Authority: sharedCA(t), Store: st, Validity: 24 * time.Hour, MinRSABits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	svc.Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &rules{store: st, url: srv.URL + "/scep"}
}

// reserve records a challenge for a new reservation.
func (r *rules) reserve() (resID, challenge string) {
	resID, challenge = enrollment.NewID(), enrollment.NewID()
	r.store.challenges[enrollment.HashChallenge(challenge)] = resID
	return resID, challenge
}

// enrolled reserves and enrolls a device with key 0.
func (r *rules) enrolled(t *testing.T) (d *devicesim.Device, id, challenge string) {
	t.Helper()
	id, challenge = r.reserve()
	d = r.device()
	d.Key = key(0)
	if err := d.EnrollWith(context.Background(), challenge, id); err != nil {
		t.Fatal(err)
	}
	return d, id, challenge
}

func (r *rules) device() *devicesim.Device {
	d := devicesim.New(http.DefaultClient, "SER")
	d.Profile.SCEPURL = r.url
	return d
}

var deviceKeys struct {
	once sync.Once
	keys [3]*rsa.PrivateKey
}

// key returns one of a few RSA device keys made once.
func key(i int) *rsa.PrivateKey {
	deviceKeys.once.Do(func() {
		for j := range deviceKeys.keys {
			deviceKeys.keys[j], _ = rsa.GenerateKey(rand.Reader, 2048)
		}
	})
	return deviceKeys.keys[i]
}

func TestSCEPRules(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, r *rules) error
		want string // fail info, "" for success
		then func(t *testing.T, r *rules)
	}{
		{"ok/a challenge issues a certificate for its reservation", func(t *testing.T, r *rules) error {
			id, ch := r.reserve()
			d := r.device()
			d.Key = key(0)
			if err := d.EnrollWith(ctx, ch, id); err != nil {
				return err
			}
			if d.Cert.Subject.CommonName != id {
				t.Fatalf("CN %q", d.Cert.Subject.CommonName)
			}
			return nil
		}, "", func(t *testing.T, r *rules) {
			if len(r.store.certs) != 1 || len(r.store.challenges) != 0 {
				t.Fatalf("%d certificates, %d challenges left", len(r.store.certs), len(r.store.challenges))
			}
		}},
		{"error/unknown challenge", func(t *testing.T, r *rules) error {
			id, _ := r.reserve()
			d := r.device()
			d.Key = key(0)
			return d.EnrollWith(ctx, "wrong", id)
		}, "badRequest", nil},
		{"error/subject is another reservation", func(t *testing.T, r *rules) error {
			_, ch := r.reserve()
			other, _ := r.reserve()
			d := r.device()
			d.Key = key(0)
			return d.EnrollWith(ctx, ch, other)
		}, "badRequest", nil},
		{"error/weak key", func(t *testing.T, r *rules) error {
			id, ch := r.reserve()
			d := r.device()
			d.Key, _ = rsa.GenerateKey(rand.Reader, 1024)
			return d.EnrollWith(ctx, ch, id)
		}, "badAlg", nil},
		{"error/a used challenge, by another device", func(t *testing.T, r *rules) error {
			id, ch := r.reserve()
			first := r.device()
			first.Key = key(0)
			if err := first.EnrollWith(ctx, ch, id); err != nil {
				t.Fatal(err)
			}
			second := r.device()
			second.Key = key(1)
			return second.EnrollWith(ctx, ch, id)
		}, "badRequest", func(t *testing.T, r *rules) {
			if len(r.store.certs) != 1 {
				t.Fatalf("%d certificates", len(r.store.certs))
			}
		}},
		{"ok/a retry gets the certificate already issued", func(t *testing.T, r *rules) error {
			d, id, ch := r.enrolled(t)
			first := d.Cert
			if err := d.EnrollWith(ctx, ch, id); err != nil {
				return err
			}
			if d.Cert.SerialNumber.Cmp(first.SerialNumber) != 0 {
				t.Fatal("a retry got a new certificate")
			}
			return nil
		}, "", func(t *testing.T, r *rules) {
			if len(r.store.certs) != 1 {
				t.Fatalf("%d certificates", len(r.store.certs))
			}
		}},
		{"error/renewal while not approved", func(t *testing.T, r *rules) error {
			d, _, _ := r.enrolled(t)
			return d.Renew(ctx)
		}, "badRequest", nil},
		{"ok/renewal when approved", func(t *testing.T, r *rules) error {
			d, id, _ := r.enrolled(t)
			r.store.approved[id] = true
			return d.Renew(ctx)
		}, "", func(t *testing.T, r *rules) {
			if len(r.store.certs) != 2 {
				t.Fatalf("%d certificates", len(r.store.certs))
			}
		}},
		{"error/renewal signed by a look-alike of our certificate", func(t *testing.T, r *rules) error {
			// Our CA's name and the device's own record, signed by
			// another key: not one of ours, so no renewal.
			d, id, _ := r.enrolled(t)
			r.store.approved[id] = true
			ca := sharedCA(t).Certificate()
			if !bytes.Equal(d.Cert.RawIssuer, ca.RawSubject) {
				t.Fatal("the issued certificate does not name the CA")
			}
			impostor := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: ca.Subject, NotBefore: ca.NotBefore, NotAfter: ca.NotAfter,
				IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
			der, err := x509.CreateCertificate(rand.Reader, d.Cert, impostor, d.Key.Public(), key(1))
			if err != nil {
				t.Fatal(err)
			}
			if d.Cert, err = x509.ParseCertificate(der); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(d.Cert.RawIssuer, ca.RawSubject) {
				t.Fatal("the look-alike does not name our CA")
			}
			return d.Renew(ctx)
		}, "badMessageCheck", func(t *testing.T, r *rules) {
			if len(r.store.certs) != 1 {
				t.Fatalf("%d certificates", len(r.store.certs))
			}
		}},
		{"error/renewal with a revoked certificate", func(t *testing.T, r *rules) error {
			d, id, _ := r.enrolled(t)
			r.store.approved[id] = true
			r.store.revokeAll()
			return d.Renew(ctx)
		}, "badCertID", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRules(t)
			err := tc.run(t, r)
			if got := failInfo(err); tc.want == "" && err != nil || tc.want != "" && got != tc.want {
				t.Fatalf("got %v (%s), want %q", err, got, tc.want)
			}
			if tc.want != "" {
				var refused int
				for _, ev := range r.store.audit {
					if ev.Action == "scep.refuse" {
						refused++
					}
				}
				if refused == 0 {
					t.Fatal("the refusal is not audited")
				}
			}
			if tc.then != nil {
				tc.then(t, r)
			}
		})
	}
}

// TestSCEPDatabaseOutage: the service's own failure is ErrUnavailable (the
// handler answers 503 with Retry-After), never a SCEP failure the device
// would take as final.
func TestSCEPDatabaseOutage(t *testing.T) {
	r := newRules(t)
	id, ch := r.reserve()
	r.store.down = true
	d := r.device()
	d.Key = key(2)
	err := d.EnrollWith(context.Background(), ch, id)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("enroll during an outage: %v, want HTTP 503", err)
	}
	for _, ev := range r.store.audit {
		if strings.Contains(ev.Detail, ch) {
			t.Fatal("the challenge is in the audit log")
		}
	}
}
