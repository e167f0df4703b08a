package depsync

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/micromdm/nanodep/client"
	"github.com/micromdm/nanodep/tokenpki"
)

// DecryptServerToken opens the server token file ABM gives for download
// (S/MIME, encrypted to the certificate Vestibule generated) and returns
// the OAuth tokens in it.
func DecryptServerToken(p7m []byte, cert *x509.Certificate, key crypto.PrivateKey) (*client.OAuth1Tokens, error) {
	if len(p7m) > maxServerTokenFile {
		return nil, fmt.Errorf("server token: %d bytes, more than a token file holds (%d)", len(p7m), maxServerTokenFile)
	}
	// DecryptTokenJSON takes the file whole: it removes the S/MIME headers
	// itself, so the file must not be unwrapped before.
	plain, err := tokenpki.DecryptTokenJSON(p7m, cert, key)
	if err != nil {
		return nil, errors.New("server token: not an S/MIME file encrypted to this server's DEP certificate (download it again from Apple Business Manager after uploading the certificate of `vestibule dep keypair`)")
	}
	tokens := new(client.OAuth1Tokens)
	if err := json.Unmarshal(plain, tokens); err != nil {
		return nil, fmt.Errorf("server token: %w", err)
	}
	if !tokens.Valid() {
		return nil, errors.New("server token: incomplete OAuth tokens")
	}
	return tokens, nil
}

// maxServerTokenFile bounds the file read: ABM's token files are a few KB.
const maxServerTokenFile = 256 << 10

// TokenBox seals DEP OAuth tokens for the database with AES-256-GCM under
// a key kept outside it.
type TokenBox struct{ aead cipher.AEAD }

// NewTokenBox takes a 32-byte key.
func NewTokenBox(key []byte) (*TokenBox, error) {
	if len(key) != 32 {
		return nil, errors.New("token box: the key must be 32 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &TokenBox{aead: aead}, nil
}

// Seal encrypts tokens, bound to the DEP server's name.
func (b *TokenBox) Seal(name string, t *client.OAuth1Tokens) (string, error) {
	plain, err := json.Marshal(t)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b.aead.Seal(nonce, nonce, plain, []byte(name))), nil
}

// Open decrypts what Seal made for name.
func (b *TokenBox) Open(name, sealed string) (*client.OAuth1Tokens, error) {
	raw, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(raw) < b.aead.NonceSize() {
		return nil, errors.New("token box: not a sealed token")
	}
	plain, err := b.aead.Open(nil, raw[:b.aead.NonceSize()], raw[b.aead.NonceSize():], []byte(name))
	if err != nil {
		return nil, errors.New("token box: the token does not open with this key")
	}
	t := new(client.OAuth1Tokens)
	return t, json.Unmarshal(plain, t)
}
