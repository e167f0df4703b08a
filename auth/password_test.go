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
