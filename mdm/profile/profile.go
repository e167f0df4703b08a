// Package profile builds and signs enrollment profiles: the .mobileconfig
// a device installs to get its SCEP identity and its MDM enrollment.
package profile

import (
	"crypto"
	"crypto/sha1"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/micromdm/plist"
	"github.com/smallstep/pkcs7"
)

// Options describe one reservation's profile.
type Options struct {
	// ReservationID is the device ID the profile is made for: the SCEP
	// subject CN and part of every payload identifier.
	ReservationID string
	// OrgName names the organisation in what the person sees.
	OrgName string
	// IdentifierPrefix is a reverse-DNS prefix for payload identifiers,
	// e.g. "com.example.vestibule".
	IdentifierPrefix string
	// SCEPURL is where the device gets its certificate.
	SCEPURL string
	// Challenge is the one-time SCEP challenge.
	Challenge string
	// CAName is the SCEP CA's name (the payload's Name).
	CAName string
	// ServerURL is the MDM command connection URL.
	ServerURL string
	// CheckInURL carries the enrollment token.
	CheckInURL string
	// Topic is the APNs push topic of the MDM push certificate.
	Topic string
	// KeySize is the RSA key size the device generates; 2048 if zero.
	KeySize int
	// TLSRoot, when set, is added as a certificate payload so the device
	// trusts a private TLS CA.
	TLSRoot *x509.Certificate
	// ACMEDirectoryURL, when set, makes the identity an ACME payload
	// instead of SCEP: a key made in the Secure Enclave (HardwareBound),
	// attested by Apple (Attest), with Challenge as the one-time
	// ClientIdentifier. SCEPURL is then not used.
	ACMEDirectoryURL string
}

// Validate names the first field that is wrong.
func (o Options) Validate() error {
	for _, f := range []struct{ name, v string }{
		{"ReservationID", o.ReservationID}, {"OrgName", o.OrgName}, {"IdentifierPrefix", o.IdentifierPrefix},
		{"Challenge", o.Challenge}, {"Topic", o.Topic},
	} {
		if strings.TrimSpace(f.v) == "" {
			return fmt.Errorf("profile: %s is required", f.name)
		}
	}
	identityURL := struct{ name, v string }{"SCEPURL", o.SCEPURL}
	if o.ACMEDirectoryURL != "" {
		identityURL = struct{ name, v string }{"ACMEDirectoryURL", o.ACMEDirectoryURL}
	}
	for _, f := range []struct{ name, v string }{identityURL, {"ServerURL", o.ServerURL}, {"CheckInURL", o.CheckInURL}} {
		u, err := url.Parse(f.v)
		if err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return fmt.Errorf("profile: %s %q is not an absolute http(s) URL", f.name, f.v)
		}
	}
	if o.KeySize != 0 && o.KeySize < 2048 {
		return errors.New("profile: KeySize must be at least 2048")
	}
	return nil
}

// payloadUUID derives a stable UUID (version 5 layout over SHA-1) from the
// reservation and a payload name, so a profile rebuilt for the same
// reservation replaces, rather than duplicates, what a device installed.
func payloadUUID(reservationID, name string) string {
	h := sha1.Sum([]byte("vestibule:" + reservationID + ":" + name))
	h[6] = (h[6] & 0x0f) | 0x50
	h[8] = (h[8] & 0x3f) | 0x80
	return strings.ToUpper(fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16]))
}

type payloadHeader struct {
	PayloadType         string
	PayloadVersion      int
	PayloadIdentifier   string
	PayloadUUID         string
	PayloadDisplayName  string `plist:",omitempty"`
	PayloadDescription  string `plist:",omitempty"`
	PayloadOrganization string `plist:",omitempty"`
}

type scepContent struct {
	URL       string
	Challenge string
	Name      string       `plist:",omitempty"`
	Subject   [][][]string `plist:",omitempty"`
	Keysize   int
	KeyType   string `plist:"Key Type"`
	KeyUsage  int    `plist:"Key Usage"`
	// Set only in trust profiles: apps (browsers, Okta Verify) may present
	// the certificate, and its key never leaves the keychain.
	AllowAllAppsAccess *bool `plist:",omitempty"`
	KeyIsExtractable   *bool `plist:",omitempty"`
}

