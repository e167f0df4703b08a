package enrollment

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/attest"
)

// ceremony is the approval gate over the in-memory store, with a real HMAC
// signer and a clock the test moves.
type ceremony struct {
	t        *testing.T
	ctx      context.Context
	clock    *fakeClock
	keys     *keyRing
	store    *memStore
	tokens   *Tokens
	gate     *Enrollments
	notified []string
	retired  []string
}

type fixedPost struct{}

func (fixedPost) Commands(Enrollment) ([]NewCommand, error) {
	return []NewCommand{{UUID: "c1", RequestType: "DeviceInformation"}, {UUID: "c2", RequestType: "InstallProfile"}}, nil
}

func (c *ceremony) Pending(e Enrollment) { c.notified = append(c.notified, e.ID) }
func (c *ceremony) Retired(e Enrollment, reason string) {
	c.retired = append(c.retired, e.ID+":"+reason)
}

func newCeremony(t *testing.T) *ceremony {
	c := &ceremony{t: t, ctx: context.Background(), clock: &fakeClock{t0}, keys: newKeyRing("rules"), store: newMemStore()}
	c.tokens = newTestTokens(t, c.keys, "acme", c.clock)
	c.gate = NewEnrollments(c.store, c.tokens, fixedPost{}, c.clock.Now)
	c.gate.SetNotifier(c)
	for id, email := range map[string]string{aliceID: "alice@example.com", bobID: "bob@example.com"} {
		c.store.emails[id] = email
	}
	return c
}

// reserve sets aside a device ID for user and returns it with its token.
func (c *ceremony) reserve(user string) (string, string) {
	c.t.Helper()
	id := NewID()
	text, tok, err := c.tokens.Issue(c.ctx, id, user, c.clock.t.Add(time.Hour))
	if err != nil {
		c.t.Fatal(err)
	}
	c.store.reservations[id] = &memReservation{userID: user, state: ReservationOpen, nonce: tok.NonceHex(), expires: c.clock.t.Add(time.Hour)}
	return id, text
}

func claim(resID, token, udid, serial string) Claim {
	return Claim{Token: token, CertReservationID: resID, RemoteIP: "192.0.2.1", Facts: DeviceFacts{UDID: udid, Serial: serial, Model: "Mac14,9"}}
}

// enrolled claims a fresh reservation of user for the device.
func (c *ceremony) enrolled(user, udid, serial string) Enrollment {
	c.t.Helper()
	id, tok := c.reserve(user)
	e, err := c.gate.Authenticate(c.ctx, claim(id, tok, udid, serial))
	if err != nil {
		c.t.Fatalf("Authenticate: %v", err)
	}
	c.clock.t = c.clock.t.Add(time.Second)
	return e
}

const (
	aliceID = "11111111-1111-4111-8111-111111111111"
	bobID   = "22222222-2222-4222-8222-222222222222"
)

var admin = Actor{Name: "user:admin@example.com", Email: "admin@example.com"}

func TestAuthenticateRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		// arrange returns the claim to make, after any setup.
		arrange func(c *ceremony) Claim
		want    error
		check   func(t *testing.T, c *ceremony, e Enrollment)
	}{
		{"ok/first claim is pending", func(c *ceremony) Claim {
			id, tok := c.reserve(aliceID)
			return claim(id, tok, "UDID-1", "SER-1")
		}, nil, func(t *testing.T, c *ceremony, e Enrollment) {
			if e.State != StatePending || e.UserEmail != "alice@example.com" || e.ReEnrollment || e.ConflictID != "" {
				t.Fatalf("%+v", e)
			}
			if len(c.notified) != 1 || !c.store.hasAudit("enrollment.authenticate", OutcomeOK) {
				t.Fatalf("notified %v, audit %v", c.notified, c.store.auditActions())
			}
		}},
		{"ok/the same device retrying gets its enrollment back", func(c *ceremony) Claim {
			id, tok := c.reserve(aliceID)
			if _, err := c.gate.Authenticate(c.ctx, claim(id, tok, "UDID-1", "SER-1")); err != nil {
				t.Fatal(err)
			}
			return claim(id, tok, "UDID-1", "SER-1")
		}, nil, func(t *testing.T, c *ceremony, e Enrollment) {
			if len(c.notified) != 1 {
				t.Fatalf("a retry notified approvers again: %v", c.notified)
			}
		}},
		{"error/another device presents a claimed token", func(c *ceremony) Claim {
			id, tok := c.reserve(aliceID)
			if _, err := c.gate.Authenticate(c.ctx, claim(id, tok, "UDID-1", "SER-1")); err != nil {
				t.Fatal(err)
			}
			return claim(id, tok, "UDID-OTHER", "SER-1")
		}, ErrTokenClaimed, func(t *testing.T, c *ceremony, _ Enrollment) {
			for _, r := range c.store.reservations {
				if r.attempts != 1 || r.claimedUDID != "UDID-1" {
					t.Fatalf("attempts %d, claimed by %s", r.attempts, r.claimedUDID)
				}
			}
		}},
		{"error/certificate of another reservation", func(c *ceremony) Claim {
			a, _ := c.reserve(aliceID)
			_, tokB := c.reserve(bobID)
			return claim(a, tokB, "UDID-1", "SER-1")
		}, ErrCertNotForReservation, nil},
		{"error/forged token", func(c *ceremony) Claim {
			id, tok := c.reserve(aliceID)
			return claim(id, tok[:len(tok)-2]+"AA", "UDID-1", "SER-1")
		}, ErrForbidden, nil},
		{"error/a newer download replaced the token", func(c *ceremony) Claim {
			id, tok := c.reserve(aliceID)
			c.store.reservations[id].nonce = "newer"
			return claim(id, tok, "UDID-1", "SER-1")
		}, ErrTokenSuperseded, nil},
		{"error/revoked reservation", func(c *ceremony) Claim {
			id, tok := c.reserve(aliceID)
			c.store.reservations[id].state = ReservationRevoked
			return claim(id, tok, "UDID-1", "SER-1")
		}, ErrReservationNotOpen, nil},
		{"error/expired reservation", func(c *ceremony) Claim {
			id, tok := c.reserve(aliceID)
			c.store.reservations[id].expires = c.clock.t.Add(-time.Second)
			return claim(id, tok, "UDID-1", "SER-1")
		}, ErrReservationNotOpen, nil},
		{"error/no UDID", func(c *ceremony) Claim {
			id, tok := c.reserve(aliceID)
			return claim(id, tok, "", "SER-1")
		}, ErrInvalid, nil},
		{"error/an oversized fact", func(c *ceremony) Claim {
			id, tok := c.reserve(aliceID)
			return claim(id, tok, "UDID-1", strings.Repeat("S", 300))
		}, ErrInvalid, nil},
		{"error/the token signer is down", func(c *ceremony) Claim {
			id, tok := c.reserve(aliceID)
			c.keys.down = true
			return claim(id, tok, "UDID-1", "SER-1")
		}, ErrSignerUnavailable, nil},
		{"ok/the same user's device again is a re-enrollment", func(c *ceremony) Claim {
			c.enrolled(aliceID, "UDID-1", "SER-1")
			id, tok := c.reserve(aliceID)
			return claim(id, tok, "UDID-1", "SER-1")
		}, nil, func(t *testing.T, c *ceremony, e Enrollment) {
			if !e.ReEnrollment || e.PreviousID == "" || e.ConflictID != "" {
				t.Fatalf("%+v", e)
			}
		}},
		{"ok/another user's device is a conflict", func(c *ceremony) Claim {
			c.enrolled(aliceID, "UDID-1", "SER-1")
			id, tok := c.reserve(bobID)
			return claim(id, tok, "UDID-2", "SER-1")
		}, nil, func(t *testing.T, c *ceremony, e Enrollment) {
			if e.ConflictID == "" || e.ReEnrollment || !slices.Contains(e.Flags(), "claims_another_users_device") {
				t.Fatalf("%+v %v", e, e.Flags())
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCeremony(t)
			cl := tc.arrange(c)
			e, err := c.gate.Authenticate(c.ctx, cl)
			if tc.want == nil && err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("Authenticate = %v, want %v", err, tc.want)
				}
				if !errors.Is(tc.want, ErrSignerUnavailable) && (!errors.Is(err, ErrForbidden) || !c.store.hasAudit("enrollment.authenticate", OutcomeRefused)) {
					t.Fatalf("a refusal must be ErrForbidden and audited: %v, %v", err, c.store.auditActions())
				}
			}
			if tc.check != nil {
				tc.check(t, c, e)
			}
		})
	}
}

