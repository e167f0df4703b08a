package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/attest/attesttest"
	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
	"github.com/vestibule-mdm/vestibule/server"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

// TestAttestation: every pending device is asked for Managed Device
// Attestation with a fresh nonce; an honest answer from a chain the server
// trusts shows as attested, and each lie shows with its reason, never as
// attested. (The server trusts a test root here; deployments trust only
// Apple's, which no configuration changes.)
func TestAttestation(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		now := time.Now()
		ca, err := attesttest.NewCA("Test", now)
		if err != nil {
			t.Fatal(err)
		}
		foreign, err := attesttest.NewCA("Foreign", now)
		if err != nil {
			t.Fatal(err)
		}
		e := newEnvWith(t, dialect, []server.Option{server.WithAttestationRoots(ca.Pool())})
		viewer := e.token(enrollment.RoleViewer)

		honest := func(d *devicesim.Device) func([]byte) ([][]byte, error) {
			return func(nonce []byte) ([][]byte, error) {
				return ca.Chain(attesttest.Leaf{Serial: d.Serial, UDID: d.UDID, OSVersion: "15.1", SEPOSVersion: "22.1", Nonce: nonce}, now)
			}
		}
		for _, tc := range []struct {
			name   string
			serial string
			answer func(d *devicesim.Device) func([]byte) ([][]byte, error)
			status enrollment.AttestationStatus
			reason string
		}{
			{"fresh and matching", "C02ATTEST001", honest, enrollment.AttestFresh, ""},
			{"another serial than claimed", "C02ATTEST002", func(d *devicesim.Device) func([]byte) ([][]byte, error) {
				return func(nonce []byte) ([][]byte, error) {
					return ca.Chain(attesttest.Leaf{Serial: "C02SOMEONEELSE", UDID: d.UDID, Nonce: nonce}, now)
				}
			}, enrollment.AttestMismatch, "serial"},
			{"a cached answer for an older nonce", "C02ATTEST003", func(d *devicesim.Device) func([]byte) ([][]byte, error) {
				return func([]byte) ([][]byte, error) {
					return ca.Chain(attesttest.Leaf{Serial: d.Serial, UDID: d.UDID, Nonce: []byte("older"), NotBefore: now.Add(-48 * time.Hour)}, now)
				}
			}, enrollment.AttestCached, "not fresh"},
			{"a stale answer", "C02ATTEST004", func(d *devicesim.Device) func([]byte) ([][]byte, error) {
				return func([]byte) ([][]byte, error) {
					return ca.Chain(attesttest.Leaf{Serial: d.Serial, UDID: d.UDID, Nonce: []byte("older"), NotBefore: now.Add(-9 * 24 * time.Hour)}, now)
				}
			}, enrollment.AttestStale, "stale"},
			{"a foreign root", "C02ATTEST005", func(d *devicesim.Device) func([]byte) ([][]byte, error) {
				return func(nonce []byte) ([][]byte, error) {
					return foreign.Chain(attesttest.Leaf{Serial: d.Serial, UDID: d.UDID, Nonce: nonce}, now)
				}
			}, enrollment.AttestInvalid, "does not verify"},
			{"an expired leaf", "C02ATTEST006", func(d *devicesim.Device) func([]byte) ([][]byte, error) {
				return func(nonce []byte) ([][]byte, error) {
					return ca.Chain(attesttest.Leaf{Serial: d.Serial, UDID: d.UDID, Nonce: nonce, NotBefore: now.Add(-72 * time.Hour),
						NotAfter: now.Add(-time.Hour)}, now)
				}
			}, enrollment.AttestInvalid, "does not verify"},
			{"missing extensions", "C02ATTEST007", func(d *devicesim.Device) func([]byte) ([][]byte, error) {
				return func(nonce []byte) ([][]byte, error) {
					return ca.Chain(attesttest.Leaf{Omit: true, Nonce: nonce}, now)
				}
			}, enrollment.AttestInvalid, "lacks"},
			{"garbage", "C02ATTEST008", func(*devicesim.Device) func([]byte) ([][]byte, error) {
				return func([]byte) ([][]byte, error) { return [][]byte{[]byte("not a certificate")}, nil }
			}, enrollment.AttestInvalid, "malformed"},
			{"an OS without attestation", "C02ATTEST009", nil, enrollment.AttestUnsupported, "OS too old"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				d, r := e.enrolledDevice("alice@example.com", tc.serial)
				if tc.answer != nil {
					d.Attest = tc.answer(d)
				}
				code, err := d.Authenticate(e.ctx)
				e.expect("Authenticate", code, err, 200)
				if a := e.enrollment(r.ID).Attestation; a.Status != enrollment.AttestAsked {
					t.Fatalf("a new pending enrollment is %q, not asked", a.Status)
				}
				onlyTheQuestion(t, e, d)
				got := e.enrollment(r.ID)
				a := got.Attestation
				if a.Status != tc.status || !strings.Contains(a.Reason, tc.reason) {
					t.Fatalf("attestation %q (%s), want %q (%s)", a.Status, a.Reason, tc.status, tc.reason)
				}
				if a.Attested() != (tc.status == enrollment.AttestFresh) {
					t.Fatalf("%q counted as attested: %v", a.Status, a.Attested())
				}
				if tc.status == enrollment.AttestFresh && (a.Serial != tc.serial || a.UDID != d.UDID || a.OSVersion != "15.1") {
					t.Fatalf("attested facts: %+v", a)
				}
				if tc.status == enrollment.AttestMismatch && !strings.Contains(strings.Join(got.Flags(), ","), "attestation_mismatch") {
					t.Fatalf("a mismatch is not flagged: %v", got.Flags())
				}
				events, _ := e.app.Store.ListAudit(e.ctx, enrollment.AuditFilter{Action: "enrollment.attest", TargetID: r.ID})
				if len(events) != 1 || !strings.HasPrefix(events[0].Detail, string(tc.status)) {
					t.Fatalf("audit of the verification: %+v", events)
				}
				_, body := e.api(viewer, "GET", "/api/v1/enrollments/"+r.ID, "")
				var v struct {
					Attestation struct{ Status, Serial string }
				}
				if err := json.Unmarshal([]byte(body), &v); err != nil || v.Attestation.Status != string(tc.status) {
					t.Fatalf("API attestation: %s", body)
				}
			})
		}

		t.Run("a chain captured from another enrollment is not fresh", func(t *testing.T) {
			// Alice's device answers honestly; Bob's enrollment claims her
			// device's identifiers and replays her answer.
			alice, _ := e.enrolledDevice("alice@example.com", "C02REPLAYED1")
			var captured [][]byte
			alice.Attest = func(nonce []byte) ([][]byte, error) {
				chain, err := honest(alice)(nonce)
				captured = chain
				return chain, err
			}
			code, err := alice.Authenticate(e.ctx)
			e.expect("Authenticate", code, err, 200)
			onlyTheQuestion(t, e, alice)
			bob, rb := e.enrolledDevice("bob@example.com", "C02REPLAYED1")
			bob.UDID = alice.UDID
			bob.Attest = func([]byte) ([][]byte, error) { return captured, nil }
			code, err = bob.Authenticate(e.ctx)
			e.expect("Authenticate", code, err, 200)
			onlyTheQuestion(t, e, bob)
			if a := e.enrollment(rb.ID).Attestation; a.Status != enrollment.AttestCached || a.Attested() {
				t.Fatalf("a replayed answer: %q attested=%v", a.Status, a.Attested())
			}
		})

		t.Run("NotNow defers the question to the next session", func(t *testing.T) {
			d, _ := e.enrolledDevice("alice@example.com", "C02NOTNOW001")
			code, err := d.Authenticate(e.ctx)
			e.expect("Authenticate", code, err, 200)
			code, cmd, err := d.Connect(e.ctx, "Idle", "")
			e.expect("Connect", code, err, 200)
			if cmd == nil {
				t.Fatal("no question")
			}
			code, again, err := d.Connect(e.ctx, "NotNow", cmd.UUID)
			e.expect("NotNow", code, err, 200)
			if again != nil {
				t.Fatalf("the deferred question came straight back: %s", again.UUID)
			}
			code, again, err = d.Connect(e.ctx, "Idle", "")
			e.expect("Idle", code, err, 200)
			if again == nil || again.UUID != cmd.UUID {
				t.Fatalf("the next session did not ask again: %+v", again)
			}
		})

		t.Run("re-enrollment asks again with a new nonce", func(t *testing.T) {
			d, r := e.enrolledDevice("alice@example.com", "C02ATTEST010")
			var nonces [][]byte
			d.Attest = func(nonce []byte) ([][]byte, error) {
				nonces = append(nonces, nonce)
				return honest(d)(nonce)
			}
			code, err := d.Authenticate(e.ctx)
			e.expect("Authenticate", code, err, 200)
			onlyTheQuestion(t, e, d)
			if _, err := e.app.Enrollments.Approve(e.ctx, admin, r.ID, ""); err != nil {
				t.Fatal(err)
			}
			again, r2 := e.enrolledDevice("alice@example.com", "C02ATTEST010")
			again.UDID, again.Attest = d.UDID, d.Attest
			code, err = again.Authenticate(e.ctx)
			e.expect("re-enrollment Authenticate", code, err, 200)
			if a := e.enrollment(r2.ID).Attestation; a.Status != enrollment.AttestAsked {
				t.Fatalf("the re-enrollment carried over %q", a.Status)
			}
			onlyTheQuestion(t, e, again)
			if len(nonces) != 2 || string(nonces[0]) == string(nonces[1]) {
				t.Fatalf("nonces: %x", nonces)
			}
			if a := e.enrollment(r2.ID).Attestation; a.Status != enrollment.AttestFresh {
				t.Fatalf("re-enrollment: %q %s", a.Status, a.Reason)
			}
		})
	})
}