type scepPayload struct {
	payloadHeader
	PayloadContent scepContent
}

// acmePayload is com.apple.security.acme: the identity key is made in the
// Secure Enclave and its certificate fetched over ACME, proving with
// device-attest-01 what the hardware is.
type acmePayload struct {
	payloadHeader
	DirectoryURL     string
	ClientIdentifier string
	KeySize          int
	KeyType          string
	HardwareBound    bool
	Attest           bool
	Subject          [][][]string
}

type mdmPayload struct {
	payloadHeader
	ServerURL               string
	CheckInURL              string
	Topic                   string
	IdentityCertificateUUID string
	SignMessage             bool
	AccessRights            int
	CheckOutWhenRemoved     bool
	ServerCapabilities      []string
}

type certPayload struct {
	payloadHeader
	PayloadContent []byte
}

type configuration struct {
	payloadHeader
	PayloadScope             string
	PayloadRemovalDisallowed bool
	PayloadContent           []any
}

// AllRights is every MDM access right (Apple's AccessRights bit mask).
const AllRights = 8191

// Build returns the unsigned profile plist.
func Build(o Options) ([]byte, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	keySize := o.KeySize
	if keySize == 0 {
		keySize = 2048
	}
	id := func(name string) string { return o.IdentifierPrefix + "." + o.ReservationID + "." + name }
	subject := [][][]string{{{"CN", o.ReservationID}}}
	var identity any
	identityUUID := payloadUUID(o.ReservationID, "scep")
	if o.ACMEDirectoryURL != "" {
		identityUUID = payloadUUID(o.ReservationID, "acme")
		identity = acmePayload{
			payloadHeader: payloadHeader{PayloadType: "com.apple.security.acme", PayloadVersion: 1, PayloadIdentifier: id("acme"),
				PayloadUUID: identityUUID, PayloadDisplayName: o.OrgName + " device identity (Secure Enclave)"},
			DirectoryURL: o.ACMEDirectoryURL, ClientIdentifier: o.Challenge, KeySize: 384, KeyType: "ECSECPrimeRandom",
			HardwareBound: true, Attest: true, Subject: subject,
		}
	} else {
		identity = scepPayload{
			payloadHeader: payloadHeader{PayloadType: "com.apple.security.scep", PayloadVersion: 1, PayloadIdentifier: id("scep"),
				PayloadUUID: identityUUID, PayloadDisplayName: o.OrgName + " device identity"},
			PayloadContent: scepContent{URL: o.SCEPURL, Challenge: o.Challenge, Name: o.CAName,
				Subject: subject, Keysize: keySize, KeyType: "RSA", KeyUsage: 5},
		}
	}
	content := []any{
		identity,
		mdmPayload{
			payloadHeader: payloadHeader{PayloadType: "com.apple.mdm", PayloadVersion: 1, PayloadIdentifier: id("mdm"),
				PayloadUUID: payloadUUID(o.ReservationID, "mdm"), PayloadDisplayName: o.OrgName + " device management"},
			ServerURL: o.ServerURL, CheckInURL: o.CheckInURL, Topic: o.Topic, IdentityCertificateUUID: identityUUID,
			SignMessage: true, AccessRights: AllRights, CheckOutWhenRemoved: true,
			ServerCapabilities: []string{"com.apple.mdm.per-user-connections"},
		},
	}
	if o.TLSRoot != nil {
		content = append([]any{certPayload{
			payloadHeader: payloadHeader{PayloadType: "com.apple.security.root", PayloadVersion: 1, PayloadIdentifier: id("tls-root"),
				PayloadUUID: payloadUUID(o.ReservationID, "tls-root"), PayloadDisplayName: o.TLSRoot.Subject.CommonName},
			PayloadContent: o.TLSRoot.Raw,
		}}, content...)
	}
	cfg := configuration{
		payloadHeader: payloadHeader{PayloadType: "Configuration", PayloadVersion: 1, PayloadIdentifier: o.IdentifierPrefix + "." + o.ReservationID,
			PayloadUUID: payloadUUID(o.ReservationID, "configuration"), PayloadDisplayName: o.OrgName + " enrollment",
			PayloadOrganization: o.OrgName,
			PayloadDescription: "Enrolls this device with " + o.OrgName + ". After installation the device waits until an administrator approves it; " +
				"nothing else is installed before then."},
		PayloadScope:   "System",
		PayloadContent: content,
	}
	b, err := plist.MarshalIndent(cfg, "\t")
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	return b, nil
}

