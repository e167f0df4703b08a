package mdm

import (
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/smallstep/pkcs7"
)

// Signature errors: each means the request is not authenticated.
var (
	ErrNoSignature  = errors.New("no Mdm-Signature")
	ErrBadSignature = errors.New("Mdm-Signature does not verify")
)

// SignatureHeader is the header a device with SignMessage sends.
const SignatureHeader = "Mdm-Signature"

// MaxSignatureLen bounds the header: a CMS with a 4096-bit RSA signature
// and a certificate chain is a few kilobytes.
const MaxSignatureLen = 32 << 10

// VerifySignature checks that header holds a detached CMS signature over
// body and returns the signing certificate. It says nothing about whether
// that certificate is trusted: the caller checks it against its CA and its
// records.
func VerifySignature(header string, body []byte) (*x509.Certificate, error) {
	if header == "" {
		return nil, ErrNoSignature
	}
	if len(header) > MaxSignatureLen {
		return nil, fmt.Errorf("%w: header of %d bytes", ErrBadSignature, len(header))
	}
	der, err := base64.StdEncoding.DecodeString(header)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64", ErrBadSignature)
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return nil, fmt.Errorf("%w: not CMS: %v", ErrBadSignature, err)
	}
	if len(p7.Signers) != 1 {
		return nil, fmt.Errorf("%w: %d signers", ErrBadSignature, len(p7.Signers))
	}
	if len(p7.Content) != 0 {
		return nil, fmt.Errorf("%w: signature is not detached", ErrBadSignature)
	}
	p7.Content = body
	if err := p7.Verify(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	cert := p7.GetOnlySigner()
	if cert == nil {
		return nil, fmt.Errorf("%w: signer certificate not included", ErrBadSignature)
	}
	return cert, nil
}

// Sign makes a detached Mdm-Signature header value over body, as a device
// does. Vestibule uses it in its device simulator and load generator.
func Sign(body []byte, cert *x509.Certificate, key any) (string, error) {
	sd, err := pkcs7.NewSignedData(body)
	if err != nil {
		return "", err
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSigner(cert, key, pkcs7.SignerInfoConfig{}); err != nil {
		return "", err
	}
	sd.Detach()
	der, err := sd.Finish()
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(der), nil
}
