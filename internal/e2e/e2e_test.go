// Package e2e runs the enrollment ceremony end to end against the real
// server with simulated devices, and the attacks it must refuse.
package e2e

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
	"github.com/vestibule-mdm/vestibule/internal/testserver"
	"github.com/vestibule-mdm/vestibule/internal/testvault"
	"github.com/vestibule-mdm/vestibule/server"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

type env struct {
	t   testing.TB
	url string
	app *server.App
	ctx context.Context
	// lastBrowserEmail is the user the newest browser() signed in as.
	lastBrowserEmail string
}

var admin = enrollment.Actor{Name: "test:admin", RemoteIP: "127.0.0.1"}

func newEnv(t testing.TB, dialect string, opts ...func(*config.Config)) *env {
	t.Helper()
	return newEnvWith(t, dialect, nil, opts...)
}

// newEnvWith is newEnv with options for the server's build.
func newEnvWith(t testing.TB, dialect string, build []server.Option, opts ...func(*config.Config)) *env {
	t.Helper()
	ctx := context.Background()
	profiles := t.TempDir()
	if err := os.WriteFile(filepath.Join(profiles, "wifi.mobileconfig"), []byte("<plist>wifi secret</plist>"), 0o600); err != nil {
		t.Fatal(err)
	}
	url, app := testserver.Start(t, storetest.DSN(t, dialect), "", func(cfg *config.Config) {
		cfg.MDM.PostApprovalProfiles = profiles
		for _, o := range opts {
			o(cfg)
		}
	}, build...)
	for _, u := range []string{"alice@example.com", "bob@example.com"} {
		if _, err := app.Users.Add(ctx, admin, enrollment.UserInput{Email: u}); err != nil {
			t.Fatal(err)
		}
	}
	return &env{t: t, url: url, app: app, ctx: ctx}
}

// profile reserves a device for email and returns its signed profile.
func (e *env) profile(email string) (enrollment.Reservation, []byte) {
	e.t.Helper()
	r, sec, err := e.app.Reservations.Reserve(e.ctx, admin, email)
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := e.app.Profiles.MakeProfile(e.ctx, r, sec)
	if err != nil {
		e.t.Fatal(err)
	}
	return r, b
}

// enrolledDevice installs a fresh profile on a new device and gets its
// certificate over SCEP.
func (e *env) enrolledDevice(email, serial string) (*devicesim.Device, enrollment.Reservation) {
	e.t.Helper()
	r, p := e.profile(email)
	d := devicesim.New(http.DefaultClient, serial)
	if err := d.Install(p); err != nil {
		e.t.Fatal(err)
	}
	if err := d.Enroll(e.ctx); err != nil {
		e.t.Fatalf("SCEP: %v", err)
	}
	return d, r
}

func (e *env) expect(what string, got int, err error, want int) {
	e.t.Helper()
	if err != nil {
		e.t.Fatalf("%s: %v", what, err)
	}
	if got != want {
		e.t.Fatalf("%s: HTTP %d, want %d", what, got, want)
	}
}

func (e *env) enrollment(id string) enrollment.Enrollment {
	e.t.Helper()
	en, err := e.app.Enrollments.Get(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return en
}

func TestCeremony(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) { ceremony(t, newEnv(t, dialect)) })
}

// TestCeremonyWithVault runs the ceremony once with the token key in a
// real Vault-compatible server.
func TestCeremonyWithVault(t *testing.T) {
	srv := testvault.Start(t)
	if _, err := srv.Client().Logical().Write("transit/keys/vestibule-token", map[string]any{"type": "hmac", "key_size": 32}); err != nil {
		t.Fatal(err)
	}
	tokenFile := srv.TokenFile(srv.RootToken)
	e := newEnv(t, "sqlite", func(c *config.Config) {
		c.Signer.Backend = "vault"
		c.Vault.Address, c.Vault.TokenFile = srv.Addr, tokenFile
	})
	ceremony(t, e)
	// Vault down: a new device gets a retryable 503, not a refusal.
	d, r := e.enrolledDevice("bob@example.com", "SER-VAULT-DOWN")
	srv.Stop()
	code, err := d.Authenticate(e.ctx)
	e.expect("Authenticate with Vault down", code, err, 503)
	assertUnclaimed(t, e, r.ID)
}