// TestAttestationInTheQueue shows the queue with one attested and one
// mismatched device in a real browser and keeps the screenshot.
func TestAttestationInTheQueue(t *testing.T) {
	ctx := newBrowser(t)
	dir := screenshotDir(t)
	now := time.Now()
	ca, err := attesttest.NewCA("Test", now)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, "sqlite", []server.Option{server.WithAttestationRoots(ca.Pool())})
	e.passwordUser(enrollment.UserInput{Email: "approver@example.com", Role: enrollment.RoleApprover})
	for _, tc := range []struct{ owner, serial, attested, name string }{
		{"alice@example.com", "C02HONESTMAC", "C02HONESTMAC", "Alice's MacBook Pro"},
		{"bob@example.com", "C02CLAIMEDMAC", "C02OTHERMAC99", "Bob's MacBook Air"},
	} {
		d, _ := e.enrolledDevice(tc.owner, tc.serial)
		d.DeviceName = tc.name
		d.Attest = func(nonce []byte) ([][]byte, error) {
			return ca.Chain(attesttest.Leaf{Serial: tc.attested, UDID: d.UDID, OSVersion: "15.1", Nonce: nonce}, now)
		}
		code, err := d.Authenticate(e.ctx)
		e.expect("Authenticate", code, err, 200)
		onlyTheQuestion(t, e, d)
	}
	if err := signIn(ctx, e.url+"/console/pending", "approver@example.com"); err != nil {
		t.Fatal(err)
	}
	text := textOf(t, ctx, `main`)
	for _, want := range []string{"attested by Apple", "C02HONESTMAC", "attestation mismatch", `serial: claimed "C02CLAIMEDMAC", attested "C02OTHERMAC99"`} {
		if !strings.Contains(text, want) {
			t.Errorf("the queue lacks %q:\n%s", want, text)
		}
	}
	shot(t, ctx, dir, "console-pending-attestation.png")
	t.Logf("screenshot in %s", dir)
}

