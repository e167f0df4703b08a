package vaultkey_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/testvault"
	"github.com/vestibule-mdm/vestibule/vaultkey"
)

func newSigner(t testing.TB, srv *testvault.Server, mut func(*vaultkey.TransitConfig)) *vaultkey.TransitSigner {
	t.Helper()
	cfg := vaultkey.TransitConfig{Address: srv.Addr, Key: "vestibule-token", TokenFile: srv.TokenFile(srv.RootToken),
		Timeout: 2 * time.Second, BreakerFailures: 3, BreakerCoolDown: 300 * time.Millisecond}
	if mut != nil {
		mut(&cfg)
	}
	s, err := vaultkey.NewTransitSigner(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestTransitRoundTripAndRotation(t *testing.T) {
	ctx := context.Background()
	srv := testvault.Start(t)
	s := newSigner(t, srv, nil)
	info, err := s.EnsureKey(ctx)
	if err != nil || info.Type != "hmac" || info.LatestVersion != 1 {
		t.Fatalf("ensure key: %+v %v", info, err)
	}
	if again, err := s.EnsureKey(ctx); err != nil || again.LatestVersion != 1 {
		t.Fatalf("ensure key again: %+v %v", again, err)
	}
	tokens, err := enrollment.NewTokens(s, "acme", time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	old, tok, err := tokens.Issue(ctx, enrollment.NewID(), enrollment.NewID(), time.Now().Add(time.Hour))
	if err != nil || tok.KeyVersion != 1 {
		t.Fatalf("issue: %+v %v", tok, err)
	}
	if _, err := tokens.Verify(ctx, old); err != nil {
		t.Fatalf("verify: %v", err)
	}
	raw := []byte(old)
	raw[len(raw)-3] ^= 1
	if _, err := tokens.Verify(ctx, string(raw)); !errors.Is(err, enrollment.ErrBadMAC) && !errors.Is(err, enrollment.ErrTokenMalformed) {
		t.Fatalf("tampered token: %v", err)
	}

	if info, err = s.Rotate(ctx); err != nil || info.LatestVersion != 2 {
		t.Fatalf("rotate: %+v %v", info, err)
	}
	fresh, tok2, err := tokens.Issue(ctx, enrollment.NewID(), enrollment.NewID(), time.Now().Add(time.Hour))
	if err != nil || tok2.KeyVersion != 2 {
		t.Fatalf("issue after rotation: %+v %v", tok2, err)
	}
	for _, text := range []string{old, fresh} {
		if _, err := tokens.Verify(ctx, text); err != nil {
			t.Fatalf("verify after rotation: %v", err)
		}
	}
	// Retire version 1: its tokens stop verifying.
	if _, err := srv.Client().Logical().Write("transit/keys/vestibule-token/config", map[string]any{"min_decryption_version": 2}); err != nil {
		t.Fatal(err)
	}
	s2 := newSigner(t, srv, nil) // no cached verification
	tokens2, _ := enrollment.NewTokens(s2, "acme", time.Minute, nil)
	if _, err := tokens2.Verify(ctx, old); !errors.Is(err, enrollment.ErrBadMAC) {
		t.Fatalf("token below min_decryption_version: %v", err)
	}
	if _, err := tokens2.Verify(ctx, fresh); err != nil {
		t.Fatalf("current token: %v", err)
	}
	// A version Vault never had is a bad MAC, not an outage.
	if err := s2.Verify(ctx, []byte("x"), enrollment.MAC{KeyVersion: 99, Sum: make([]byte, 32)}); !errors.Is(err, enrollment.ErrBadMAC) {
		t.Fatalf("unknown version: %v", err)
	}
}

func TestTransitClearErrors(t *testing.T) {
	ctx := context.Background()
	srv := testvault.Start(t)
	root := srv.Client()

	t.Run("error/wrong key name", func(t *testing.T) {
		s := newSigner(t, srv, func(c *vaultkey.TransitConfig) { c.Key = "no-such-key" })
		_, err := s.MAC(ctx, []byte("x"))
		if err == nil || errors.Is(err, enrollment.ErrSignerUnavailable) {
			t.Fatalf("got %v", err)
		}
		if _, err := s.KeyInfo(ctx); err == nil || !strings.Contains(err.Error(), "vestibule vault init") {
			t.Fatalf("key info: %v", err)
		}
	})
	t.Run("error/policy without the capability", func(t *testing.T) {
		s := newSigner(t, srv, nil)
		if _, err := s.EnsureKey(ctx); err != nil {
			t.Fatal(err)
		}
		// A policy that may verify but not make MACs.
		if err := root.Sys().PutPolicy("verify-only", `path "transit/verify/vestibule-token/*" { capabilities = ["update"] }`); err != nil {
			t.Fatal(err)
		}
		tok, err := root.Auth().Token().Create(&vault.TokenCreateRequest{Policies: []string{"verify-only"}})
		if err != nil {
			t.Fatal(err)
		}
		limited := newSigner(t, srv, func(c *vaultkey.TransitConfig) { c.TokenFile = srv.TokenFile(tok.Auth.ClientToken) })
		_, err = limited.MAC(ctx, []byte("x"))
		if err == nil || !strings.Contains(err.Error(), "permission denied on transit/hmac/vestibule-token/sha2-256") || !strings.Contains(err.Error(), `"update"`) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("error/bad config", func(t *testing.T) {
		for _, cfg := range []vaultkey.TransitConfig{
			{Address: srv.Addr, Key: "k"},
			{Address: srv.Addr, Key: "k", TokenFile: "t", AppRoleRoleIDFile: "r", AppRoleSecretIDFile: "s"},
			{Address: srv.Addr, Key: "a/b", TokenFile: "t"},
			{Address: srv.Addr, Key: "k", TokenFile: filepath.Join(t.TempDir(), "missing")},
		} {
			if _, err := vaultkey.NewTransitSigner(ctx, cfg); err == nil {
				t.Errorf("accepted %+v", cfg)
			}
		}
	})
}

func TestTransitAppRole(t *testing.T) {
	ctx := context.Background()
	srv := testvault.Start(t)
	root := srv.Client()
	if err := root.Sys().EnableAuthWithOptions("approle", &vault.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	policy, err := os.ReadFile("../configs/vault-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := root.Sys().PutPolicy("vestibule", string(policy)); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("transit/keys/vestibule-token", map[string]any{"type": "hmac", "key_size": 32}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/approle/role/vestibule", map[string]any{"token_policies": "vestibule", "token_ttl": "1h"}); err != nil {
		t.Fatal(err)
	}
	rid, err := root.Logical().Read("auth/approle/role/vestibule/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := root.Logical().Write("auth/approle/role/vestibule/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "role_id"), []byte(rid.Data["role_id"].(string)), 0o600)
	os.WriteFile(filepath.Join(dir, "secret_id"), []byte(sid.Data["secret_id"].(string)), 0o600)
	s := newSigner(t, srv, func(c *vaultkey.TransitConfig) {
		c.TokenFile, c.AppRoleRoleIDFile, c.AppRoleSecretIDFile = "", filepath.Join(dir, "role_id"), filepath.Join(dir, "secret_id")
	})
	mac, err := s.MAC(ctx, []byte("payload"))
	if err != nil {
		t.Fatalf("MAC with the shipped policy: %v", err)
	}
	if err := s.Verify(ctx, []byte("payload"), mac); err != nil {
		t.Fatalf("verify with the shipped policy: %v", err)
	}
	// The shipped policy allows nothing else: not reading or exporting keys.
	if _, err := s.KeyInfo(ctx); err == nil {
		t.Error("the policy lets the server read the key")
	}
}

func TestTransitOutageAndRecovery(t *testing.T) {
	ctx := context.Background()
	srv := testvault.Start(t)
	s := newSigner(t, srv, nil)
	if _, err := s.EnsureKey(ctx); err != nil {
		t.Fatal(err)
	}
	mac, err := s.MAC(ctx, []byte("p"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(ctx, []byte("p"), mac); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	// A verification seen before is answered from the cache.
	if err := s.Verify(ctx, []byte("p"), mac); err != nil {
		t.Fatalf("cached verification during an outage: %v", err)
	}
	for i := range 5 {
		start := time.Now()
		_, err := s.MAC(ctx, []byte("q"))
		if !errors.Is(err, enrollment.ErrSignerUnavailable) {
			t.Fatalf("call %d with Vault down: %v", i, err)
		}
		if i >= 3 && time.Since(start) > 50*time.Millisecond {
			t.Errorf("call %d took %v with the circuit open", i, time.Since(start))
		}
	}
	if err := s.Health(ctx); err == nil {
		t.Error("health is fine with Vault down")
	}
	srv.Restart()
	if _, err := s.EnsureKey(ctx); err != nil { // dev mode forgot the key
		t.Fatal(err)
	}
	time.Sleep(350 * time.Millisecond) // the cool-down
	if _, err := s.MAC(ctx, []byte("q")); err != nil {
		t.Fatalf("after Vault returned: %v", err)
	}
	if err := s.Health(ctx); err != nil {
		t.Fatalf("health after recovery: %v", err)
	}
}

// TestTransitLatency records verify latency through Vault next to the
// local signer's, for the issue's note; it asserts no timing.
func TestTransitLatency(t *testing.T) {
	ctx := context.Background()
	srv := testvault.Start(t)
	s := newSigner(t, srv, func(c *vaultkey.TransitConfig) { c.CacheSize = 1 })
	if _, err := s.EnsureKey(ctx); err != nil {
		t.Fatal(err)
	}
	local, _, _ := vaultkey.OpenLocalSigner(filepath.Join(t.TempDir(), "k.json"))
	measure := func(sg enrollment.Signer) (p50, p99 time.Duration) {
		var d []time.Duration
		for i := range 300 {
			msg := []byte{byte(i), byte(i >> 8)}
			mac, err := sg.MAC(ctx, msg)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := sg.Verify(ctx, msg, mac); err != nil {
				t.Fatal(err)
			}
			d = append(d, time.Since(start))
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2], d[len(d)*99/100]
	}
	vp50, vp99 := measure(s)
	lp50, lp99 := measure(local)
	t.Logf("verify latency: vault p50 %v p99 %v; local p50 %v p99 %v", vp50, vp99, lp50, lp99)
}

func BenchmarkTransitVerify(b *testing.B) {
	ctx := context.Background()
	srv := testvault.Start(b)
	s := newSigner(b, srv, func(c *vaultkey.TransitConfig) { c.CacheSize = 1 })
	if _, err := s.EnsureKey(ctx); err != nil {
		b.Fatal(err)
	}
	msgs := make([][]byte, b.N)
	macs := make([]enrollment.MAC, b.N)
	for i := range msgs {
		msgs[i] = []byte{byte(i), byte(i >> 8), byte(i >> 16)}
		macs[i], _ = s.MAC(ctx, msgs[i])
	}
	b.ResetTimer()
	for i := range msgs {
		if err := s.Verify(ctx, msgs[i], macs[i]); err != nil {
			b.Fatal(err)
		}
	}
}
