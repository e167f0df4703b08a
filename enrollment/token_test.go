package enrollment

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func newTestTokens(t *testing.T, signer Signer, org string, clock *fakeClock) *Tokens {
	t.Helper()
	tok, err := NewTokens(signer, org, 2*time.Minute, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokenRoundTrip(t *testing.T) {
	clock := &fakeClock{t0}
	tokens := newTestTokens(t, newKeyRing("a"), "acme", clock)
	res, user := NewID(), NewID()
	text, issued, err := tokens.Issue(context.Background(), res, user, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(text, "+/=") {
		t.Errorf("token is not URL-safe: %s", text)
	}
	got, err := tokens.Verify(context.Background(), text)
	if err != nil {
		t.Fatal(err)
	}
	if got != issued || got.ReservationID != res || got.UserID != user || got.OrgID != "acme" || got.KeyVersion != 1 {
		t.Errorf("got %+v, want %+v", got, issued)
	}
	other, _, _ := tokens.Issue(context.Background(), res, user, t0.Add(time.Hour))
	if other == text {
		t.Error("two tokens for one reservation are equal: nonce not random")
	}
}

func TestTokenRefusals(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{t0}
	ring := newKeyRing("a")
	tokens := newTestTokens(t, ring, "acme", clock)
	text, _, err := tokens.Issue(ctx, NewID(), NewID(), t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(text)
	enc := base64.RawURLEncoding.EncodeToString
	otherOrg := newTestTokens(t, ring, "globex", clock)
	foreignText, _, _ := otherOrg.Issue(ctx, NewID(), NewID(), t0.Add(time.Hour))
	otherKey := newTestTokens(t, newKeyRing("b"), "acme", clock)
	otherKeyText, _, _ := otherKey.Issue(ctx, NewID(), NewID(), t0.Add(time.Hour))
	v2 := append([]byte{}, raw...)
	v2[0] = 2

	for _, tc := range []struct {
		name string
		text string
		want error
	}{
		{"error/empty", "", ErrTokenMalformed},
		{"error/not base64", "!!!!" + text[4:], ErrTokenMalformed},
		{"error/padded base64", text + "==", ErrTokenMalformed},
		{"error/truncated", text[:len(text)-4], ErrTokenMalformed},
		{"error/too long", text + "AAAA", ErrTokenMalformed},
		{"error/huge", strings.Repeat("A", 100000), ErrTokenMalformed},
		{"error/unknown version", enc(v2), ErrTokenVersion},
		{"error/other organisation", foreignText, ErrTokenOrg},
		{"error/MAC from another key", otherKeyText, ErrBadMAC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tokens.Verify(ctx, tc.text)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	// Flip each bit of every byte: none of the forgeries verifies.
	for i := range raw {
		for bit := range 8 {
			forged := append([]byte{}, raw...)
			forged[i] ^= 1 << bit
			if _, err := tokens.Verify(ctx, enc(forged)); err == nil {
				t.Fatalf("token with byte %d bit %d flipped verified", i, bit)
			}
		}
	}
}

func TestTokenExpiry(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{t0}
	tokens := newTestTokens(t, newKeyRing("a"), "acme", clock)
	text, _, _ := tokens.Issue(ctx, NewID(), NewID(), t0.Add(time.Hour))
	for _, tc := range []struct {
		name string
		at   time.Time
		want error
	}{
		{"ok/just issued", t0, nil},
		{"ok/within skew after expiry", t0.Add(time.Hour + time.Minute), nil},
		{"error/past skew", t0.Add(time.Hour + 2*time.Minute), ErrTokenExpired},
		{"error/a day later", t0.Add(24 * time.Hour), ErrTokenExpired},
		{"ok/clock slightly behind", t0.Add(-time.Minute), nil},
		{"error/issued in the future", t0.Add(-5 * time.Minute), ErrTokenNotYet},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock.t = tc.at
			_, err := tokens.Verify(ctx, text)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestTokenKeyRotation(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{t0}
	ring := newKeyRing("a")
	tokens := newTestTokens(t, ring, "acme", clock)
	old, _, _ := tokens.Issue(ctx, NewID(), NewID(), t0.Add(time.Hour))
	ring.rotate()
	fresh, tok, err := tokens.Issue(ctx, NewID(), NewID(), t0.Add(time.Hour))
	if err != nil || tok.KeyVersion != 2 {
		t.Fatalf("after rotation: version %d, %v", tok.KeyVersion, err)
	}
	for _, text := range []string{old, fresh} {
		if _, err := tokens.Verify(ctx, text); err != nil {
			t.Errorf("verify after rotation: %v", err)
		}
	}
	delete(ring.keys, 1)
	if _, err := tokens.Verify(ctx, old); !errors.Is(err, ErrBadMAC) {
		t.Errorf("token of a removed key version: %v", err)
	}
	// A token relabelled with the current version does not verify either.
	raw, _ := base64.RawURLEncoding.DecodeString(old)
	raw[4] = 2
	if _, err := tokens.Verify(ctx, base64.RawURLEncoding.EncodeToString(raw)); !errors.Is(err, ErrBadMAC) {
		t.Errorf("relabelled key version: %v", err)
	}
	ring.down = true
	if _, err := tokens.Verify(ctx, fresh); !errors.Is(err, ErrSignerUnavailable) {
		t.Errorf("signer down: %v", err)
	}
}

func TestNewTokensValidates(t *testing.T) {
	if _, err := NewTokens(nil, "acme", 0, nil); err == nil {
		t.Error("nil signer accepted")
	}
	if _, err := NewTokens(newKeyRing("a"), strings.Repeat("x", 65), 0, nil); err == nil {
		t.Error("long org accepted")
	}
}

func FuzzParseToken(f *testing.F) {
	tokens, _ := NewTokens(newKeyRing("a"), "acme", time.Minute, (&fakeClock{t0}).Now)
	text, _, _ := tokens.Issue(context.Background(), NewID(), NewID(), t0.Add(time.Hour))
	f.Add(text)
	f.Add(text[:len(text)-1] + "B")
	f.Add("")
	f.Add("AQAAAAEEYWNtZQ")
	f.Fuzz(func(t *testing.T, s string) {
		tok, payload, mac, err := ParseToken(s)
		if err != nil {
			return
		}
		// Whatever parses must re-encode to the same bytes: the layout is
		// unambiguous.
		again, err := tok.payload()
		if err != nil {
			t.Fatalf("parsed token does not re-encode: %v", err)
		}
		if string(again) != string(payload) || len(mac.Sum) != macLen {
			t.Fatalf("layout is ambiguous for %q", s)
		}
		// The fuzzer cannot forge a MAC, so a token that verifies is the
		// seed itself, spelled the one way it can be.
		if _, err := tokens.Verify(context.Background(), s); err == nil {
			if base64.RawURLEncoding.EncodeToString(append(payload, mac.Sum...)) != s {
				t.Fatalf("a second spelling of a token verified: %q", s)
			}
		}
	})
}
