// Package attest verifies Apple Managed Device Attestation: the certificate
// chain a device's Secure Enclave returns for a DevicePropertiesAttestation
// query, issued by Apple, carrying the hardware's serial number and UDID,
// its OS versions and a freshness code derived from the nonce the server
// chose. It proves which Apple hardware answered, not who holds it. Pure
// verification: no transport, no storage.
package attest

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// The Apple Enterprise Attestation Root CA (P-384, valid 2022-2047), and
// the SHA-256 fingerprint it is pinned to: a changed file fails every
// verification rather than trusting another root.
//
//go:embed apple_root.pem
var appleRootPEM []byte

// AppleRootSHA256 is the pinned fingerprint of the embedded root.
const AppleRootSHA256 = "ccf59ef8fcb3017d97f8b5fa6fa90e7a3f9283f76b55ac6cf6eda8b8b949f05b"

// Extensions under 1.2.840.113635.100.8 that Apple puts in the leaf.
var (
	oidSerial          = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 8, 9, 1}
	oidUDID            = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 8, 9, 2}
	oidOSVersion       = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 8, 10, 1}
	oidSEPOSVersion    = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 8, 10, 2}
	oidLLBVersion      = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 8, 10, 3}
	oidFreshness       = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 8, 11, 1}
	oidSIP             = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 8, 13, 1}
	oidSecureBoot      = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 8, 13, 2}
	oidThirdPartyKexts = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 8, 13, 3}
)

// OIDs are the extension identifiers, for code that builds test chains.
var OIDs = struct {
	Serial, UDID, OSVersion, SEPOSVersion, LLBVersion, Freshness, SIP, SecureBoot, ThirdPartyKexts asn1.ObjectIdentifier
}{oidSerial, oidUDID, oidOSVersion, oidSEPOSVersion, oidLLBVersion, oidFreshness, oidSIP, oidSecureBoot, oidThirdPartyKexts}

// Why an attestation is not believed. Each wraps ErrNotAttested.
var (
	ErrNotAttested  = errors.New("not attested")
	ErrMalformed    = fmt.Errorf("%w: malformed certificate chain", ErrNotAttested)
	ErrInvalidChain = fmt.Errorf("%w: chain does not verify to the Apple Enterprise Attestation Root", ErrNotAttested)
	ErrIncomplete   = fmt.Errorf("%w: attestation lacks the serial, UDID or freshness code", ErrNotAttested)
	ErrStale        = fmt.Errorf("%w: stale attestation", ErrNotAttested)
)

// MaxCache is how old a cached attestation a device may answer with: it
// is shown as attested but not fresh. Older ones are stale.
const MaxCache = 7 * 24 * time.Hour

// Bounds of what Verify reads.
const (
	maxChain     = 4
	maxCertBytes = 16 << 10
)

// Result is what the hardware vouches for.
type Result struct {
	Serial       string
	UDID         string
	OSVersion    string
	SEPOSVersion string
	LLBVersion   string
	// SIP, SecureBoot and ThirdPartyKexts are present on Macs that report
	// them (raw values); empty otherwise.
	SIP, SecureBoot, ThirdPartyKexts string
	// Fresh: the freshness code is SHA-256 of the nonce this server sent.
	// A device may answer with an attestation it cached (up to MaxCache):
	// then Fresh is false and IssuedAt says when the leaf was made.
	Fresh      bool
	IssuedAt   time.Time
	ExpiresAt  time.Time
	LeafSHA256 string
	// LeafKey is the attested key (DER SubjectPublicKeyInfo): for ACME, the
	// key the certificate may be issued for.
	LeafKey []byte
}

// Verifier checks attestation chains against its roots at the time of the
// check.
type Verifier struct {
	roots *x509.CertPool
	now   func() time.Time
}

// Option adjusts a Verifier.
type Option func(*Verifier)

// WithRoots replaces the pinned Apple root. Only tests use it: no
// configuration key reaches it.
func WithRoots(roots *x509.CertPool) Option { return func(v *Verifier) { v.roots = roots } }

// WithClock sets the time of the check.
func WithClock(now func() time.Time) Option { return func(v *Verifier) { v.now = now } }

// New returns a verifier trusting the pinned Apple Enterprise Attestation
// Root CA.
func New(opts ...Option) (*Verifier, error) {
	v := &Verifier{now: time.Now}
	for _, o := range opts {
		o(v)
	}
	if v.roots == nil {
		root, err := appleRoot()
		if err != nil {
			return nil, err
		}
		v.roots = x509.NewCertPool()
		v.roots.AddCert(root)
	}
	return v, nil
}