func ceremony(t *testing.T, e *env) {
	d, r := e.enrolledDevice("alice@example.com", "C02CEREMONY1")
	if d.Cert.Subject.CommonName != r.ID {
		t.Fatalf("certificate CN %q, want the reservation %s", d.Cert.Subject.CommonName, r.ID)
	}
	code, err := d.Authenticate(e.ctx)
	e.expect("Authenticate", code, err, 200)
	code, err = d.TokenUpdate(e.ctx)
	e.expect("TokenUpdate", code, err, 200)

	en := e.enrollment(r.ID)
	if en.State != enrollment.StatePending || en.Facts.UDID != d.UDID || en.Facts.Serial != "C02CEREMONY1" || en.PushToken == "" {
		t.Fatalf("after check-in: %+v", en)
	}
	// Pending: the device gets only the attestation question, whatever
	// else is queued.
	if err := e.app.Commands.Enqueue(e.ctx, admin, en, mustProfileList(t)...); err != nil {
		t.Fatal(err)
	}
	onlyTheQuestion(t, e, d)

	if _, err := e.app.Enrollments.Approve(e.ctx, admin, r.ID, "known laptop"); err != nil {
		t.Fatal(err)
	}
	types, err := d.DrainCommands(e.ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(types, ","); got != "ProfileList,DeviceInformation,InstallProfile" {
		t.Fatalf("commands after approval: %s", got)
	}
	cmds, _ := e.app.Commands.List(e.ctx, r.ID)
	for _, c := range cmds {
		if c.Status != enrollment.CommandAcknowledged {
			t.Errorf("%s is %s", c.RequestType, c.Status)
		}
	}
	// Authenticate again (a retry after a lost reply) changes nothing.
	code, err = d.Authenticate(e.ctx)
	e.expect("Authenticate retry", code, err, 200)
	if en := e.enrollment(r.ID); en.State != enrollment.StateApproved {
		t.Errorf("retry changed the state to %s", en.State)
	}
	code, err = d.CheckOut(e.ctx)
	e.expect("CheckOut", code, err, 200)
	if en := e.enrollment(r.ID); en.State != enrollment.StateUnenrolled {
		t.Errorf("after CheckOut: %s", en.State)
	}
	code, _, err = d.Connect(e.ctx, "Idle", "")
	e.expect("Connect after CheckOut", code, err, 401)
}

// mustProfileList is a ProfileList command with a fresh UUID.
func mustProfileList(t testing.TB) []enrollment.NewCommand {
	c, err := server.NewCommand("ProfileList", nil)
	if err != nil {
		t.Fatal(err)
	}
	return []enrollment.NewCommand{c}
}

func TestAttacks(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)

		t.Run("check-in without Mdm-Signature", func(t *testing.T) {
			d, r := e.enrolledDevice("alice@example.com", "SER-NOSIG")
			cert := d.Cert
			d.Cert = nil
			code, err := d.Authenticate(e.ctx)
			e.expect("unsigned Authenticate", code, err, 401)
			d.Cert = cert
			assertUnclaimed(t, e, r.ID)
		})

		t.Run("signature by a self-signed certificate", func(t *testing.T) {
			d, r := e.enrolledDevice("alice@example.com", "SER-SELF")
			forged := devicesim.New(http.DefaultClient, "SER-SELF")
			forged.Profile = d.Profile
			if err := selfSign(forged, r.ID); err != nil {
				t.Fatal(err)
			}
			code, err := forged.Authenticate(e.ctx)
			e.expect("self-signed Authenticate", code, err, 401)
			assertUnclaimed(t, e, r.ID)
		})

		t.Run("certificate of reservation A with the token of reservation B", func(t *testing.T) {
			a, ra := e.enrolledDevice("alice@example.com", "SER-A")
			rb, pb := e.profile("bob@example.com")
			b := devicesim.New(http.DefaultClient, "SER-A")
			if err := b.Install(pb); err != nil {
				t.Fatal(err)
			}
			a.Profile.CheckInURL = b.Profile.CheckInURL
			code, err := a.Authenticate(e.ctx)
			e.expect("mixed Authenticate", code, err, 401)
			// B's token was the one presented: B's reservation is the one
			// that must stay unclaimed (and A's, whose token never came).
			assertUnclaimed(t, e, rb.ID)
			assertUnclaimed(t, e, ra.ID)
		})

		for _, tc := range []struct{ name, token string }{
			{"forged token", "AQAAAAEDZGV2" + strings.Repeat("A", 120)},
			{"no token", ""},
			{"garbage token", "%00<script>"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				d, r := e.enrolledDevice("alice@example.com", "SER-TOK")
				base, _, _ := strings.Cut(d.Profile.CheckInURL, "?")
				d.Profile.CheckInURL = base + "?t=" + tc.token
				code, err := d.Authenticate(e.ctx)
				e.expect(tc.name, code, err, 401)
				assertUnclaimed(t, e, r.ID)
			})
		}

		t.Run("tampered token", func(t *testing.T) {
			d, r := e.enrolledDevice("alice@example.com", "SER-TAMPER")
			u := d.Profile.CheckInURL
			last := u[len(u)-1]
			repl := byte('A')
			if last == 'A' {
				repl = 'B'
			}
			d.Profile.CheckInURL = u[:len(u)-1] + string(repl)
			code, err := d.Authenticate(e.ctx)
			e.expect("tampered", code, err, 401)
			assertUnclaimed(t, e, r.ID)
		})

		t.Run("token of a revoked reservation", func(t *testing.T) {
			d, r := e.enrolledDevice("alice@example.com", "SER-REVOKED")
			if err := e.app.Reservations.Revoke(e.ctx, admin, r.ID); err != nil {
				t.Fatal(err)
			}
			code, err := d.Authenticate(e.ctx)
			e.expect("revoked", code, err, 401)
		})

		t.Run("the same profile on a second device", func(t *testing.T) {
			r, p := e.profile("alice@example.com")
			first := devicesim.New(http.DefaultClient, "SER-FIRST")
			if err := first.Install(p); err != nil {
				t.Fatal(err)
			}
			if err := first.Enroll(e.ctx); err != nil {
				t.Fatal(err)
			}
			second := devicesim.New(http.DefaultClient, "SER-SECOND")
			if err := second.Install(p); err != nil {
				t.Fatal(err)
			}
			var scepErr *devicesim.SCEPError
			if err := second.Enroll(e.ctx); !errors.As(err, &scepErr) {
				t.Fatalf("second SCEP with a used challenge: %v", err)
			}
			code, err := first.Authenticate(e.ctx)
			e.expect("first device", code, err, 200)
			// The second device got hold of the first's certificate and key
			// (a copied keychain): its claim of the token is still refused.
			second.Cert, second.Key = first.Cert, first.Key
			code, err = second.Authenticate(e.ctx)
			e.expect("second device", code, err, 401)
			res, _ := e.app.Reservations.Get(e.ctx, r.ID)
			if res.ClaimAttempts != 1 || res.ClaimedUDID != first.UDID {
				t.Errorf("reservation: attempts %d, claimed by %s", res.ClaimAttempts, res.ClaimedUDID)
			}
			audit, _ := e.app.Store.ListAudit(e.ctx, enrollment.AuditFilter{Actor: "device:" + second.UDID})
			if len(audit) != 1 || audit[0].Outcome != enrollment.OutcomeRefused || !strings.Contains(audit[0].Detail, "already claimed by another device") {
				t.Errorf("the refused claim is not audited with its reason: %+v", audit)
			}
			// The address the request came from (the test's loopback
			// client), as the admin reading the log needs it.
			if len(audit) == 1 && audit[0].RemoteIP != "127.0.0.1" {
				t.Errorf("the refused claim is audited from %q, want the client's 127.0.0.1", audit[0].RemoteIP)
			}
		})

		t.Run("re-enrollment of an approved device", func(t *testing.T) {
			d, r := e.enrolledDevice("alice@example.com", "SER-REENROLL")
			code, err := d.Authenticate(e.ctx)
			e.expect("Authenticate", code, err, 200)
			if _, err := e.app.Enrollments.Approve(e.ctx, admin, r.ID, ""); err != nil {
				t.Fatal(err)
			}
			// Same serial and UDID, a fresh valid profile.
			_, p2 := e.profile("alice@example.com")
			again := devicesim.New(http.DefaultClient, "SER-REENROLL")
			again.UDID = d.UDID
			if err := again.Install(p2); err != nil {
				t.Fatal(err)
			}
			if err := again.Enroll(e.ctx); err != nil {
				t.Fatal(err)
			}
			code, err = again.Authenticate(e.ctx)
			e.expect("re-enrollment Authenticate", code, err, 200)
			en := e.enrollment(again.Profile.CN)
			if en.State != enrollment.StatePending || !en.ReEnrollment || en.PreviousID != r.ID {
				t.Fatalf("re-enrollment: %+v", en)
			}
			onlyTheQuestion(t, e, again)
		})

		t.Run("denied device", func(t *testing.T) {
			d, r := e.enrolledDevice("alice@example.com", "SER-DENY")
			code, err := d.Authenticate(e.ctx)
			e.expect("Authenticate", code, err, 200)
			if _, err := e.app.Enrollments.Deny(e.ctx, admin, r.ID, "not ours"); err != nil {
				t.Fatal(err)
			}
			code, _, err = d.Connect(e.ctx, "Idle", "")
			e.expect("Connect after denial", code, err, 401)
			certs, _ := e.app.Store.ListCertificates(e.ctx, r.ID)
			if len(certs) != 1 || certs[0].RevokedAt == nil {
				t.Fatalf("certificates after denial: %+v", certs)
			}
			code, err = d.TokenUpdate(e.ctx)
			e.expect("TokenUpdate after denial", code, err, 401)
		})

		t.Run("malformed and huge plists", func(t *testing.T) {
			d, r := e.enrolledDevice("alice@example.com", "SER-BAD")
			for _, tc := range []struct {
				name string
				body []byte
				want int
			}{
				{"garbage", []byte("not a plist"), 400},
				{"unknown message", []byte(`<?xml version="1.0"?><plist version="1.0"><dict><key>MessageType</key><string>Frobnicate</string><key>UDID</key><string>x</string></dict></plist>`), 400},
				{"huge", []byte(strings.Repeat("A", 2<<20)), 413},
			} {
				code, err := d.SendSigned(e.ctx, d.Profile.CheckInURL, "application/x-apple-aspen-mdm-checkin", tc.body)
				e.expect(tc.name, code, err, tc.want)
			}
			code, err := d.SendSigned(e.ctx, d.Profile.CheckInURL, "application/json", []byte("{}"))
			e.expect("wrong content type", code, err, 415)
			assertUnclaimed(t, e, r.ID)
		})
	})
}