// Sign wraps a profile in CMS SignedData with the content attached, so the
// device shows who signed it. chain holds intermediates and, usefully, the
// root, so a verifier can build the path from the signature alone.
func Sign(profile []byte, cert *x509.Certificate, key crypto.Signer, chain []*x509.Certificate) ([]byte, error) {
	sd, err := pkcs7.NewSignedData(profile)
	if err != nil {
		return nil, fmt.Errorf("sign profile: %w", err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSignerChain(cert, key, chain, pkcs7.SignerInfoConfig{}); err != nil {
		return nil, fmt.Errorf("sign profile: %w", err)
	}
	b, err := sd.Finish()
	if err != nil {
		return nil, fmt.Errorf("sign profile: %w", err)
	}
	return b, nil
}

// TrustOptions describe the profile that gets an approved device its
// device-trust certificate.
type TrustOptions struct {
	DeviceID         string
	OrgName          string
	IdentifierPrefix string
	SCEPURL          string
	Challenge        string
	CAName           string
}

// BuildTrust returns the unsigned trust profile: one SCEP payload for the
// trust CA. Its identifiers are stable per device, so a renewal replaces
// the certificate installed before.
func BuildTrust(o TrustOptions) ([]byte, error) {
	for _, f := range []struct{ name, v string }{{"DeviceID", o.DeviceID}, {"OrgName", o.OrgName},
		{"IdentifierPrefix", o.IdentifierPrefix}, {"Challenge", o.Challenge}} {
		if strings.TrimSpace(f.v) == "" {
			return nil, fmt.Errorf("trust profile: %s is required", f.name)
		}
	}
	if u, err := url.Parse(o.SCEPURL); err != nil || !u.IsAbs() || u.Host == "" {
		return nil, fmt.Errorf("trust profile: SCEPURL %q is not an absolute URL", o.SCEPURL)
	}
	yes, no := true, false
	id := o.IdentifierPrefix + "." + o.DeviceID + ".trust"
	cfg := configuration{
		payloadHeader: payloadHeader{PayloadType: "Configuration", PayloadVersion: 1, PayloadIdentifier: id,
			PayloadUUID: payloadUUID(o.DeviceID, "trust-configuration"), PayloadDisplayName: o.OrgName + " device trust",
			PayloadOrganization: o.OrgName,
			PayloadDescription:  "Proves to " + o.OrgName + "'s sign-in and network services that this is an approved company device."},
		PayloadScope: "System",
		PayloadContent: []any{scepPayload{
			payloadHeader: payloadHeader{PayloadType: "com.apple.security.scep", PayloadVersion: 1, PayloadIdentifier: id + ".scep",
				PayloadUUID: payloadUUID(o.DeviceID, "trust-scep"), PayloadDisplayName: o.OrgName + " device trust certificate"},
			PayloadContent: scepContent{URL: o.SCEPURL, Challenge: o.Challenge, Name: o.CAName,
				Subject: [][][]string{{{"CN", o.DeviceID}}}, Keysize: 2048, KeyType: "RSA", KeyUsage: 5,
				AllowAllAppsAccess: &yes, KeyIsExtractable: &no},
		}},
	}
	b, err := plist.MarshalIndent(cfg, "\t")
	if err != nil {
		return nil, fmt.Errorf("trust profile: %w", err)
	}
	return b, nil
}
