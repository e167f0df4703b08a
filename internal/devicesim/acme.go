package devicesim

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"golang.org/x/crypto/acme"
)

// ACMEAttester makes the device-attest-01 answer a Secure Enclave would:
// the attestation chain (DER, leaf first) for key, fresh for the
// challenge token. A lying device returns something else.
type ACMEAttester func(token string, key crypto.PublicKey) ([][]byte, error)

// ACMEOptions make a device lie during ACME enrollment.
type ACMEOptions struct {
	// Attest answers the challenge; nil sends no attestation at all.
	Attest ACMEAttester
	// Format replaces "apple" in the attestation object.
	Format string
	// FinalizeKey, when set, is the key of the CSR instead of the attested
	// one (a key that never was in the Secure Enclave).
	FinalizeKey *ecdsa.PrivateKey
	// ClientIdentifier replaces the profile's (another reservation's).
	ClientIdentifier string
}

// ACMEError is a refusal from the ACME server, with where it happened.
type ACMEError struct {
	Step string
	Err  error
}

func (e *ACMEError) Error() string { return "ACME " + e.Step + ": " + e.Err.Error() }
func (e *ACMEError) Unwrap() error { return e.Err }

// EnrollACME gets the identity certificate as Apple's ACME client does
// for a com.apple.security.acme payload: account, an order for the
// ClientIdentifier as a permanent-identifier, device-attest-01 with the
// attestation of a new P-384 key "in the Secure Enclave", finalize with a
// CSR for that key, and the certificate. It uses golang.org/x/crypto/acme.
func (d *Device) EnrollACME(ctx context.Context, o ACMEOptions) error {
	p := d.Profile
	if p.ACMEDirectory == "" {
		return errors.New("the profile has no ACME payload")
	}
	accountKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	client := &acme.Client{Key: accountKey, DirectoryURL: p.ACMEDirectory, HTTPClient: d.Client}
	if _, err := client.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil {
		return &ACMEError{"account", err}
	}
	clientID := p.ClientIdentifier
	if o.ClientIdentifier != "" {
		clientID = o.ClientIdentifier
	}
	order, err := client.AuthorizeOrder(ctx, []acme.AuthzID{{Type: "permanent-identifier", Value: clientID}})
	if err != nil {
		return &ACMEError{"order", err}
	}
	authz, err := client.GetAuthorization(ctx, order.AuthzURLs[0])
	if err != nil {
		return &ACMEError{"authorization", err}
	}
	var chal *acme.Challenge
	for _, c := range authz.Challenges {
		if c.Type == "device-attest-01" {
			chal = c
		}
	}
	if chal == nil {
		return &ACMEError{"authorization", errors.New("no device-attest-01 challenge")}
	}
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return err
	}
	payload := map[string]string{}
	if o.Attest != nil {
		chain, err := o.Attest(chal.Token, key.Public())
		if err != nil {
			return err
		}
		format := "apple"
		if o.Format != "" {
			format = o.Format
		}
		att, err := cbor.Marshal(map[string]any{"fmt": format, "attStmt": map[string]any{"x5c": chain}})
		if err != nil {
			return err
		}
		payload["attObj"] = base64.RawURLEncoding.EncodeToString(att)
	}
	if chal.Payload, err = json.Marshal(payload); err != nil {
		return err
	}
	if _, err := client.Accept(ctx, chal); err != nil {
		return &ACMEError{"challenge", err}
	}
	if _, err := client.WaitOrder(ctx, order.URI); err != nil {
		return &ACMEError{"challenge", err}
	}
	csrKey := key
	if o.FinalizeKey != nil {
		csrKey = o.FinalizeKey
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: p.CN}}, csrKey)
	if err != nil {
		return err
	}
	ders, _, err := client.CreateOrderCert(ctx, order.FinalizeURL, csr, true)
	if err != nil {
		return &ACMEError{"finalize", err}
	}
	if len(ders) == 0 {
		return &ACMEError{"certificate", errors.New("no certificate")}
	}
	cert, err := x509.ParseCertificate(ders[0])
	if err != nil {
		return fmt.Errorf("ACME certificate: %w", err)
	}
	d.Cert, d.IdentityKey = cert, key
	return nil
}