// TestTwoServersRaceForOneToken runs two server instances on one database;
// the same certificate and token arrive at both at once: exactly one claim.
func TestTwoServersRaceForOneToken(t *testing.T) {
	dsn, dataDir := storetest.DSN(t, "postgres"), t.TempDir()
	var envs [2]*env
	for i := range envs {
		envs[i] = newEnvOn(t, dsn, dataDir)
	}
	e := envs[0]
	d, r := e.enrolledDevice("alice@example.com", "SER-RACE")
	codes := make([]int, 2)
	var wg sync.WaitGroup
	for i := range envs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dd := *d
			dd.Profile.CheckInURL = strings.Replace(d.Profile.CheckInURL, e.url, envs[i].url, 1)
			if i == 1 {
				dd.UDID = "OTHER-" + d.UDID
			}
			codes[i], _ = dd.Authenticate(e.ctx)
		}()
	}
	wg.Wait()
	if (codes[0] == 200) == (codes[1] == 200) {
		t.Fatalf("codes %v: want exactly one claim", codes)
	}
	res, _ := e.app.Reservations.Get(e.ctx, r.ID)
	if res.State != enrollment.ReservationClaimed || res.ClaimAttempts != 1 {
		t.Fatalf("reservation after the race: %+v", res)
	}
}

