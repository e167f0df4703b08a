package scep

import (
	"crypto"
	"crypto/x509"
)

// Authority is the CA that issues device certificates. Its key may live
// elsewhere (Vault PKI, an HSM) as long as it can sign, and decrypt the
// envelopes SCEP clients encrypt to the CA certificate.
type Authority interface {
	Certificate() *x509.Certificate
	Signer() crypto.Signer
	Decrypter() crypto.Decrypter
}
