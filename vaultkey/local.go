package vaultkey

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// LocalSigner is HMAC-SHA256 with keys kept in a file: the embedded
// default for a laptop. Production keeps the key in Vault.
type LocalSigner struct {
	path string
	mu   sync.RWMutex
	file keyFile
}

// keyFile is the on-disk form: every version still allowed to verify, and
// the one that signs.
type keyFile struct {
	Current uint32            `json:"current"`
	Keys    map[string][]byte `json:"keys"`
}

const localKeyLen = 32

// OpenLocalSigner reads the key file at path, creating it with a fresh key
// (mode 0600, directory 0700) when it does not exist. created says which.
func OpenLocalSigner(path string) (s *LocalSigner, created bool, err error) {
	s = &LocalSigner{path: path}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		s.file = keyFile{Keys: map[string][]byte{}}
		if err := s.addVersion(); err != nil {
			return nil, false, fmt.Errorf("local signer: %w", err)
		}
		return s, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("local signer: %w", err)
	}
	if err := json.Unmarshal(b, &s.file); err != nil {
		return nil, false, fmt.Errorf("local signer: %s is not a key file: %w", path, err)
	}
	if key := s.file.Keys[strconv.FormatUint(uint64(s.file.Current), 10)]; len(key) != localKeyLen {
		return nil, false, fmt.Errorf("local signer: %s has no valid current key (version %d)", path, s.file.Current)
	}
	return s, false, nil
}

// addVersion makes a new current key and saves the file.
func (s *LocalSigner) addVersion() error {
	key := make([]byte, localKeyLen)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	next := s.file.Current + 1
	s.file.Keys[strconv.FormatUint(uint64(next), 10)] = key
	s.file.Current = next
	return s.save()
}

// save writes the file atomically: a reader never sees half a key file.
func (s *LocalSigner) save() error {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s.file, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".hmac-keys-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), s.path)
}

// MAC signs msg with the current key.
func (s *LocalSigner) MAC(_ context.Context, msg []byte) (enrollment.MAC, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v := s.file.Current
	m := hmac.New(sha256.New, s.file.Keys[strconv.FormatUint(uint64(v), 10)])
	m.Write(msg)
	return enrollment.MAC{KeyVersion: v, Sum: m.Sum(nil)}, nil
}

// Verify checks mac in constant time with the key version it names.
func (s *LocalSigner) Verify(_ context.Context, msg []byte, mac enrollment.MAC) error {
	s.mu.RLock()
	key, ok := s.file.Keys[strconv.FormatUint(uint64(mac.KeyVersion), 10)]
	s.mu.RUnlock()
	if !ok {
		return fmt.Errorf("key version %d is unknown or retired: %w", mac.KeyVersion, enrollment.ErrBadMAC)
	}
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	if !hmac.Equal(m.Sum(nil), mac.Sum) {
		return enrollment.ErrBadMAC
	}
	return nil
}

// Rotate makes a new key current. Tokens made with older versions still
// verify until those versions are retired.
func (s *LocalSigner) Rotate() (uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.addVersion(); err != nil {
		return 0, fmt.Errorf("rotate: %w", err)
	}
	return s.file.Current, nil
}

// Retire removes every key version below min, so tokens they made no
// longer verify. The current version cannot be retired.
func (s *LocalSigner) Retire(min uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if min > s.file.Current {
		return fmt.Errorf("retire: version %d is above the current version %d", min, s.file.Current)
	}
	for k := range s.file.Keys {
		v, _ := strconv.ParseUint(k, 10, 32)
		if uint32(v) < min {
			delete(s.file.Keys, k)
		}
	}
	return s.save()
}

// Versions lists the key versions that verify, oldest first.
func (s *LocalSigner) Versions() []uint32 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []uint32
	for k := range s.file.Keys {
		v, _ := strconv.ParseUint(k, 10, 32)
		out = append(out, uint32(v))
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
