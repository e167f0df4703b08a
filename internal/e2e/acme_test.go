package e2e

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	smallscep "github.com/smallstep/scep"

	"github.com/vestibule-mdm/vestibule/attest/attesttest"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
	"github.com/vestibule-mdm/vestibule/server"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

// acmeDevice installs a fresh ACME profile of email on a new device.
func (e *env) acmeDevice(email, serial string) (*devicesim.Device, enrollment.Reservation) {
	e.t.Helper()
	r, sec, err := e.app.Reservations.ReserveAs(e.ctx, admin, email, enrollment.IdentityACME)
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := e.app.Profiles.MakeProfile(e.ctx, r, sec)
	if err != nil {
		e.t.Fatal(err)
	}
	d := devicesim.New(http.DefaultClient, serial)
	if err := d.Install(p); err != nil {
		e.t.Fatal(err)
	}
	if d.Profile.ACMEDirectory == "" || d.Profile.SCEPURL != "" || d.Profile.ClientIdentifier == "" {
		e.t.Fatalf("an ACME profile: %+v", d.Profile)
	}
	return d, r
}

// honest attests what a Secure Enclave would: this device's key,
// serial and UDID, fresh for the token.
func honest(ca *attesttest.CA, d *devicesim.Device, now time.Time) devicesim.ACMEAttester {
	return func(token string, key crypto.PublicKey) ([][]byte, error) {
		return ca.Chain(attesttest.Leaf{Serial: d.Serial, UDID: d.UDID, Nonce: []byte(token), Key: key, OSVersion: "17.4"}, now)
	}
}

// TestACMEEnrollment enrolls a device whose identity key is in the
// Secure Enclave: ACME with device-attest-01, pending, approved, served.
func TestACMEEnrollment(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		now := time.Now()
		ca, err := attesttest.NewCA("Test", now)
		if err != nil {
			t.Fatal(err)
		}
		e := newEnvWith(t, dialect, []server.Option{server.WithAttestationRoots(ca.Pool())})
		d, r := e.acmeDevice("alice@example.com", "C02ACME00001")
		if err := d.EnrollACME(e.ctx, devicesim.ACMEOptions{Attest: honest(ca, d, now)}); err != nil {
			t.Fatal(err)
		}
		if k, ok := d.Cert.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P384() || d.Cert.Subject.CommonName != r.ID {
			t.Fatalf("identity certificate: %T CN %s", d.Cert.PublicKey, d.Cert.Subject.CommonName)
		}
		certs, _ := e.app.Store.ListCertificates(e.ctx, r.ID)
		if len(certs) != 1 || !certs[0].HardwareBound || certs[0].AttestedSerial != "C02ACME00001" || certs[0].AttestedUDID != d.UDID {
			t.Fatalf("certificate record: %+v", certs)
		}
		code, err := d.Authenticate(e.ctx)
		e.expect("Authenticate", code, err, 200)
		code, err = d.TokenUpdate(e.ctx)
		e.expect("TokenUpdate", code, err, 200)
		en := e.enrollment(r.ID)
		if en.State != enrollment.StatePending || !en.Identity.HardwareBound || en.Identity.Serial != "C02ACME00001" {
			t.Fatalf("enrollment: %s %+v", en.State, en.Identity)
		}
		// While pending, the used ClientIdentifier orders nothing more.
		early := devicesim.New(http.DefaultClient, "C02EARLY0001")
		early.Profile = d.Profile
		var pe *devicesim.ACMEError
		if err := early.EnrollACME(e.ctx, devicesim.ACMEOptions{Attest: honest(ca, early, now)}); !errors.As(err, &pe) || pe.Step != "order" {
			t.Fatalf("a used ClientIdentifier while pending: %v", err)
		}
		onlyTheQuestion(t, e, d)
		// What the approver sees, on the queue and in the API.
		viewer := e.browser(enrollment.RoleViewer)
		if code, page := do(t, viewer, "GET", e.url+"/console/pending", nil, nil); code != 200 ||
			!strings.Contains(page, "identity key in Secure Enclave, attested by Apple") || !strings.Contains(page, "C02ACME00001") {
			t.Fatalf("the queue does not show the attested identity key: %d", code)
		}
		if code, body := e.api(e.token(enrollment.RoleViewer), "GET", "/api/v1/enrollments/"+r.ID, ""); code != 200 ||
			!strings.Contains(body, `"identity":{"hardware_bound":true,"serial":"C02ACME00001"`) {
			t.Fatalf("API: %d %s", code, body)
		}
		if _, err := e.app.Enrollments.Approve(e.ctx, admin, r.ID, "attested laptop"); err != nil {
			t.Fatal(err)
		}
		types, err := d.DrainCommands(e.ctx, 10)
		if err != nil || !strings.Contains(strings.Join(types, ","), "InstallProfile") {
			t.Fatalf("served after approval: %v %v", types, err)
		}
		// Renewal: the approved device is attested again and gets a new
		// certificate for a new Secure Enclave key, and keeps working.
		old := d.Cert
		if err := d.EnrollACME(e.ctx, devicesim.ACMEOptions{Attest: honest(ca, d, now)}); err != nil {
			t.Fatalf("renewal: %v", err)
		}
		if d.Cert.SerialNumber.Cmp(old.SerialNumber) == 0 {
			t.Fatal("renewal gave the same certificate")
		}
		code, _, err = d.Connect(e.ctx, "Idle", "")
		e.expect("Connect with the renewed identity", code, err, 200)
		stale := *d
		stale.Cert = old
		code, _, _ = stale.Connect(e.ctx, "Idle", "")
		if code != 401 {
			t.Fatalf("the certificate a renewal replaced still connects: %d", code)
		}
		// The ClientIdentifier was used: another device with the same
		// profile is no renewal, Apple attests another serial.
		thief := devicesim.New(http.DefaultClient, "C02THIEF0001")
		thief.Profile = d.Profile
		var ae *devicesim.ACMEError
		if err := thief.EnrollACME(e.ctx, devicesim.ACMEOptions{Attest: honest(ca, thief, now)}); !errors.As(err, &ae) || ae.Step != "finalize" {
			t.Fatalf("replayed ClientIdentifier on another device: %v", err)
		}
		if certs, _ := e.app.Store.ListCertificates(e.ctx, r.ID); len(certs) != 2 {
			t.Fatalf("%d certificates after the renewal and the replay, want 2", len(certs))
		}
		// Revoked: no renewal, not even for the device itself.
		if _, err := e.app.Enrollments.Deny(e.ctx, admin, r.ID, "lost"); err != nil {
			t.Fatal(err)
		}
		if err := d.EnrollACME(e.ctx, devicesim.ACMEOptions{Attest: honest(ca, d, now)}); !errors.As(err, &ae) || ae.Step != "order" {
			t.Fatalf("renewal of a revoked device: %v", err)
		}
	})
}