func TestDecisionRules(t *testing.T) {
	for _, tc := range []struct {
		name  string
		act   func(c *ceremony) (Enrollment, error)
		want  error
		check func(t *testing.T, c *ceremony, e Enrollment)
	}{
		{"ok/approval queues the post-approval commands and a push", func(c *ceremony) (Enrollment, error) {
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			return c.gate.Approve(c.ctx, admin, e.ID, "checked")
		}, nil, func(t *testing.T, c *ceremony, e Enrollment) {
			if e.State != StateApproved || len(c.store.commands[e.ID]) != 2 || c.store.pushes[e.ID] != 1 || !c.store.hasAudit("enrollment.approve", OutcomeOK) {
				t.Fatalf("%s, %d commands, %d pushes, %v", e.State, len(c.store.commands[e.ID]), c.store.pushes[e.ID], c.store.auditActions())
			}
		}},
		{"error/approving twice", func(c *ceremony) (Enrollment, error) {
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			if _, err := c.gate.Approve(c.ctx, admin, e.ID, ""); err != nil {
				t.Fatal(err)
			}
			return c.gate.Approve(c.ctx, admin, e.ID, "")
		}, ErrConflict, nil},
		{"error/unknown enrollment", func(c *ceremony) (Enrollment, error) {
			return c.gate.Approve(c.ctx, admin, NewID(), "")
		}, ErrNotFound, nil},
		{"error/malformed ID", func(c *ceremony) (Enrollment, error) {
			return c.gate.Approve(c.ctx, admin, "../etc", "")
		}, ErrNotFound, nil},
		{"error/a note over 2000 characters", func(c *ceremony) (Enrollment, error) {
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			return c.gate.Approve(c.ctx, admin, e.ID, strings.Repeat("n", 2001))
		}, ErrInvalid, nil},
		{"error/denial without a reason", func(c *ceremony) (Enrollment, error) {
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			return c.gate.Deny(c.ctx, admin, e.ID, "  ")
		}, ErrInvalid, nil},
		{"ok/denial revokes the certificates", func(c *ceremony) (Enrollment, error) {
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			return c.gate.Deny(c.ctx, admin, e.ID, "not ours")
		}, nil, func(t *testing.T, c *ceremony, e Enrollment) {
			if e.State != StateDenied || c.store.revoked[e.ID] == "" || len(c.store.commands[e.ID]) != 0 {
				t.Fatalf("%s, revoked %q", e.State, c.store.revoked[e.ID])
			}
		}},
		{"ok/denying an approved enrollment is a revocation", func(c *ceremony) (Enrollment, error) {
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			if _, err := c.gate.Approve(c.ctx, admin, e.ID, ""); err != nil {
				t.Fatal(err)
			}
			return c.gate.Deny(c.ctx, admin, e.ID, "lost")
		}, nil, func(t *testing.T, c *ceremony, e Enrollment) {
			if e.State != StateDenied || c.store.revoked[e.ID] == "" || !c.store.hasAudit("enrollment.revoke", OutcomeOK) {
				t.Fatalf("%s %v", e.State, c.store.auditActions())
			}
		}},
		{"error/denying a denied enrollment", func(c *ceremony) (Enrollment, error) {
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			if _, err := c.gate.Deny(c.ctx, admin, e.ID, "no"); err != nil {
				t.Fatal(err)
			}
			return c.gate.Deny(c.ctx, admin, e.ID, "no")
		}, ErrConflict, nil},
		{"ok/approving a re-enrollment supersedes the same user's", func(c *ceremony) (Enrollment, error) {
			old := c.enrolled(aliceID, "UDID-1", "SER-1")
			if _, err := c.gate.Approve(c.ctx, admin, old.ID, ""); err != nil {
				t.Fatal(err)
			}
			again := c.enrolled(aliceID, "UDID-1", "SER-1")
			return c.gate.Approve(c.ctx, admin, again.ID, "")
		}, nil, func(t *testing.T, c *ceremony, e Enrollment) {
			old := c.store.enrollments[e.PreviousID]
			if old.State != StateSuperseded || c.store.revoked[old.ID] == "" {
				t.Fatalf("earlier enrollment: %s", old.State)
			}
		}},
		{"ok/approving a conflict leaves the other user's device alone", func(c *ceremony) (Enrollment, error) {
			alice := c.enrolled(aliceID, "UDID-1", "SER-1")
			if _, err := c.gate.Approve(c.ctx, admin, alice.ID, ""); err != nil {
				t.Fatal(err)
			}
			bob := c.enrolled(bobID, "UDID-1", "SER-1")
			return c.gate.Approve(c.ctx, admin, bob.ID, "")
		}, nil, func(t *testing.T, c *ceremony, e Enrollment) {
			alice := c.store.enrollments[e.ConflictID]
			if alice.State != StateApproved || c.store.revoked[alice.ID] != "" {
				t.Fatalf("Alice's enrollment: %s, revoked %q", alice.State, c.store.revoked[alice.ID])
			}
		}},
		{"error/nobody approves their own enrollment", func(c *ceremony) (Enrollment, error) {
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			return c.gate.Approve(c.ctx, Actor{Name: "user:alice@example.com", Email: "Alice@Example.com"}, e.ID, "")
		}, ErrForbidden, nil},
		{"ok/an explicit self-approval is audited as one", func(c *ceremony) (Enrollment, error) {
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			return c.gate.Approve(c.ctx, Actor{Name: "cli:root as alice@example.com", Email: "alice@example.com", SelfApproval: true}, e.ID, "")
		}, nil, func(t *testing.T, c *ceremony, e Enrollment) {
			if e.State != StateApproved || !c.store.hasAudit("enrollment.self_approve", OutcomeOK) || c.store.hasAudit("enrollment.approve", OutcomeOK) {
				t.Fatalf("%s %v", e.State, c.store.auditActions())
			}
		}},
		{"ok/one may deny one's own enrollment", func(c *ceremony) (Enrollment, error) {
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			return c.gate.Deny(c.ctx, Actor{Name: "user:alice@example.com", Email: "alice@example.com"}, e.ID, "not mine after all")
		}, nil, nil},
		{"ok/retire is its own decision and tells the owner", func(c *ceremony) (Enrollment, error) {
			alice := c.enrolled(aliceID, "UDID-1", "SER-1")
			if _, err := c.gate.Approve(c.ctx, admin, alice.ID, ""); err != nil {
				t.Fatal(err)
			}
			return c.gate.Retire(c.ctx, admin, alice.ID, "handed over to Bob")
		}, nil, func(t *testing.T, c *ceremony, e Enrollment) {
			if e.State != StateSuperseded || c.store.revoked[e.ID] == "" || len(c.retired) != 1 || !c.store.hasAudit("enrollment.retire", OutcomeOK) {
				t.Fatalf("%s, told %v, %v", e.State, c.retired, c.store.auditActions())
			}
		}},
		{"error/retire without a reason", func(c *ceremony) (Enrollment, error) {
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			return c.gate.Retire(c.ctx, admin, e.ID, "")
		}, ErrInvalid, nil},
		{"error/retire a denied enrollment", func(c *ceremony) (Enrollment, error) {
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			if _, err := c.gate.Deny(c.ctx, admin, e.ID, "no"); err != nil {
				t.Fatal(err)
			}
			return c.gate.Retire(c.ctx, admin, e.ID, "x")
		}, ErrConflict, nil},
		{"ok/this wasn't me denies a pending enrollment", func(c *ceremony) (Enrollment, error) {
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			return c.gate.NotMe(c.ctx, Actor{Name: "user:alice@example.com"}, aliceID, e.ID)
		}, nil, func(t *testing.T, c *ceremony, e Enrollment) {
			if e.State != StateDenied || !e.Suspicious || c.store.revoked[e.ID] == "" {
				t.Fatalf("%+v", e)
			}
		}},
		{"ok/this wasn't me flags an approved enrollment for admins", func(c *ceremony) (Enrollment, error) {
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			if _, err := c.gate.Approve(c.ctx, admin, e.ID, ""); err != nil {
				t.Fatal(err)
			}
			return c.gate.NotMe(c.ctx, Actor{Name: "user:alice@example.com"}, aliceID, e.ID)
		}, nil, func(t *testing.T, c *ceremony, e Enrollment) {
			if e.State != StateApproved || !e.Suspicious {
				t.Fatalf("%+v", e)
			}
		}},
		{"error/only the owner says this wasn't me", func(c *ceremony) (Enrollment, error) {
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			return c.gate.NotMe(c.ctx, Actor{Name: "user:bob@example.com"}, bobID, e.ID)
		}, ErrNotFound, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCeremony(t)
			e, err := tc.act(c)
			if tc.want == nil && err != nil {
				t.Fatal(err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.check != nil {
				tc.check(t, c, e)
			}
		})
	}
}

func TestPushInfoAndSeen(t *testing.T) {
	c := newCeremony(t)
	e := c.enrolled(aliceID, "UDID-1", "SER-1")
	if err := c.gate.TokenUpdate(c.ctx, e.ID, PushInfo{Token: "ab", Magic: "m"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("push info without a topic: %v", err)
	}
	if err := c.gate.TokenUpdate(c.ctx, e.ID, PushInfo{Token: "ab", Magic: "m", Topic: "t"}); err != nil {
		t.Fatal(err)
	}
	e, _ = c.gate.Get(c.ctx, e.ID)
	if err := c.gate.Seen(c.ctx, e.ID, e.LastSeenAt); err != nil {
		t.Fatal(err)
	}
	e, _ = c.gate.Get(c.ctx, e.ID)
	c.clock.t = c.clock.t.Add(30 * time.Second)
	if err := c.gate.Seen(c.ctx, e.ID, e.LastSeenAt); err != nil || c.store.touched != 1 {
		t.Fatalf("a check-in within a minute wrote again: %d writes", c.store.touched)
	}
	c.clock.t = c.clock.t.Add(31 * time.Second)
	if err := c.gate.Seen(c.ctx, e.ID, e.LastSeenAt); err != nil || c.store.touched != 2 {
		t.Fatalf("a check-in after a minute: %d writes", c.store.touched)
	}
}

func TestJudgeClaimMiss(t *testing.T) {
	for _, tc := range []struct {
		name string
		snap ClaimSnapshot
		want ClaimMiss
	}{
		{"retry", ClaimSnapshot{State: ReservationClaimed, TokenNonce: "n", ClaimedUDID: "u"}, MissRetry},
		{"another device", ClaimSnapshot{State: ReservationClaimed, TokenNonce: "n", ClaimedUDID: "v"}, MissClaimedByAnother},
		{"newer download wins over claimed", ClaimSnapshot{State: ReservationClaimed, TokenNonce: "newer", ClaimedUDID: "u"}, MissSuperseded},
		{"revoked", ClaimSnapshot{State: ReservationRevoked, TokenNonce: "n"}, MissNotOpen},
		{"open but missed (expired)", ClaimSnapshot{State: ReservationOpen, TokenNonce: "n"}, MissNotOpen},
	} {
		if got := JudgeClaimMiss(tc.snap, "n", "u"); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if MissRetry.Err() != nil || !errors.Is(MissClaimedByAnother.Err(), ErrTokenClaimed) || !errors.Is(MissSuperseded.Err(), ErrTokenSuperseded) ||
		!errors.Is(MissNotOpen.Err(), ErrReservationNotOpen) {
		t.Error("a miss maps to the wrong refusal")
	}
}

func TestTransition(t *testing.T) {
	for _, tc := range []struct {
		current, to State
		from        State
		op          string
		err         error
	}{
		{StatePending, StateApproved, StatePending, "approve", nil},
		{StatePending, StateDenied, StatePending, "deny", nil},
		{StateApproved, StateDenied, StateApproved, "revoke", nil},
		{StateApproved, StateApproved, "", "approve", ErrConflict},
		{StateDenied, StateDenied, "", "deny", ErrConflict},
		{StateSuperseded, StateApproved, "", "approve", ErrConflict},
		{StatePending, StateSuperseded, "", "decide", ErrInvalid},
	} {
		from, op, err := Transition(tc.current, tc.to)
		if from != tc.from || op != tc.op || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("%s → %s: %s %s %v", tc.current, tc.to, from, op, err)
		}
	}
}

// fakeVerifier returns a fixed result or error.
type fakeVerifier struct {
	r   attest.Result
	err error
}

func (f fakeVerifier) Verify([][]byte, []byte) (attest.Result, error) { return f.r, f.err }

func TestJudgeAttestation(t *testing.T) {
	claimed := DeviceFacts{UDID: "UDID-1", Serial: "SER-1"}
	ok := attest.Result{Serial: "SER-1", UDID: "UDID-1", OSVersion: "15.1", Fresh: true}
	answered := AttestationAnswer{Status: "Acknowledged", Answered: true, Chain: [][]byte{{1}}}
	for _, tc := range []struct {
		name string
		v    fakeVerifier
		a    AttestationAnswer
		want AttestationStatus
	}{
		{"fresh and matching", fakeVerifier{r: ok}, answered, AttestFresh},
		{"matching, case aside", fakeVerifier{r: attest.Result{Serial: "ser-1", UDID: "udid-1", Fresh: true}}, answered, AttestFresh},
		{"cached", fakeVerifier{r: attest.Result{Serial: "SER-1", UDID: "UDID-1"}}, answered, AttestCached},
		{"another serial", fakeVerifier{r: attest.Result{Serial: "SER-2", UDID: "UDID-1", Fresh: true}}, answered, AttestMismatch},
		{"another UDID", fakeVerifier{r: attest.Result{Serial: "SER-1", UDID: "UDID-2", Fresh: true}}, answered, AttestMismatch},
		{"a cached answer of another device is a mismatch, not cached", fakeVerifier{r: attest.Result{Serial: "SER-2", UDID: "UDID-2"}}, answered, AttestMismatch},
		{"stale", fakeVerifier{err: attest.ErrStale}, answered, AttestStale},
		{"invalid chain", fakeVerifier{err: attest.ErrInvalidChain}, answered, AttestInvalid},
		{"incomplete", fakeVerifier{err: attest.ErrIncomplete}, answered, AttestInvalid},
		{"the device refused", fakeVerifier{r: ok}, AttestationAnswer{Status: "Error"}, AttestRefused},
		{"no attestation in the answer", fakeVerifier{r: ok}, AttestationAnswer{Status: "Acknowledged"}, AttestUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := JudgeAttestation(tc.v, tc.a, []byte("nonce"), claimed)
			if got.Status != tc.want {
				t.Fatalf("%q (%s), want %q", got.Status, got.Reason, tc.want)
			}
			if got.Attested() != (tc.want == AttestFresh) || got.AttestedNotFresh() != (tc.want == AttestCached) {
				t.Fatal("Attested disagrees with the status: only a fresh answer is attested for this enrollment")
			}
		})
	}
}

func TestAttestationIsAskedAndJudged(t *testing.T) {
	c := newCeremony(t)
	c.gate.SetAttestation(questions{}, fakeVerifier{r: attest.Result{Serial: "SER-1", UDID: "UDID-1", Fresh: true}}, false)
	e := c.enrolled(aliceID, "UDID-1", "SER-1")
	if e.Attestation.Status != AttestAsked || len(c.store.questions) != 1 || c.store.enrollments[e.ID].AttestNonce == "" {
		t.Fatalf("a new enrollment was not asked: %+v, %d questions", e.Attestation, len(c.store.questions))
	}
	snap := c.store.snapshot(e.ID)
	// A report for another command is not the answer.
	if e, _ := c.gate.Attest(c.ctx, snap, AttestationAnswer{Status: "Acknowledged", Answered: true, CommandUUID: "another"}); e.Attestation.Status != AttestAsked {
		t.Fatalf("a report for another command was judged: %+v", e.Attestation)
	}
	e, err := c.gate.Attest(c.ctx, snap, AttestationAnswer{Status: "Acknowledged", Answered: true, Chain: [][]byte{{1}}, CommandUUID: snap.AttestCommand})
	if err != nil || e.Attestation.Status != AttestFresh || !c.store.hasAudit("enrollment.attest", OutcomeOK) {
		t.Fatalf("%v %+v %v", err, e.Attestation, c.store.auditActions())
	}
	// Judged once: a second answer to the same question changes nothing,
	// even from a stale view of the enrollment.
	c.gate.SetAttestation(questions{}, fakeVerifier{err: attest.ErrInvalidChain}, false)
	if e, err := c.gate.Attest(c.ctx, snap, AttestationAnswer{Status: "Acknowledged", Answered: true, CommandUUID: snap.AttestCommand}); err != nil ||
		e.Attestation.Status != AttestFresh {
		t.Fatalf("a second answer changed the verdict: %v %+v", err, e.Attestation)
	}
	// A retried claim does not ask twice.
	q, err := c.gate.question(snap.ID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c.store.mu.Lock()
	c.store.ask(snap.ID, q)
	c.store.mu.Unlock()
	if again := c.store.snapshot(snap.ID); again.AttestNonce != snap.AttestNonce || len(c.store.questions) != 1 {
		t.Fatalf("asked twice: %d questions", len(c.store.questions))
	}
	// Attestation never approves.
	if c.store.enrollments[e.ID].State != StatePending {
		t.Fatal("an attested enrollment changed state")
	}
}

type questions struct{}

func (questions) AttestationQuestion(nonce []byte) (NewCommand, error) {
	return NewCommand{UUID: NewID(), RequestType: "DeviceInformation", Body: nonce}, nil
}

// TestRequireAttestation: the policy only makes approval stricter: an
// unattested enrollment needs an admin and a written reason, audited as
// such; an attested one is approved as usual.
func TestRequireAttestation(t *testing.T) {
	adminActor := Actor{Name: "user:root@example.com", Email: "root@example.com", Admin: true}
	approverActor := Actor{Name: "user:ann@example.com", Email: "ann@example.com"}
	for _, tc := range []struct {
		name     string
		attested bool
		actor    Actor
		note     string
		want     error
		action   string
	}{
		{"error/unattested, approver", false, approverActor, "looks fine", ErrForbidden, ""},
		{"error/unattested, admin without a reason", false, adminActor, " ", ErrForbidden, ""},
		{"ok/unattested, admin with a reason", false, adminActor, "old iPad, checked in person", nil, "enrollment.approve_unattested"},
		{"ok/attested, approver", true, approverActor, "", nil, "enrollment.approve"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCeremony(t)
			verdict := attest.Result{Serial: "SER-1", UDID: "UDID-1", Fresh: true}
			c.gate.SetAttestation(questions{}, fakeVerifier{r: verdict}, true)
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			if tc.attested {
				var err error
				snap := c.store.snapshot(e.ID)
				if e, err = c.gate.Attest(c.ctx, snap, AttestationAnswer{Status: "Acknowledged", Answered: true, CommandUUID: snap.AttestCommand}); err != nil {
					t.Fatal(err)
				}
			}
			_, err := c.gate.Approve(c.ctx, tc.actor, e.ID, tc.note)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Approve = %v, want %v", err, tc.want)
			}
			if tc.action != "" && !c.store.hasAudit(tc.action, OutcomeOK) {
				t.Fatalf("audit %v lacks %s", c.store.auditActions(), tc.action)
			}
		})
	}
}
