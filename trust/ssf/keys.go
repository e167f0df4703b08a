package ssf

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Keyring holds the ES256 keys that sign SETs, one PEM file each in a
// folder every replica shares. The newest signs. A key stays published for
// one rotation period after a newer one replaced it, so a receiver still
// verifies SETs signed just before a rotation, and a replica that has not
// yet seen the new key signs with one receivers know.
type Keyring struct {
	dir      string
	rotation time.Duration
	now      func() time.Time

	mu     sync.Mutex
	keys   []signingKey // newest first
	loaded time.Time
	forced bool // Rotate: add a key even if the newest is young
	// Skipped counts files in the folder that are not keys (last load).
	Skipped int
}

type signingKey struct {
	kid     string
	created time.Time
	key     *ecdsa.PrivateKey
}

// maxPublished bounds the JWKS, whatever the folder holds.
const maxPublished = 5

// activation: a new key is published this long before it signs, so every
// replica (reloading every 30 s) and every receiver (caching the JWKS for
// 5 minutes) knows it by then.
const activation = 10 * time.Minute

// lockStale: a rotation lock older than this was left by a crashed process.
const lockStale = time.Minute

var errRotating = errors.New("another process is rotating the SSF keys")

// reloadEvery makes a replica see a key another one (or the CLI) added.
const reloadEvery = 30 * time.Second

// OpenKeyring reads the keys in dir, creating the folder and a first key
// when there is none, and a new key when the newest is older than
// rotation.
func OpenKeyring(dir string, rotation time.Duration, now func() time.Time) (*Keyring, error) {
	if now == nil {
		now = time.Now
	}
	k := &Keyring{dir: dir, rotation: rotation, now: now}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("SSF keys: %w", err)
	}
	if _, err := k.current(); err != nil {
		return nil, err
	}
	return k, nil
}

// Rotate adds a new signing key now, whatever the age of the newest.
func (k *Keyring) Rotate() (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.forced = true
	defer func() { k.forced = false }()
	if _, err := k.create(); err != nil {
		return "", err
	}
	if err := k.load(); err != nil {
		return "", err
	}
	return k.keys[0].kid, nil
}

// current returns the signing key, rotating when it is due: the newest
// key published for at least the activation delay, or, on a new folder,
// its first key.
func (k *Keyring) current() (signingKey, error) {
	latest, err := k.latest()
	if err != nil {
		return signingKey{}, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	for _, sk := range k.keys {
		if now.Sub(sk.created) >= activation {
			return sk, nil
		}
	}
	if len(k.keys) > 0 {
		return k.keys[len(k.keys)-1], nil
	}
	return latest, nil
}

// latest returns the newest key, adding one when the newest is older than
// the rotation period.
func (k *Keyring) latest() (signingKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	if k.keys == nil || now.Sub(k.loaded) > reloadEvery {
		if err := k.load(); err != nil {
			return signingKey{}, err
		}
	}
	if len(k.keys) == 0 || now.Sub(k.keys[0].created) > k.rotation {
		// With no key yet, wait for the process writing the first one.
		for range 100 {
			_, err := k.create()
			if err != nil && !errors.Is(err, errRotating) {
				return signingKey{}, err
			}
			if err := k.load(); err != nil {
				return signingKey{}, err
			}
			if len(k.keys) > 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(k.keys) == 0 {
			return signingKey{}, errRotating
		}
	}
	return k.keys[0], nil
}

// create adds a key, holding a lock file so that replicas due at the same
// moment add one key, not one each.
func (k *Keyring) create() (signingKey, error) {
	lock := filepath.Join(k.dir, "rotate.lock")
	f, err := os.OpenFile(lock, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		if fi, serr := os.Stat(lock); serr == nil && time.Since(fi.ModTime()) > lockStale {
			_ = os.Remove(lock)
		}
		return signingKey{}, errRotating
	}
	if err != nil {
		return signingKey{}, fmt.Errorf("SSF keys: %w", err)
	}
	f.Close()
	defer os.Remove(lock)
	// Another process may have rotated between our load and the lock.
	if err := k.load(); err != nil {
		return signingKey{}, err
	}
	if len(k.keys) > 0 && k.now().Sub(k.keys[0].created) <= k.rotation && k.rotation > 0 && !k.forced {
		return k.keys[0], nil
	}
	return k.write()
}

func (k *Keyring) write() (signingKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return signingKey{}, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return signingKey{}, err
	}
	// The name orders keys by creation, whatever the file times say.
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := filepath.Join(k.dir, fmt.Sprintf("es256-%d-%x.pem", k.now().UnixNano(), suffix))
	// Written aside and renamed, so a replica never reads half a key.
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return signingKey{}, fmt.Errorf("SSF keys: %w", err)
	}
	if err := errors.Join(pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}), f.Sync(), f.Close()); err != nil {
		_ = os.Remove(tmp)
		return signingKey{}, fmt.Errorf("SSF keys: %w", err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return signingKey{}, fmt.Errorf("SSF keys: %w", err)
	}
	return signingKey{key: key}, nil
}

func (k *Keyring) load() error {
	files, err := filepath.Glob(filepath.Join(k.dir, "es256-*.pem"))
	if err != nil {
		return err
	}
	var keys []signingKey
	skipped := 0
	for _, f := range files {
		var nanos int64
		if _, err := fmt.Sscanf(strings.TrimSuffix(filepath.Base(f), ".pem"), "es256-%d", &nanos); err != nil {
			continue
		}
		// A file that is not a P-256 key is passed over, and counted: one
		// bad file must not stop every replica from signing.
		ec, err := readKey(f)
		if err != nil {
			skipped++
			continue
		}
		jwk := jose.JSONWebKey{Key: ec.Public()}
		tp, err := jwk.Thumbprint(crypto.SHA256)
		if err != nil {
			return err
		}
		keys = append(keys, signingKey{kid: base64.RawURLEncoding.EncodeToString(tp), created: time.Unix(0, nanos), key: ec})
	}
	sort.SliceStable(keys, func(i, j int) bool { return keys[i].created.After(keys[j].created) })
	k.keys, k.loaded, k.Skipped = keys, k.now(), skipped
	return nil
}

func readKey(name string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s is not PEM", name)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	ec, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s is not a P-256 key", name)
	}
	return ec, nil
}

// JWKS is the published key set.
func (k *Keyring) JWKS() (jose.JSONWebKeySet, error) {
	if _, err := k.latest(); err != nil {
		return jose.JSONWebKeySet{}, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var set jose.JSONWebKeySet
	now := k.now()
	for i, sk := range k.keys {
		// keys[i] signed until keys[i-1] replaced it.
		if i == maxPublished || (i > 0 && now.Sub(k.keys[i-1].created) > k.rotation) {
			break
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: sk.key.Public(), KeyID: sk.kid, Algorithm: string(jose.ES256), Use: "sig"})
	}
	return set, nil
}

// Sign makes a compact JWS of payload with typ secevent+jwt.
func (k *Keyring) Sign(payload []byte) (string, error) {
	sk, err := k.current()
	if err != nil {
		return "", err
	}
	opts := (&jose.SignerOptions{}).WithType("secevent+jwt").WithHeader(jose.HeaderKey("kid"), sk.kid)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: sk.key}, opts)
	if err != nil {
		return "", fmt.Errorf("SET signer: %w", err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign SET: %w", err)
	}
	return obj.CompactSerialize()
}