// TestACMELies: every lie a device can tell over ACME is refused, with a
// log line and an audit row, and never gets a certificate.
func TestACMELies(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		now := time.Now()
		ca, _ := attesttest.NewCA("Test", now)
		foreign, _ := attesttest.NewCA("Foreign", now)
		e := newEnvWith(t, dialect, []server.Option{server.WithAttestationRoots(ca.Pool())})
		otherKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		for _, tc := range []struct {
			name   string
			opts   func(d *devicesim.Device) devicesim.ACMEOptions
			step   string
			reason string
		}{
			{"a software key: no attestation", func(*devicesim.Device) devicesim.ACMEOptions { return devicesim.ACMEOptions{} },
				"challenge", "no attestation object"},
			{"a foreign root", func(d *devicesim.Device) devicesim.ACMEOptions {
				return devicesim.ACMEOptions{Attest: honest(foreign, d, now)}
			}, "challenge", "does not verify"},
			{"a stale nonce", func(d *devicesim.Device) devicesim.ACMEOptions {
				return devicesim.ACMEOptions{Attest: func(_ string, key crypto.PublicKey) ([][]byte, error) {
					return ca.Chain(attesttest.Leaf{Serial: d.Serial, UDID: d.UDID, Nonce: []byte("an older token"), Key: key}, now)
				}}
			}, "challenge", "not fresh"},
			{"no nonce", func(d *devicesim.Device) devicesim.ACMEOptions {
				return devicesim.ACMEOptions{Attest: func(token string, key crypto.PublicKey) ([][]byte, error) {
					return ca.Chain(attesttest.Leaf{Serial: d.Serial, UDID: d.UDID, OmitFreshness: true, Key: key}, now)
				}}
			}, "challenge", "lacks"},
			{"another key attested", func(d *devicesim.Device) devicesim.ACMEOptions {
				return devicesim.ACMEOptions{Attest: func(token string, _ crypto.PublicKey) ([][]byte, error) {
					return ca.Chain(attesttest.Leaf{Serial: d.Serial, UDID: d.UDID, Nonce: []byte(token), Key: otherKey.Public()}, now)
				}}
			}, "finalize", "not the key Apple attested"},
			{"a different key at finalize", func(d *devicesim.Device) devicesim.ACMEOptions {
				return devicesim.ACMEOptions{Attest: honest(ca, d, now), FinalizeKey: otherKey}
			}, "finalize", "not the key Apple attested"},
			{"another attestation format", func(d *devicesim.Device) devicesim.ACMEOptions {
				return devicesim.ACMEOptions{Attest: honest(ca, d, now), Format: "tpm"}
			}, "challenge", `not "apple"`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := e.on(t)
				d, r := e.acmeDevice("alice@example.com", "C02LIE000001")
				err := d.EnrollACME(e.ctx, tc.opts(d))
				var ae *devicesim.ACMEError
				if !errors.As(err, &ae) || ae.Step != tc.step {
					t.Fatalf("got %v, want a refusal at %s", err, tc.step)
				}
				if certs, _ := e.app.Store.ListCertificates(e.ctx, r.ID); len(certs) != 0 {
					t.Fatalf("a lie got a certificate: %+v", certs)
				}
				events, _ := e.app.Store.ListAudit(e.ctx, enrollment.AuditFilter{TargetID: r.ID})
				found := false
				for _, ev := range events {
					if ev.Outcome == enrollment.OutcomeRefused && strings.Contains(ev.Detail, tc.reason) {
						found = true
					}
				}
				if !found {
					t.Fatalf("no refused audit row saying %q: %+v", tc.reason, events)
				}
			})
		}

		t.Run("a serial other than the attested one at Authenticate", func(t *testing.T) {
			e := e.on(t)
			d, r := e.acmeDevice("alice@example.com", "C02REAL00001")
			if err := d.EnrollACME(e.ctx, devicesim.ACMEOptions{Attest: honest(ca, d, now)}); err != nil {
				t.Fatal(err)
			}
			d.Serial = "C02CLAIMED01"
			code, err := d.Authenticate(e.ctx)
			e.expect("Authenticate with another serial", code, err, 401)
			assertUnclaimed(t, e, r.ID)
		})
		t.Run("the certificate of reservation A with the token of reservation B", func(t *testing.T) {
			e := e.on(t)
			a, _ := e.acmeDevice("alice@example.com", "C02CROSS0001")
			if err := a.EnrollACME(e.ctx, devicesim.ACMEOptions{Attest: honest(ca, a, now)}); err != nil {
				t.Fatal(err)
			}
			b, rb := e.acmeDevice("alice@example.com", "C02CROSS0001")
			a.Profile.CheckInURL = b.Profile.CheckInURL
			code, err := a.Authenticate(e.ctx)
			e.expect("Authenticate across reservations", code, err, 401)
			assertUnclaimed(t, e, rb.ID)
		})
		t.Run("a Secure Enclave identity renewed over SCEP into a software key", func(t *testing.T) {
			e := e.on(t)
			d, r := e.acmeDevice("alice@example.com", "C02SWAP00001")
			if err := d.EnrollACME(e.ctx, devicesim.ACMEOptions{Attest: honest(ca, d, now)}); err != nil {
				t.Fatal(err)
			}
			code, err := d.Authenticate(e.ctx)
			e.expect("Authenticate", code, err, 200)
			if _, err := e.app.Enrollments.Approve(e.ctx, admin, r.ID, "ok"); err != nil {
				t.Fatal(err)
			}
			soft, _ := rsa.GenerateKey(rand.Reader, 2048)
			csrDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: r.ID}}, soft)
			csr, _ := x509.ParseCertificateRequest(csrDER)
			msg, err := smallscep.NewCSRRequest(csr, &smallscep.PKIMessage{MessageType: smallscep.RenewalReq,
				Recipients: []*x509.Certificate{e.app.CA.Cert}, SignerKey: d.IdentityKey, SignerCert: d.Cert})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.Post(e.url+"/scep?operation=PKIOperation", "application/x-pki-message", bytes.NewReader(msg.Raw))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if certs, _ := e.app.Store.ListCertificates(e.ctx, r.ID); len(certs) != 1 || !certs[0].HardwareBound {
				t.Fatalf("SCEP renewal of a Secure Enclave identity recorded %d certificates: %+v", len(certs), certs)
			}
		})
		t.Run("protocols do not share secrets", func(t *testing.T) {
			e := e.on(t)
			d, _ := e.acmeDevice("alice@example.com", "C02MIX000001")
			// The ACME ClientIdentifier is no SCEP challenge.
			d.Profile.SCEPURL = e.url + "/scep"
			var se *devicesim.SCEPError
			if err := d.EnrollWith(e.ctx, d.Profile.ClientIdentifier, d.Profile.CN); !errors.As(err, &se) {
				t.Fatalf("SCEP with a ClientIdentifier: %v", err)
			}
			// A SCEP profile's challenge is no ClientIdentifier.
			_, p := e.profile("alice@example.com")
			s := devicesim.New(http.DefaultClient, "C02MIX000002")
			if err := s.Install(p); err != nil {
				t.Fatal(err)
			}
			s.Profile.ACMEDirectory = e.url + "/acme/directory"
			var ae *devicesim.ACMEError
			if err := s.EnrollACME(e.ctx, devicesim.ACMEOptions{ClientIdentifier: s.Profile.Challenge, Attest: honest(ca, s, now)}); !errors.As(err, &ae) || ae.Step != "order" {
				t.Fatalf("ACME with a SCEP challenge: %v", err)
			}
		})
	})
}
