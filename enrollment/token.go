package enrollment

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Token errors a caller branches on; every one of them refuses the device.
var (
	ErrTokenMalformed = errors.New("enrollment token malformed")
	ErrTokenVersion   = errors.New("enrollment token version unknown")
	ErrTokenOrg       = errors.New("enrollment token is for another organisation")
	ErrTokenExpired   = errors.New("enrollment token expired")
	ErrTokenNotYet    = errors.New("enrollment token issued in the future")
)

// TokenVersion1 is the only token layout so far:
//
//	version(1) keyVersion(4) orgLen(1) org(orgLen) reservation(16) user(16)
//	nonce(16) issuedAt(8, Unix s) expiresAt(8, Unix s) ‖ MAC(32)
//
// Everything before the MAC is covered by it, the key version included, so
// it cannot be swapped for another.
const TokenVersion1 byte = 1

const (
	macLen       = 32
	maxOrgLen    = 64
	fixedLen     = 1 + 4 + 1 + 16 + 16 + 16 + 8 + 8
	maxTokenLen  = fixedLen + maxOrgLen + macLen
	maxTokenText = (maxTokenLen*4 + 2) / 3
)

// Token is the decoded content of an enrollment token.
type Token struct {
	Version       byte
	KeyVersion    uint32
	OrgID         string
	ReservationID string
	UserID        string
	Nonce         [16]byte
	IssuedAt      time.Time
	ExpiresAt     time.Time
}

// NonceHex is how the nonce is stored beside its reservation.
func (t Token) NonceHex() string { return hex.EncodeToString(t.Nonce[:]) }

// Tokens issues and verifies enrollment tokens for one organisation.
type Tokens struct {
	signer Signer
	orgID  string
	skew   time.Duration
	now    func() time.Time
}

// NewTokens returns the token service. skew is the clock difference
// tolerated between the replica that issued a token and the one checking it.
func NewTokens(signer Signer, orgID string, skew time.Duration, now func() time.Time) (*Tokens, error) {
	if signer == nil {
		return nil, errors.New("tokens: a signer is required")
	}
	if orgID == "" || len(orgID) > maxOrgLen {
		return nil, fmt.Errorf("tokens: org ID must be 1 to %d bytes", maxOrgLen)
	}
	if now == nil {
		now = time.Now
	}
	return &Tokens{signer: signer, orgID: orgID, skew: skew, now: now}, nil
}

// Issue makes a token for a reservation with a fresh random nonce.
func (s *Tokens) Issue(ctx context.Context, reservationID, userID string, expires time.Time) (string, Token, error) {
	t := Token{Version: TokenVersion1, OrgID: s.orgID, ReservationID: reservationID, UserID: userID,
		IssuedAt: s.now().Truncate(time.Second), ExpiresAt: expires.Truncate(time.Second)}
	if _, err := rand.Read(t.Nonce[:]); err != nil {
		return "", Token{}, fmt.Errorf("issue token: %w", err)
	}
	// The key version is part of what is MACed, but only the signer knows
	// which version it will use; MAC once to learn it, and again if the
	// guess was wrong (a rotation between the two calls).
	for range 3 {
		payload, err := t.payload()
		if err != nil {
			return "", Token{}, fmt.Errorf("issue token: %w", err)
		}
		mac, err := s.signer.MAC(ctx, payload)
		if err != nil {
			return "", Token{}, fmt.Errorf("issue token: %w", err)
		}
		if mac.KeyVersion == t.KeyVersion {
			if len(mac.Sum) != macLen {
				return "", Token{}, fmt.Errorf("issue token: signer returned a %d-byte MAC, want %d", len(mac.Sum), macLen)
			}
			return base64.RawURLEncoding.EncodeToString(append(payload, mac.Sum...)), t, nil
		}
		t.KeyVersion = mac.KeyVersion
	}
	return "", Token{}, errors.New("issue token: the signer's key version keeps changing")
}

