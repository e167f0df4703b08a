package checkin

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/mdm"
)

// ErrNoIdentity means the request carries no certificate we trust.
var ErrNoIdentity = errors.New("no trusted device identity")

// CertRecord is what Vestibule recorded when it issued a device certificate.
type CertRecord struct {
	ReservationID string
	NotAfter      time.Time
	RevokedAt     *time.Time
	// Attested is what Apple vouched for the key, when it was issued over
	// ACME with device-attest-01.
	Attested enrollment.IdentityAttestation
	// Enrollment is what a check-in decides on of the reservation's
	// enrollment, when the store read it in the same statement as the
	// record (one read per check-in); nil when it did not, or when there
	// is none yet.
	Enrollment *enrollment.CheckinView
	// NoCommands: that same read found none of the enrollment's commands
	// queued, sent or deferred.
	NoCommands bool
}

// CertificateStore finds issued certificates by their SHA-256 fingerprint.
type CertificateStore interface {
	CertificateBySHA256(ctx context.Context, fingerprint string) (CertRecord, error)
}

// TrustedProxy accepts a client certificate forwarded in a header by a TLS
// terminating proxy, from the listed networks only. The header holds either
// an RFC 9440 Client-Cert value (":BASE64-DER:") or a URL-escaped PEM
// certificate (nginx's $ssl_client_escaped_cert).
type TrustedProxy struct {
	Header   string
	Networks []netip.Prefix
}

// Identifier establishes the device behind a request, before any field of
// its body is believed.
type Identifier struct {
	roots *x509.CertPool
	certs CertificateStore
	proxy TrustedProxy
	now   func() time.Time
	// verified skips verifying again what was verified before.
	verified verified
}

// NewIdentifier trusts device certificates issued by ca and recorded in
// certs.
func NewIdentifier(ca *x509.Certificate, certs CertificateStore, proxy TrustedProxy, now func() time.Time) *Identifier {
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if now == nil {
		now = time.Now
	}
	return &Identifier{roots: roots, certs: certs, proxy: proxy, now: now, verified: newVerified(maxVerified)}
}

// Identity is a verified device certificate's issuance record.
type Identity struct {
	Record CertRecord
}

