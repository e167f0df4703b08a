// Package seed fills a Vestibule store with enrolled devices for scale
// measurements: each device gets a reservation, a certificate from the
// SCEP CA recorded as SCEP records one, a claimed enrollment with push
// details, and an approval, all through the store's own methods, so the
// rows are the ones the server writes. It skips the wire (profiles, SCEP
// envelopes, signed check-ins), which is what makes 100,000 devices take
// minutes instead of hours.
package seed

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/scep"
	"github.com/vestibule-mdm/vestibule/store"
)

// Options says what to seed.
type Options struct {
	// Devices in all; the first Pending of them stay pending (with push
	// tokens, so approving them pushes), the rest are approved.
	Devices, Pending int
	// Users the devices are spread over, round robin.
	Users int
	// Keys the device certificates are issued for, reused round robin:
	// each device has its own certificate, but generating 100,000 RSA keys
	// would take longer than the seeding itself.
	Keys []*rsa.PrivateKey
	// CA and CAKey issue the device certificates (the SCEP CA).
	CA    *x509.Certificate
	CAKey crypto.Signer
	// OrgID is the organisation the reservations belong to.
	OrgID string
	// Prefix starts every serial number, so seeds of several runs differ.
	Prefix string
	// Workers run at once (default 4).
	Workers int
	// Progress, when set, is called with the count done, now and then.
	Progress func(done int)
	Now      func() time.Time
}

// Device is one seeded device, as a simulator needs it to check in.
type Device struct {
	ID      string `json:"id"`
	UDID    string `json:"udid"`
	Serial  string `json:"serial"`
	Cert    []byte `json:"cert"`
	Key     int    `json:"key"`
	Pending bool   `json:"pending,omitempty"`
	// PushToken is the device's APNs token, hex, as TokenUpdate gave it.
	PushToken string `json:"push_token"`
}