func (t Token) payload() ([]byte, error) {
	res, err := uuidBytes(t.ReservationID)
	if err != nil {
		return nil, fmt.Errorf("reservation ID: %w", err)
	}
	user, err := uuidBytes(t.UserID)
	if err != nil {
		return nil, fmt.Errorf("user ID: %w", err)
	}
	b := make([]byte, 0, fixedLen+len(t.OrgID))
	b = append(b, t.Version)
	b = binary.BigEndian.AppendUint32(b, t.KeyVersion)
	b = append(b, byte(len(t.OrgID)))
	b = append(b, t.OrgID...)
	b = append(b, res[:]...)
	b = append(b, user[:]...)
	b = append(b, t.Nonce[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(t.IssuedAt.Unix()))
	b = binary.BigEndian.AppendUint64(b, uint64(t.ExpiresAt.Unix()))
	return b, nil
}

// ParseToken decodes a token's layout without checking its MAC. Callers
// use Verify; this is exported for the fuzz test and diagnostics.
func ParseToken(s string) (Token, []byte, MAC, error) {
	if len(s) == 0 || len(s) > maxTokenText {
		return Token{}, nil, MAC{}, fmt.Errorf("%w: length %d", ErrTokenMalformed, len(s))
	}
	// The decoder skips line breaks, and Strict refuses stray trailing
	// bits: together with this check, one token has exactly one spelling.
	for i := 0; i < len(s); i++ {
		if !isBase64URL(s[i]) {
			return Token{}, nil, MAC{}, fmt.Errorf("%w: not base64url", ErrTokenMalformed)
		}
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return Token{}, nil, MAC{}, fmt.Errorf("%w: not base64url", ErrTokenMalformed)
	}
	if len(raw) < fixedLen+macLen {
		return Token{}, nil, MAC{}, fmt.Errorf("%w: %d bytes is too short", ErrTokenMalformed, len(raw))
	}
	if raw[0] != TokenVersion1 {
		return Token{}, nil, MAC{}, fmt.Errorf("%w: %d", ErrTokenVersion, raw[0])
	}
	orgLen := int(raw[5])
	if orgLen == 0 || orgLen > maxOrgLen || len(raw) != fixedLen+orgLen+macLen {
		return Token{}, nil, MAC{}, fmt.Errorf("%w: length does not match its layout", ErrTokenMalformed)
	}
	payload, sum := raw[:len(raw)-macLen], raw[len(raw)-macLen:]
	t := Token{Version: raw[0], KeyVersion: binary.BigEndian.Uint32(raw[1:5]), OrgID: string(raw[6 : 6+orgLen])}
	p := raw[6+orgLen:]
	t.ReservationID = formatUUID(p[0:16])
	t.UserID = formatUUID(p[16:32])
	copy(t.Nonce[:], p[32:48])
	t.IssuedAt = time.Unix(int64(binary.BigEndian.Uint64(p[48:56])), 0).UTC()
	t.ExpiresAt = time.Unix(int64(binary.BigEndian.Uint64(p[56:64])), 0).UTC()
	return t, payload, MAC{KeyVersion: t.KeyVersion, Sum: sum}, nil
}

// Verify checks a token: its MAC first (in constant time, by the signer),
// then its organisation and its validity window. Whether its reservation
// is still open is the caller's next question.
func (s *Tokens) Verify(ctx context.Context, text string) (Token, error) {
	t, payload, mac, err := ParseToken(text)
	if err != nil {
		return Token{}, fmt.Errorf("verify token: %w", err)
	}
	if err := s.signer.Verify(ctx, payload, mac); err != nil {
		return Token{}, fmt.Errorf("verify token: %w", err)
	}
	if t.OrgID != s.orgID {
		return Token{}, fmt.Errorf("verify token: %w", ErrTokenOrg)
	}
	now := s.now()
	if !now.Before(t.ExpiresAt.Add(s.skew)) {
		return Token{}, fmt.Errorf("verify token: %w (at %s)", ErrTokenExpired, t.ExpiresAt.Format(time.RFC3339))
	}
	if t.IssuedAt.After(now.Add(s.skew)) {
		return Token{}, fmt.Errorf("verify token: %w", ErrTokenNotYet)
	}
	return t, nil
}

func isBase64URL(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

func uuidBytes(s string) ([16]byte, error) {
	var out [16]byte
	if !ValidID(s) {
		return out, fmt.Errorf("%q is not a UUID", s)
	}
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	if _, err := hex.Decode(out[:], []byte(h)); err != nil {
		return out, err
	}
	return out, nil
}

func formatUUID(b []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
