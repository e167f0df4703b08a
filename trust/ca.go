package trust

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"net/url"
)

// Authority is the trust CA: its certificate and a signer for its key.
type Authority interface {
	Certificate() *x509.Certificate
	Signer() crypto.Signer
}

// Owners finds whom a device belongs to.
type Owners interface {
	// OwnerEmail is the e-mail of the user an enrollment belongs to.
	OwnerEmail(ctx context.Context, enrollmentID string) (string, error)
}

// DeviceURI names a device in a certificate's URI SAN and in events.
func DeviceURI(deviceID string) string { return "urn:vestibule:device:" + deviceID }

// Contents fills what a device-trust certificate carries besides its
// subject: the owner's e-mail and the device's URI as SANs, and where
// relying parties find the CA, the CRL and the OCSP responder.
type Contents struct {
	Owners  Owners
	BaseURL string // the server's public URL
}

// Decorate adds the trust certificate's names and revocation pointers.
func (c Contents) Decorate(ctx context.Context, deviceID string, tmpl *x509.Certificate) error {
	email, err := c.Owners.OwnerEmail(ctx, deviceID)
	if err != nil {
		return fmt.Errorf("trust certificate owner: %w", err)
	}
	u, err := url.Parse(DeviceURI(deviceID))
	if err != nil {
		return fmt.Errorf("trust certificate URI: %w", err)
	}
	tmpl.EmailAddresses = []string{email}
	tmpl.URIs = []*url.URL{u}
	tmpl.CRLDistributionPoints = []string{c.BaseURL + CRLPath}
	tmpl.OCSPServer = []string{c.BaseURL + OCSPPath}
	tmpl.IssuingCertificateURL = []string{c.BaseURL + CACertPath}
	return nil
}

// Public paths of the trust CA.
const (
	SCEPPath   = "/scep/trust"
	CRLPath    = "/trust/crl"
	OCSPPath   = "/trust/ocsp"
	CACertPath = "/trust/ca.crt"
)
