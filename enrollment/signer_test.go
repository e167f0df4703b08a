package enrollment

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
)

// keyRing is a real, in-memory HMAC-SHA256 signer with versioned keys, so
// this package's tests do not depend on a key backend.
type keyRing struct {
	current uint32
	keys    map[uint32][]byte
	down    bool
}

func newKeyRing(seed string) *keyRing {
	return &keyRing{current: 1, keys: map[uint32][]byte{1: []byte(seed + "-v1-0123456789abcdef0123456789")}}
}

func (k *keyRing) rotate() {
	k.current++
	k.keys[k.current] = []byte(fmt.Sprintf("key-v%d-0123456789abcdef0123456789", k.current))
}

func (k *keyRing) MAC(_ context.Context, msg []byte) (MAC, error) {
	if k.down {
		return MAC{}, ErrSignerUnavailable
	}
	m := hmac.New(sha256.New, k.keys[k.current])
	m.Write(msg)
	return MAC{KeyVersion: k.current, Sum: m.Sum(nil)}, nil
}

func (k *keyRing) Verify(_ context.Context, msg []byte, mac MAC) error {
	if k.down {
		return ErrSignerUnavailable
	}
	key, ok := k.keys[mac.KeyVersion]
	if !ok {
		return fmt.Errorf("key version %d: %w", mac.KeyVersion, ErrBadMAC)
	}
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	if !hmac.Equal(m.Sum(nil), mac.Sum) {
		return ErrBadMAC
	}
	return nil
}