func appleRoot() (*x509.Certificate, error) {
	block, _ := pem.Decode(appleRootPEM)
	if block == nil {
		return nil, errors.New("attest: the embedded Apple root is not PEM")
	}
	sum := sha256.Sum256(block.Bytes)
	if hex.EncodeToString(sum[:]) != AppleRootSHA256 {
		return nil, errors.New("attest: the embedded Apple root does not match its pinned fingerprint")
	}
	return x509.ParseCertificate(block.Bytes)
}

// Verify checks a DevicePropertiesAttestation answer: DER certificates,
// leaf first. The chain must verify to the roots now; the leaf must carry
// the serial, the UDID and the freshness code. A freshness code other than
// SHA-256(nonce) is a cached attestation (Fresh false) while the leaf is
// younger than MaxCache, and ErrStale after.
func (v *Verifier) Verify(chain [][]byte, nonce []byte) (Result, error) {
	if len(chain) == 0 || len(chain) > maxChain {
		return Result{}, fmt.Errorf("%w: %d certificates", ErrMalformed, len(chain))
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		if len(der) == 0 || len(der) > maxCertBytes {
			return Result{}, fmt.Errorf("%w: certificate %d of %d bytes", ErrMalformed, i, len(der))
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return Result{}, fmt.Errorf("%w: certificate %d: %v", ErrMalformed, i, err)
		}
		certs[i] = c
	}
	leaf := certs[0]
	intermediates := x509.NewCertPool()
	for _, c := range certs[1:] {
		intermediates.AddCert(c)
	}
	now := v.now()
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: v.roots, Intermediates: intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrInvalidChain, err)
	}
	sum := sha256.Sum256(leaf.Raw)
	r := Result{IssuedAt: leaf.NotBefore, ExpiresAt: leaf.NotAfter, LeafSHA256: hex.EncodeToString(sum[:]), LeafKey: leaf.RawSubjectPublicKeyInfo}
	var freshness []byte
	for _, ext := range leaf.Extensions {
		switch {
		case ext.Id.Equal(oidSerial):
			r.Serial = text(ext.Value)
		case ext.Id.Equal(oidUDID):
			r.UDID = text(ext.Value)
		case ext.Id.Equal(oidOSVersion):
			r.OSVersion = text(ext.Value)
		case ext.Id.Equal(oidSEPOSVersion):
			r.SEPOSVersion = text(ext.Value)
		case ext.Id.Equal(oidLLBVersion):
			r.LLBVersion = text(ext.Value)
		case ext.Id.Equal(oidFreshness):
			freshness = ext.Value
		case ext.Id.Equal(oidSIP):
			r.SIP = text(ext.Value)
		case ext.Id.Equal(oidSecureBoot):
			r.SecureBoot = text(ext.Value)
		case ext.Id.Equal(oidThirdPartyKexts):
			r.ThirdPartyKexts = text(ext.Value)
		}
	}
	if r.Serial == "" || r.UDID == "" || len(freshness) == 0 {
		return Result{}, ErrIncomplete
	}
	// The code is the digest itself, or the digest in an OCTET STRING;
	// both spellings are compared, so a raw digest that happens to parse
	// as DER is not misread.
	want := sha256.Sum256(nonce)
	r.Fresh = len(nonce) > 0 && (bytes.Equal(freshness, want[:]) || bytes.Equal(octets(freshness), want[:]))
	if !r.Fresh && now.Sub(leaf.NotBefore) > MaxCache {
		return r, fmt.Errorf("%w: made %s, not for this nonce", ErrStale, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return r, nil
}

// maxValue bounds one extension value kept as text.
const maxValue = 256

// text reads an extension value as Apple writes it: the raw bytes of a
// string, or the same wrapped in one DER string or octet-string value.
func text(v []byte) string {
	s := string(octets(v))
	if len(s) > maxValue {
		s = s[:maxValue]
	}
	return s
}

// octets unwraps a single DER OCTET STRING, UTF8String, PrintableString or
// IA5String that spans the whole value; anything else is taken raw.
func octets(v []byte) []byte {
	var raw asn1.RawValue
	if rest, err := asn1.Unmarshal(v, &raw); err == nil && len(rest) == 0 && raw.Class == asn1.ClassUniversal && !raw.IsCompound {
		switch raw.Tag {
		case asn1.TagOctetString, asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagIA5String:
			return raw.Bytes
		}
	}
	return v
}
