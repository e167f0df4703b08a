package server

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// keyPair is a certificate with its private key.
type keyPair struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Certificate, Signer and Decrypter make a key pair a SCEP authority.
func (kp keyPair) Certificate() *x509.Certificate { return kp.Cert }

// Signer returns the private key.
func (kp keyPair) Signer() crypto.Signer { return kp.Key }

// Decrypter returns the private key for SCEP envelopes; nil if it cannot
// decrypt (not RSA).
func (kp keyPair) Decrypter() crypto.Decrypter {
	d, _ := kp.Key.(crypto.Decrypter)
	return d
}

// loadKeyPair reads a PEM certificate and a PEM private key (PKCS#8, PKCS#1
// or SEC 1) and checks they belong together.
func loadKeyPair(certFile, keyFile string) (keyPair, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return keyPair{}, err
	}
	block, _ := pem.Decode(cb)
	if block == nil || block.Type != "CERTIFICATE" {
		return keyPair{}, fmt.Errorf("%s: no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return keyPair{}, fmt.Errorf("%s: %w", certFile, err)
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return keyPair{}, err
	}
	key, err := parsePrivateKey(kb)
	if err != nil {
		return keyPair{}, fmt.Errorf("%s: %w", keyFile, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return keyPair{}, fmt.Errorf("%s does not hold the key of %s", keyFile, certFile)
	}
	return keyPair{Cert: cert, Key: key}, nil
}

func parsePrivateKey(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM private key")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, errors.New("unsupported private key type")
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("unsupported private key encoding")
}

// writeKeyPair writes both files with mode 0600 in a 0700 directory.
func writeKeyPair(kp keyPair, certFile, keyFile string) error {
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(kp.Key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kp.Cert.Raw}), 0o600)
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// issue signs a certificate for a new RSA key; issuer nil makes it
// self-signed.
func issue(tmpl *x509.Certificate, issuer *keyPair, bits int) (keyPair, error) {
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return keyPair{}, err
	}
	if tmpl.SerialNumber, err = serialNumber(); err != nil {
		return keyPair{}, err
	}
	parent, signer := tmpl, crypto.Signer(key)
	if issuer != nil {
		parent, signer = issuer.Cert, issuer.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return keyPair{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{Cert: cert, Key: key}, nil
}

// Development PKI file names in the data dir.
const (
	devProfileCertFile = "profile-signing.pem"
	devProfileKeyFile  = "profile-signing.key"
)

// loadOrCreate reads a key pair, or makes and saves one with create when
// neither file exists.
func loadOrCreate(certFile, keyFile string, create func() (keyPair, error)) (keyPair, bool, error) {
	kp, err := loadKeyPair(certFile, keyFile)
	if err == nil {
		return kp, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return keyPair{}, false, err
	}
	if _, statErr := os.Stat(certFile); statErr == nil {
		return keyPair{}, false, fmt.Errorf("%s exists but %s does not", certFile, keyFile)
	}
	if kp, err = create(); err != nil {
		return keyPair{}, false, err
	}
	if err := writeKeyPair(kp, certFile, keyFile); err != nil {
		return keyPair{}, false, err
	}
	return kp, true, nil
}

// InitCA creates the SCEP CA key pair at the configured paths unless it
// exists; created says which.
func InitCA(certFile, keyFile, orgName string, bits int) (keyPair, bool, error) {
	return initRootCA(certFile, keyFile, orgName+" Device CA", orgName, bits)
}

// InitTrustCA creates the device-trust CA at the configured paths unless it
// exists. It is RSA because devices get their trust certificates over
// SCEP, encrypting requests to it.
func InitTrustCA(certFile, keyFile, orgName string, bits int) (keyPair, bool, error) {
	return initRootCA(certFile, keyFile, orgName+" Device Trust CA", orgName, bits)
}

func initRootCA(certFile, keyFile, commonName, orgName string, bits int) (keyPair, bool, error) {
	return loadOrCreate(certFile, keyFile, func() (keyPair, error) {
		now := time.Now()
		return issue(&x509.Certificate{
			Subject:               pkix.Name{CommonName: commonName, Organization: []string{orgName}},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.AddDate(10, 0, 0),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
			IsCA:                  true,
			MaxPathLenZero:        true,
		}, nil, bits)
	})
}

// devProfileSigner is the profile-signing certificate of --dev.
func devProfileSigner(dataDir, orgName string, ca keyPair) (keyPair, error) {
	kp, _, err := initProfileSigner(filepath.Join(dataDir, devProfileCertFile), filepath.Join(dataDir, devProfileKeyFile),
		orgName+" Profile Signing (dev)", orgName, ca)
	return kp, err
}

// InitProfileSigner creates the profile-signing key pair, certified by ca,
// unless it exists.
func InitProfileSigner(certFile, keyFile, orgName string, ca keyPair) (keyPair, bool, error) {
	return initProfileSigner(certFile, keyFile, orgName+" Profile Signing", orgName, ca)
}

func initProfileSigner(certFile, keyFile, commonName, orgName string, ca keyPair) (keyPair, bool, error) {
	return loadOrCreate(certFile, keyFile, func() (keyPair, error) {
		now := time.Now()
		return issue(&x509.Certificate{
			Subject:     pkix.Name{CommonName: commonName, Organization: []string{orgName}},
			NotBefore:   now.Add(-time.Hour),
			NotAfter:    now.AddDate(2, 0, 0),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection, x509.ExtKeyUsageCodeSigning},
		}, &ca, 2048)
	})
}

// InitLocalTLS creates, unless they exist, a local TLS CA (tls-ca.pem,
// tls-ca.key in dir) and a server certificate for hosts signed by it:
// HTTPS for a trial without a public CA. Devices and browsers must trust
// tls-ca.pem (profile.tls_root_file puts it in every profile).
func InitLocalTLS(dir, orgName string, hosts []string) (ca, server keyPair, err error) {
	ca, _, err = initRootCA(filepath.Join(dir, "tls-ca.pem"), filepath.Join(dir, "tls-ca.key"), orgName+" Local TLS CA", orgName, 2048)
	if err != nil {
		return keyPair{}, keyPair{}, err
	}
	server, _, err = loadOrCreate(filepath.Join(dir, "tls.pem"), filepath.Join(dir, "tls.key"), func() (keyPair, error) {
		now := time.Now()
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{CommonName: hosts[0], Organization: []string{orgName}},
			NotBefore:   now.Add(-time.Hour),
			NotAfter:    now.AddDate(1, 0, 0),
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
		return issue(tmpl, &ca, 2048)
	})
	return ca, server, err
}

// LoadKeyPair reads a PEM certificate and its key.
func LoadKeyPair(certFile, keyFile string) (keyPair, error) { return loadKeyPair(certFile, keyFile) }
