package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters, from the RFC 9106 second recommendation (64 MiB, 3
// passes) scaled to one lane per core we expect to have.
const (
	argonTime    = 3
	argonMemory  = 64 * 1024
	argonThreads = 2
	argonKeyLen  = 32
)

// ErrWrongPassword means the password does not match the hash.
var ErrWrongPassword = errors.New("wrong password")

// HashPassword returns an encoded argon2id hash in the PHC string format.
func HashPassword(password string) (string, error) {
	if len(password) < 12 {
		return "", errors.New("hash password: at least 12 characters")
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return encodeHash(salt, argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)), nil
}

// encodeHash writes an argon2id salt and key with this package's
// parameters in the PHC string format VerifyPassword reads.
func encodeHash(salt, key []byte) string {
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// unmatchableHash is an argon2id hash in HashPassword's format and
// parameters whose key is random bytes: no password matches it, verifying
// against it costs what a real check costs, and making it costs nothing
// (a real HashPassword would make the first sign-in that needs it twice as
// slow as the others, which tells that its account is unknown).
func unmatchableHash() (string, error) {
	buf := make([]byte, 16+argonKeyLen)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("dummy hash: %w", err)
	}
	return encodeHash(buf[:16], buf[16:]), nil
}

// VerifyPassword checks a password against a hash made by HashPassword,
// with the parameters recorded in the hash.
func VerifyPassword(encoded, password string) error {
	parts := strings.Split(encoded, "$")
	if len(parts) > 1 && parts[1] == randomScheme {
		return verifyRandom(parts, password)
	}
	if len(parts) != 6 || parts[1] != "argon2id" {
		return errors.New("verify password: not an argon2id hash")
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return errors.New("verify password: unsupported argon2 version")
	}
	var mem uint32
	var t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &mem, &t, &p); err != nil || mem == 0 || t == 0 || p == 0 || mem > 1<<20 || t > 20 {
		return errors.New("verify password: bad argon2 parameters")
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return errors.New("verify password: bad salt")
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return errors.New("verify password: bad key")
	}
	got := argon2.IDKey([]byte(password), salt, t, mem, p, uint32(len(want)))
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrWrongPassword
	}
	return nil
}

// RandomPassword returns a password for a one-time secret: 24 characters
// from a 31-letter alphabet without look-alikes (118 bits).
func RandomPassword() string {
	const alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
	// Bytes from 248 up are dropped: 248 = 8 × 31, so every letter is
	// equally likely.
	out := make([]byte, 0, 24)
	var b [32]byte
	for len(out) < cap(out) {
		_, _ = rand.Read(b[:])
		for _, c := range b {
			if c < 248 && len(out) < cap(out) {
				out = append(out, alphabet[int(c)%len(alphabet)])
			}
		}
	}
	return string(out)
}

// randomScheme marks the hash of a password RandomPassword made. Such a
// password has 118 bits of entropy: no guessing reaches it, so a salted
// SHA-256 protects it as well as a memory-hard hash does, without taking
// 64 MiB at every start of `serve --dev`.
const randomScheme = "vestibule-random-sha256"

// NewRandomPassword returns a password RandomPassword made and its hash.
// The fast hash is only ever made here, for a password this function drew:
// a person's password always gets HashPassword.
func NewRandomPassword() (password, hash string, err error) {
	password = RandomPassword()
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", "", fmt.Errorf("random password: %w", err)
	}
	sum := sha256.Sum256(append(salt, password...))
	b64 := base64.RawStdEncoding
	return password, "$" + randomScheme + "$" + b64.EncodeToString(salt) + "$" + b64.EncodeToString(sum[:]), nil
}

func verifyRandom(parts []string, password string) error {
	if len(parts) != 4 {
		return errors.New("verify password: malformed random-password hash")
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[2])
	if err != nil || len(salt) != 16 {
		return errors.New("verify password: bad salt")
	}
	want, err := b64.DecodeString(parts[3])
	if err != nil || len(want) != sha256.Size {
		return errors.New("verify password: bad key")
	}
	got := sha256.Sum256(append(salt, password...))
	if subtle.ConstantTimeCompare(got[:], want) != 1 {
		return ErrWrongPassword
	}
	return nil
}
