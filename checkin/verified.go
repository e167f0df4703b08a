package checkin

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"math"
	"sync"
	"time"
)

// Both caches below remember the result of a verification whose answer
// depends only on bytes the device sent, the fixed CA and the time, so a
// hit is the same verification, not a weaker one. The certificate record
// and its revocation are still read on every request.
//
//   - chains: a certificate's fingerprint → the window in which it chains
//     to the CA for client authentication (the leaf's and the CA's
//     validity). It saves x509 chain building and an RSA public operation.
//   - signatures: a digest of an Mdm-Signature header and the body it
//     signs → the fingerprint of the certificate that signed it. A device
//     signs its Idle report with a deterministic RSA signature, so it sends
//     the same bytes at every idle check-in; this saves parsing the CMS and
//     an RSA public operation.

// maxVerified bounds each cache: 32-byte keys and small values, a few MB
// for 100,000 devices.
const maxVerified = 100_000

type window struct{ notBefore, notAfter int64 } // Unix nanoseconds

// bounded is a map of at most max entries that evicts an arbitrary entry
// when full (Go's map order is unspecified: a cheap random eviction).
type bounded[V any] struct {
	mu      sync.Mutex
	entries map[[32]byte]V
	max     int
}

func newBounded[V any](max int) *bounded[V] {
	return &bounded[V]{entries: map[[32]byte]V{}, max: max}
}

func (b *bounded[V]) get(k [32]byte) (V, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.entries[k]
	return v, ok
}

func (b *bounded[V]) put(k [32]byte, v V) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.entries[k]; !ok && len(b.entries) >= b.max {
		for old := range b.entries {
			delete(b.entries, old)
			break
		}
	}
	b.entries[k] = v
}

func (b *bounded[V]) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.entries)
}

type verified struct {
	chains     *bounded[window]
	signatures *bounded[[32]byte]
}

func newVerified(max int) verified {
	return verified{chains: newBounded[window](max), signatures: newBounded[[32]byte](max)}
}

// chainHolds reports whether the certificate with this fingerprint was
// verified to chain to the CA and the verification holds at now.
func (v verified) chainHolds(fp [32]byte, now time.Time) bool {
	w, ok := v.chains.get(fp)
	t := now.UnixNano()
	return ok && t >= w.notBefore && t <= w.notAfter
}

// rememberChain records a verified chain (leaf first).
func (v verified) rememberChain(fp [32]byte, chain []*x509.Certificate) {
	w := window{notBefore: nanos(chain[0].NotBefore), notAfter: nanos(chain[0].NotAfter)}
	for _, cert := range chain[1:] {
		w.notBefore = max(w.notBefore, nanos(cert.NotBefore))
		w.notAfter = min(w.notAfter, nanos(cert.NotAfter))
	}
	v.chains.put(fp, w)
}

// nanos is t in Unix nanoseconds, clamped to what int64 holds (years 1678
// to 2262): a CA valid until 9999 must not wrap around.
func nanos(t time.Time) int64 {
	switch {
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	}
	return t.UnixNano()
}

// signatureKey digests a signature header and its body, unambiguously.
func signatureKey(header string, body []byte) [32]byte {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(header)))
	h.Write(n[:])
	h.Write([]byte(header))
	h.Write(body)
	var k [32]byte
	h.Sum(k[:0])
	return k
}