// Identify returns the verified identity of the request's sender: the
// Mdm-Signature over body, or the TLS client certificate, or the trusted
// proxy's header, in that order. The certificate must chain to our CA for
// client authentication, be one we issued and recorded, and be neither
// expired nor revoked.
func (id *Identifier) Identify(ctx context.Context, r *http.Request, body []byte) (Identity, error) {
	now := id.now()
	// An Mdm-Signature and body verified before, signed by a certificate
	// whose chain still holds, need no verifying again.
	sigKey, keyed := signatureKeyOf(r, body)
	var fp [32]byte
	known := false
	if keyed {
		fp, known = id.verified.signatures.get(sigKey)
		known = known && id.verified.chainHolds(fp, now)
	}
	var verifiedChain []*x509.Certificate
	if !known {
		cert, err := id.certificate(r, body)
		if err != nil {
			return Identity{}, err
		}
		fp = sha256.Sum256(cert.Raw)
		if !id.verified.chainHolds(fp, now) {
			chains, err := cert.Verify(x509.VerifyOptions{Roots: id.roots, CurrentTime: now,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			if err != nil {
				return Identity{}, fmt.Errorf("%w: certificate %X does not chain to the Vestibule CA: %v", ErrNoIdentity, cert.SerialNumber, err)
			}
			verifiedChain = chains[0]
		}
	}
	hexFP := hex.EncodeToString(fp[:])
	rec, err := id.certs.CertificateBySHA256(ctx, hexFP)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: certificate %.16s… is not on record: %v", ErrNoIdentity, hexFP, err)
	}
	if rec.RevokedAt != nil {
		return Identity{}, fmt.Errorf("%w: certificate %.16s… was revoked", ErrNoIdentity, hexFP)
	}
	if !now.Before(rec.NotAfter) {
		return Identity{}, fmt.Errorf("%w: certificate %.16s… expired", ErrNoIdentity, hexFP)
	}
	// Only a certificate we would accept is remembered: one revoked or
	// never recorded cannot push real devices out of the caches.
	if !known {
		if verifiedChain != nil {
			id.verified.rememberChain(fp, verifiedChain)
		}
		if keyed {
			id.verified.signatures.put(sigKey, fp)
		}
	}
	return Identity{Record: rec}, nil
}

// signatureKeyOf is the signature cache's key for a request signed with
// an Mdm-Signature of a size VerifySignature accepts; false otherwise.
func signatureKeyOf(r *http.Request, body []byte) ([32]byte, bool) {
	h := r.Header.Get(mdm.SignatureHeader)
	if h == "" || len(h) > mdm.MaxSignatureLen {
		return [32]byte{}, false
	}
	return signatureKey(h, body), true
}

func (id *Identifier) certificate(r *http.Request, body []byte) (*x509.Certificate, error) {
	if h := r.Header.Get(mdm.SignatureHeader); h != "" {
		cert, err := mdm.VerifySignature(h, body)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoIdentity, err)
		}
		return cert, nil
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return r.TLS.PeerCertificates[0], nil
	}
	if id.proxy.Header != "" {
		if vs := r.Header.Values(id.proxy.Header); len(vs) > 0 {
			if !id.fromProxy(r) {
				return nil, fmt.Errorf("%w: %s header from an untrusted address", ErrNoIdentity, id.proxy.Header)
			}
			// A proxy that appends its header instead of replacing the
			// client's would let a client choose its certificate.
			if len(vs) > 1 {
				return nil, fmt.Errorf("%w: %d %s headers", ErrNoIdentity, len(vs), id.proxy.Header)
			}
			return parseForwardedCert(vs[0])
		}
	}
	return nil, fmt.Errorf("%w: no Mdm-Signature and no client certificate", ErrNoIdentity)
}

func (id *Identifier) fromProxy(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	for _, p := range id.proxy.Networks {
		if p.Contains(addr.Unmap()) {
			return true
		}
	}
	return false
}

// maxForwardedCert bounds the header: a device certificate is a few
// kilobytes.
const maxForwardedCert = 16 << 10

// parseForwardedCert reads the certificate a trusted proxy forwarded: an
// RFC 9440 Client-Cert value (a structured-field byte sequence, base64 DER
// between colons), or a URL-escaped PEM certificate, the form nginx's
// $ssl_client_escaped_cert and many proxies forward.
func parseForwardedCert(v string) (*x509.Certificate, error) {
	if len(v) > maxForwardedCert {
		return nil, fmt.Errorf("%w: forwarded certificate of %d bytes", ErrNoIdentity, len(v))
	}
	v = strings.TrimSpace(v)
	if len(v) >= 2 && v[0] == ':' && v[len(v)-1] == ':' {
		// RFC 8941 parsers should accept unpadded base64 too.
		der, err := base64.StdEncoding.DecodeString(v[1 : len(v)-1])
		if err != nil {
			der, err = base64.RawStdEncoding.DecodeString(v[1 : len(v)-1])
		}
		if err != nil {
			return nil, fmt.Errorf("%w: Client-Cert is not base64: %v", ErrNoIdentity, err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: Client-Cert: %v", ErrNoIdentity, err)
		}
		return cert, nil
	}
	unescaped, err := url.QueryUnescape(v)
	if err != nil {
		return nil, fmt.Errorf("%w: forwarded certificate: %v", ErrNoIdentity, err)
	}
	block, _ := pem.Decode([]byte(unescaped))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: forwarded certificate is not PEM", ErrNoIdentity)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: forwarded certificate: %v", ErrNoIdentity, err)
	}
	return cert, nil
}
