package vaultkey

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

func TestLocalSigner(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys", "hmac-keys.json")
	s, created, err := OpenLocalSigner(path)
	if err != nil || !created {
		t.Fatalf("open: created=%v %v", created, err)
	}
	for _, p := range []string{path, filepath.Dir(path)} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s: mode %v, %v", p, fi.Mode().Perm(), err)
		}
	}
	msg := []byte("payload")
	mac1, _ := s.MAC(ctx, msg)
	if mac1.KeyVersion != 1 || len(mac1.Sum) != 32 {
		t.Fatalf("mac: %+v", mac1)
	}
	if err := s.Verify(ctx, msg, mac1); err != nil {
		t.Fatal(err)
	}
	tampered := enrollment.MAC{KeyVersion: 1, Sum: append([]byte{}, mac1.Sum...)}
	tampered.Sum[0] ^= 1
	for name, tc := range map[string]struct {
		msg []byte
		mac enrollment.MAC
	}{
		"tampered MAC":    {msg, tampered},
		"other message":   {[]byte("payloaD"), mac1},
		"unknown version": {msg, enrollment.MAC{KeyVersion: 9, Sum: mac1.Sum}},
		"short MAC":       {msg, enrollment.MAC{KeyVersion: 1, Sum: mac1.Sum[:16]}},
	} {
		if err := s.Verify(ctx, tc.msg, tc.mac); !errors.Is(err, enrollment.ErrBadMAC) {
			t.Errorf("%s: %v", name, err)
		}
	}

	if v, err := s.Rotate(); err != nil || v != 2 {
		t.Fatalf("rotate: %d %v", v, err)
	}
	mac2, _ := s.MAC(ctx, msg)
	if mac2.KeyVersion != 2 {
		t.Fatalf("after rotation the MAC uses version %d", mac2.KeyVersion)
	}
	// Reopening reads the same keys.
	s2, created, err := OpenLocalSigner(path)
	if err != nil || created {
		t.Fatalf("reopen: %v %v", created, err)
	}
	for _, m := range []enrollment.MAC{mac1, mac2} {
		if err := s2.Verify(ctx, msg, m); err != nil {
			t.Errorf("version %d after reopen: %v", m.KeyVersion, err)
		}
	}
	if err := s2.Retire(2); err != nil {
		t.Fatal(err)
	}
	if err := s2.Verify(ctx, msg, mac1); !errors.Is(err, enrollment.ErrBadMAC) {
		t.Errorf("retired version still verifies: %v", err)
	}
	if err := s2.Retire(3); err == nil {
		t.Error("retiring the current version was allowed")
	}
	if got := s2.Versions(); len(got) != 1 || got[0] != 2 {
		t.Errorf("versions %v", got)
	}
}

func TestLocalSignerRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"garbage":    "not json",
		"no current": `{"current": 3, "keys": {"1": "AAAA"}}`,
		"short key":  `{"current": 1, "keys": {"1": "AAAA"}}`,
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		if _, _, err := OpenLocalSigner(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func BenchmarkLocalSigner(b *testing.B) {
	ctx := context.Background()
	s, _, err := OpenLocalSigner(filepath.Join(b.TempDir(), "k.json"))
	if err != nil {
		b.Fatal(err)
	}
	tokens, err := enrollment.NewTokens(s, "acme", 0, nil)
	if err != nil {
		b.Fatal(err)
	}
	res, user := enrollment.NewID(), enrollment.NewID()
	exp := time.Now().Add(time.Hour)
	b.Run("issue", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := tokens.Issue(ctx, res, user, exp); err != nil {
				b.Fatal(err)
			}
		}
	})
	text, _, _ := tokens.Issue(ctx, res, user, exp)
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if _, err := tokens.Verify(ctx, text); err != nil {
				b.Fatal(err)
			}
		}
	})
}