func assertUnclaimed(t *testing.T, e *env, id string) {
	t.Helper()
	res, err := e.app.Reservations.Get(e.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if res.State == enrollment.ReservationClaimed {
		t.Fatalf("reservation %s was claimed", id)
	}
	if _, err := e.app.Enrollments.Get(e.ctx, id); !errors.Is(err, enrollment.ErrNotFound) {
		t.Fatalf("an enrollment exists for %s: %v", id, err)
	}
}

// TestRenewal: only a device whose enrollment is approved may renew its
// certificate without a challenge, and the new certificate works.
func TestRenewal(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		d, r := e.enrolledDevice("alice@example.com", "SER-RENEW")
		code, err := d.Authenticate(e.ctx)
		e.expect("Authenticate", code, err, 200)
		var scepErr *devicesim.SCEPError
		if err := d.Renew(e.ctx); !errors.As(err, &scepErr) {
			t.Fatalf("renewal while pending: %v", err)
		}
		if _, err := e.app.Enrollments.Approve(e.ctx, admin, r.ID, ""); err != nil {
			t.Fatal(err)
		}
		old := d.Cert
		if err := d.Renew(e.ctx); err != nil {
			t.Fatalf("renewal when approved: %v", err)
		}
		if d.Cert.SerialNumber.Cmp(old.SerialNumber) == 0 || d.Cert.Subject.CommonName != r.ID {
			t.Fatalf("renewed certificate: %v", d.Cert.Subject)
		}
		code, _, err = d.Connect(e.ctx, "Idle", "")
		e.expect("Connect with the renewed certificate", code, err, 200)
		certs, _ := e.app.Store.ListCertificates(e.ctx, r.ID)
		if len(certs) != 2 {
			t.Fatalf("%d certificates recorded", len(certs))
		}
		// Denied: its certificates are revoked and renewal stops.
		if _, err := e.app.Enrollments.Deny(e.ctx, admin, r.ID, "lost"); err != nil {
			t.Fatal(err)
		}
		if err := d.Renew(e.ctx); !errors.As(err, &scepErr) {
			t.Fatalf("renewal after denial: %v", err)
		}
	})
}
