package enrollment

import (
	"context"
	"errors"
)

// ErrBadMAC means a MAC does not verify: wrong key, tampered message, or a
// key version that is unknown or no longer allowed to verify.
var ErrBadMAC = errors.New("enrollment token MAC does not verify")

// ErrSignerUnavailable means the signer could not answer (a key service is
// down, sealed or timed out). Callers answer devices with a retryable error
// rather than a refusal.
var ErrSignerUnavailable = errors.New("token signer unavailable")

// MAC is a message authentication code together with the version of the key
// that made it, so that keys can rotate while older tokens still verify until
// their version is retired.
type MAC struct {
	KeyVersion uint32
	Sum        []byte
}

// Signer computes and checks enrollment-token MACs. The key stays inside the
// implementation: a local key file for development, Vault transit in
// production.
type Signer interface {
	// MAC returns the MAC of msg under the signer's current key version.
	MAC(ctx context.Context, msg []byte) (MAC, error)
	// Verify returns nil when mac is a valid MAC of msg under mac.KeyVersion,
	// an error wrapping ErrBadMAC when it is not, and an error wrapping
	// ErrSignerUnavailable when the signer cannot answer.
	Verify(ctx context.Context, msg []byte, mac MAC) error
}