// Run seeds o.Devices devices and returns them in order.
func Run(ctx context.Context, st *store.Store, o Options) ([]Device, error) {
	if o.Devices < 1 || o.Pending < 0 || o.Pending > o.Devices {
		return nil, errors.New("seed: need 1 or more devices and 0..devices pending")
	}
	if len(o.Keys) == 0 || o.CA == nil || o.CAKey == nil {
		return nil, errors.New("seed: need device keys and the CA")
	}
	if o.Users < 1 {
		o.Users = 1
	}
	if o.Workers < 1 {
		o.Workers = 4
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OrgID == "" {
		o.OrgID = "dev"
	}
	users, err := seedUsers(ctx, st, o)
	if err != nil {
		return nil, err
	}
	out := make([]Device, o.Devices)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, o.Workers)
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= o.Devices || ctx.Err() != nil {
					return
				}
				d, err := seedDevice(ctx, st, o, i, users[i%len(users)])
				if err != nil {
					errs <- fmt.Errorf("seed device %d: %w", i, err)
					return
				}
				out[i] = d
				if n := done.Add(1); o.Progress != nil && n%1000 == 0 {
					o.Progress(int(n))
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func seedUsers(ctx context.Context, st *store.Store, o Options) ([]enrollment.User, error) {
	now := o.Now()
	in := make([]enrollment.User, o.Users)
	for i := range in {
		in[i] = enrollment.User{ID: enrollment.NewID(), Email: fmt.Sprintf("seed%05d@example.com", i), Name: fmt.Sprintf("Seed user %d", i),
			Role: enrollment.RoleUser, CreatedAt: now, UpdatedAt: now}
	}
	ev := enrollment.AuditEvent{ID: enrollment.NewID(), At: now, Actor: "seed", Action: "user.import", TargetType: "user", Outcome: enrollment.OutcomeOK,
		Detail: fmt.Sprintf("%d seed users", o.Users)}
	if _, _, err := st.UpsertUsers(ctx, in, ev); err != nil {
		return nil, fmt.Errorf("seed users: %w", err)
	}
	out := make([]enrollment.User, len(in))
	for i, u := range in {
		got, err := st.UserByEmail(ctx, u.Email)
		if err != nil {
			return nil, fmt.Errorf("seed users: %w", err)
		}
		out[i] = got
	}
	return out, nil
}

// seedDevice takes one device through the store's steps of the ceremony:
// reservation, certificate, claim, push details and, past the pending
// ones, approval.
func seedDevice(ctx context.Context, st *store.Store, o Options, i int, u enrollment.User) (Device, error) {
	now := o.Now()
	audit := func(action, target string) enrollment.AuditEvent {
		return enrollment.AuditEvent{ID: enrollment.NewID(), At: now, Actor: "seed", Action: action, TargetType: "reservation", TargetID: target,
			Outcome: enrollment.OutcomeOK}
	}
	d := Device{ID: enrollment.NewID(), UDID: strings.ToUpper(enrollment.NewID()), Serial: fmt.Sprintf("%s%07d", o.Prefix, i),
		Key: i % len(o.Keys), Pending: i < o.Pending}
	challenge := sha256.Sum256([]byte(enrollment.NewID()))
	r := enrollment.Reservation{ID: d.ID, OrgID: o.OrgID, UserID: u.ID, ChallengeHash: hex.EncodeToString(challenge[:]),
		TokenNonce: enrollment.NewID(), TokenKeyVersion: 1, CreatedAt: now, ExpiresAt: now.Add(time.Hour), CreatedBy: "seed",
		Identity: enrollment.IdentitySCEP}
	if err := st.CreateReservation(ctx, r, audit("reservation.create", d.ID)); err != nil {
		return Device{}, err
	}
	cert, err := issue(o, d.ID, o.Keys[d.Key], now)
	if err != nil {
		return Device{}, err
	}
	d.Cert = cert.DER
	if err := st.RecordIssued(ctx, cert, r.ChallengeHash, now, audit("scep.issue", d.ID)); err != nil {
		return Device{}, err
	}
	e := enrollment.Enrollment{ID: d.ID, UserID: u.ID, Facts: enrollment.DeviceFacts{UDID: d.UDID, Serial: d.Serial, Model: "Mac14,9",
		ModelName: "MacBook Pro", OSVersion: "14.5", DeviceName: "Seeded Mac"}}
	if _, err := st.ClaimReservation(ctx, d.ID, r.TokenNonce, e, now, audit("enrollment.claim", d.ID), nil); err != nil {
		return Device{}, err
	}
	token := make([]byte, 32)
	_, _ = rand.Read(token)
	d.PushToken = hex.EncodeToString(token)
	if err := st.UpdatePushInfo(ctx, d.ID, enrollment.PushInfo{Token: d.PushToken, Magic: enrollment.NewID(),
		Topic: "com.apple.mgmt.External.seed"}, now); err != nil {
		return Device{}, err
	}
	if d.Pending {
		return d, nil
	}
	// Approved long ago: no post-approval commands or push are left to
	// send, and the device-trust profile counts as requested, so the trust
	// issuer does not queue 100,000 profiles when the server starts.
	if _, err := st.Decide(ctx, d.ID, enrollment.StatePending, enrollment.StateApproved, "seed", "seeded", now,
		enrollment.Effects{}, audit("enrollment.approve", d.ID)); err != nil {
		return Device{}, err
	}
	db := st.DB()
	if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE enrollments SET trust_requested_at = ? WHERE id = ?`), now.UnixMilli(), d.ID); err != nil {
		return Device{}, fmt.Errorf("mark trust requested: %w", err)
	}
	return d, nil
}

// issue makes the certificate SCEP would issue for reservation id: CN is
// the reservation, client authentication only.
func issue(o Options, id string, key *rsa.PrivateKey, now time.Time) (scep.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return scep.Certificate{}, err
	}
	notAfter := now.Add(365 * 24 * time.Hour)
	if notAfter.After(o.CA.NotAfter) {
		notAfter = o.CA.NotAfter
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: id}, NotBefore: now.Add(-5 * time.Minute), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, o.CA, &key.PublicKey, o.CAKey)
	if err != nil {
		return scep.Certificate{}, fmt.Errorf("issue: %w", err)
	}
	fp := sha256.Sum256(der)
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return scep.Certificate{}, err
	}
	keyHash := sha256.Sum256(spki)
	return scep.Certificate{Serial: strings.ToUpper(serial.Text(16)), SHA256: hex.EncodeToString(fp[:]), Subject: "CN=" + id,
		NotBefore: tmpl.NotBefore, NotAfter: notAfter, ReservationID: id, KeySHA256: hex.EncodeToString(keyHash[:]),
		TransactionID: "seed-" + id, DER: der, IssuedAt: now}, nil
}
