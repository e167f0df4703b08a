// Package attesttest makes Managed Device Attestation chains for tests: a
// root and an intermediate of its own (never Apple's), and leaves that carry
// Apple's extensions, honest or lying.
package attesttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"time"

	"github.com/vestibule-mdm/vestibule/attest"
)

// CA is a test attestation root with one intermediate.
type CA struct {
	Root         *x509.Certificate
	Intermediate *x509.Certificate
	rootKey      *ecdsa.PrivateKey
	interKey     *ecdsa.PrivateKey
}

// NewCA makes a root and an intermediate valid around now.
func NewCA(name string, now time.Time) (*CA, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, err
	}
	root, err := sign(&x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " Attestation Root CA"},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(20 * 365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, nil, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, err
	}
	inter, err := sign(&x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name + " Attestation Sub-CA"},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, root, &interKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	return &CA{Root: root, Intermediate: inter, rootKey: rootKey, interKey: interKey}, nil
}

// Pool is the root as a verifier's trust.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Root)
	return p
}

// Leaf describes the attestation a device returns.
type Leaf struct {
	Serial, UDID, OSVersion, SEPOSVersion string
	// Nonce is hashed into the freshness code; FreshnessCode, when set,
	// is used as is instead.
	Nonce         []byte
	FreshnessCode []byte
	// NotBefore and NotAfter default to around now.
	NotBefore, NotAfter time.Time
	// Omit leaves out the serial, UDID and freshness extensions;
	// OmitFreshness the freshness code only.
	Omit, OmitFreshness bool
	// Key is the attested public key (a new P-256 key when nil).
	Key any
}

// Chain returns the attestation for l: DER certificates, leaf first.
func (ca *CA) Chain(l Leaf, now time.Time) ([][]byte, error) {
	if l.NotBefore.IsZero() {
		l.NotBefore = now.Add(-time.Minute)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = l.NotBefore.Add(30 * 24 * time.Hour)
	}
	if l.Key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		l.Key = &k.PublicKey
	}
	code := l.FreshnessCode
	if code == nil {
		sum := sha256.Sum256(l.Nonce)
		code = sum[:]
	}
	var exts []pkix.Extension
	if !l.Omit {
		exts = append(exts, pkix.Extension{Id: attest.OIDs.Serial, Value: []byte(l.Serial)},
			pkix.Extension{Id: attest.OIDs.UDID, Value: []byte(l.UDID)})
		if !l.OmitFreshness {
			exts = append(exts, pkix.Extension{Id: attest.OIDs.Freshness, Value: code})
		}
	}
	if l.OSVersion != "" {
		exts = append(exts, pkix.Extension{Id: attest.OIDs.OSVersion, Value: []byte(l.OSVersion)})
	}
	if l.SEPOSVersion != "" {
		exts = append(exts, pkix.Extension{Id: attest.OIDs.SEPOSVersion, Value: []byte(l.SEPOSVersion)})
	}
	leaf, err := sign(&x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "device attestation"},
		NotBefore: l.NotBefore, NotAfter: l.NotAfter, KeyUsage: x509.KeyUsageDigitalSignature, ExtraExtensions: exts},
		ca.Intermediate, l.Key, ca.interKey)
	if err != nil {
		return nil, err
	}
	return [][]byte{leaf.Raw, ca.Intermediate.Raw}, nil
}

func sign(tmpl, parent *x509.Certificate, pub any, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}
