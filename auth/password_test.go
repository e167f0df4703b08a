package auth

import (
	"errors"
	"strings"
	"testing"
)

func TestPasswordRoundTrip(t *testing.T) {
	pw := RandomPassword()
	h, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(h, pw) {
		t.Fatal("hash contains the password")
	}
	if err := VerifyPassword(h, pw); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if err := VerifyPassword(h, pw+"x"); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	h2, _ := HashPassword(pw)
	if h2 == h {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
}

func TestVerifyPasswordRejectsMalformedHashes(t *testing.T) {
	good, _ := HashPassword("correct horse battery")
	parts := strings.Split(good, "$")
	for _, tc := range []struct{ name, hash string }{
		{"error/empty", ""},
		{"error/bcrypt", "$2a$10$abcdefghijklmnopqrstuv"},
		{"error/huge memory", strings.Join([]string{"", "argon2id", "v=19", "m=99999999,t=3,p=2", parts[4], parts[5]}, "$")},
		{"error/bad salt", strings.Join([]string{"", "argon2id", "v=19", parts[3], "!!", parts[5]}, "$")},
		{"error/old version", strings.Join([]string{"", "argon2id", "v=16", parts[3], parts[4], parts[5]}, "$")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := VerifyPassword(tc.hash, "correct horse battery"); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := HashPassword("short"); err == nil {
		t.Error("short password accepted")
	}
}

func TestRandomPassword(t *testing.T) {
	pw, h, err := NewRandomPassword()
	if err != nil {
		t.Fatal(err)
	}
	if len(pw) != 24 || strings.Contains(h, pw) {
		t.Fatalf("password %q, hash %q", pw, h)
	}
	if err := VerifyPassword(h, pw); err != nil {
		t.Fatalf("verify: %v", err)
	}
	for _, wrong := range []string{"", pw + "x", pw[:23], strings.ToUpper(pw)} {
		if err := VerifyPassword(h, wrong); !errors.Is(err, ErrWrongPassword) {
			t.Errorf("%q: %v", wrong, err)
		}
	}
	if _, h2, _ := NewRandomPassword(); h2 == h {
		t.Fatal("two random passwords hash alike")
	}
	parts := strings.Split(h, "$")
	for name, bad := range map[string]string{
		"no key":      strings.Join(parts[:3], "$"),
		"short salt":  strings.Join([]string{"", parts[1], "AAAA", parts[3]}, "$"),
		"short key":   strings.Join([]string{"", parts[1], parts[2], "AAAA"}, "$"),
		"extra field": h + "$x",
	} {
		if err := VerifyPassword(bad, pw); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Every letter of the alphabet turns up, none more than chance allows.
	counts := map[rune]int{}
	for range 2000 {
		for _, c := range RandomPassword() {
			counts[c]++
		}
	}
	if len(counts) != 31 {
		t.Fatalf("%d letters in use, want 31", len(counts))
	}
	for c, n := range counts {
		// 48,000 draws, 1,548 expected per letter; 8 standard deviations.
		if n < 1250 || n > 1850 {
			t.Errorf("letter %q drawn %d times", c, n)
		}
	}
}