// TestRequireAttestationPolicy: with approval.require_attestation, an
// unattested device is approved only by an admin with a written reason,
// audited; an attested one as usual.
func TestRequireAttestationPolicy(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		now := time.Now()
		ca, err := attesttest.NewCA("Test", now)
		if err != nil {
			t.Fatal(err)
		}
		e := newEnvWith(t, dialect, []server.Option{server.WithAttestationRoots(ca.Pool())}, func(c *config.Config) {
			c.Approval.RequireAttestation = true
		})
		approver, adminToken := e.token(enrollment.RoleApprover), e.token(enrollment.RoleAdmin)

		old, ro := e.enrolledDevice("alice@example.com", "C02OLDIPAD01")
		code, err := old.Authenticate(e.ctx)
		e.expect("Authenticate", code, err, 200)
		onlyTheQuestion(t, e, old) // answered without attestation: unsupported
		for _, tc := range []struct {
			name, token, body string
			want              int
		}{
			{"approver", approver, `{"note":"looks fine"}`, 403},
			{"admin without a reason", adminToken, ``, 403},
			{"admin with a reason", adminToken, `{"note":"old iPad, checked in person"}`, 200},
		} {
			if code, body := e.api(tc.token, "POST", "/api/v1/enrollments/"+ro.ID+"/approve", tc.body); code != tc.want {
				t.Fatalf("%s: %d %s, want %d", tc.name, code, body, tc.want)
			}
		}
		events, _ := e.app.Store.ListAudit(e.ctx, enrollment.AuditFilter{Action: "enrollment.approve_unattested", TargetID: ro.ID})
		if len(events) != 1 || events[0].Detail != "old iPad, checked in person" {
			t.Fatalf("the override is not audited: %+v", events)
		}

		d, r := e.enrolledDevice("alice@example.com", "C02ATTESTED9")
		d.Attest = func(nonce []byte) ([][]byte, error) {
			return ca.Chain(attesttest.Leaf{Serial: d.Serial, UDID: d.UDID, Nonce: nonce}, now)
		}
		code, err = d.Authenticate(e.ctx)
		e.expect("Authenticate", code, err, 200)
		onlyTheQuestion(t, e, d)
		if code, body := e.api(approver, "POST", "/api/v1/enrollments/"+r.ID+"/approve", ""); code != 200 {
			t.Fatalf("attested device: %d %s", code, body)
		}
	})
}
