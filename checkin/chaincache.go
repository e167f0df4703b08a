package checkin

import (
	"crypto/x509"
	"sync"
	"time"
)

// chainCache remembers certificates already verified to chain to the CA
// for client authentication, by SHA-256 of their DER, with the window in
// which that verification holds (the leaf's and the CA's validity). The
// answer depends only on the certificate's bytes, the fixed CA and the
// time, so a hit is the same verification, not a weaker one; revocation
// and the certificate record are still read on every request. It saves
// an RSA public operation and x509 chain building per check-in.
type chainCache struct {
	mu      sync.Mutex
	entries map[[32]byte]window
	max     int
}

type window struct{ notBefore, notAfter int64 } // Unix nanoseconds

// maxChainCache bounds the cache: 48 bytes of entry (plus the map's own)
// per device, a few MB for 100,000 devices.
const maxChainCache = 100_000

func newChainCache(max int) *chainCache {
	return &chainCache{entries: map[[32]byte]window{}, max: max}
}

// verified reports whether the certificate with this fingerprint was
// verified before and the verification still holds at now.
func (c *chainCache) verified(fp [32]byte, now time.Time) bool {
	c.mu.Lock()
	w, ok := c.entries[fp]
	c.mu.Unlock()
	t := now.UnixNano()
	return ok && t >= w.notBefore && t <= w.notAfter
}

// remember records a verified chain, evicting an arbitrary entry when
// full.
func (c *chainCache) remember(fp [32]byte, chain []*x509.Certificate) {
	w := window{notBefore: chain[0].NotBefore.UnixNano(), notAfter: chain[0].NotAfter.UnixNano()}
	for _, cert := range chain[1:] {
		w.notBefore = max(w.notBefore, cert.NotBefore.UnixNano())
		w.notAfter = min(w.notAfter, cert.NotAfter.UnixNano())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k := range c.entries { // map order is unspecified: a cheap random eviction
			delete(c.entries, k)
			break
		}
	}
	c.entries[fp] = w
}
