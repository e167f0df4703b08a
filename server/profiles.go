package server

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"

	"github.com/vestibule-mdm/vestibule/acme"
	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/mdm/profile"
)

// Profiles builds and signs the enrollment profile of a reservation.
type Profiles struct {
	base          profile.Options
	acmeDirectory string
	checkin       string
	signer        keyPair
	chain         []*x509.Certificate
}

// NewProfiles loads the profile-signing key pair (--dev: made by the dev
// CA) and fixes what every profile shares.
func NewProfiles(cfg config.Config, ca keyPair) (*Profiles, error) {
	p := &Profiles{checkin: cfg.PublicURL + "/mdm/checkin", acmeDirectory: cfg.PublicURL + acme.Prefix + "/directory"}
	var err error
	if cfg.Profile.SigningCertFile != "" {
		p.signer, err = loadKeyPair(cfg.Profile.SigningCertFile, cfg.Profile.SigningKeyFile)
	} else {
		p.signer, err = devProfileSigner(cfg.DataDir, cfg.Org.Name, ca)
		p.chain = []*x509.Certificate{ca.Cert}
	}
	if err != nil {
		return nil, fmt.Errorf("profile signing key: %w", err)
	}
	var tlsRoot *x509.Certificate
	if cfg.Profile.TLSRootFile != "" {
		b, err := os.ReadFile(cfg.Profile.TLSRootFile)
		if err != nil {
			return nil, fmt.Errorf("profile.tls_root_file: %w", err)
		}
		block, _ := pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("profile.tls_root_file: no PEM certificate")
		}
		if tlsRoot, err = x509.ParseCertificate(block.Bytes); err != nil {
			return nil, fmt.Errorf("profile.tls_root_file: %w", err)
		}
	}
	p.base = profile.Options{OrgName: cfg.Org.Name, IdentifierPrefix: cfg.Profile.IdentifierPrefix, SCEPURL: cfg.PublicURL + "/scep",
		CAName: ca.Cert.Subject.CommonName, ServerURL: cfg.PublicURL + "/mdm/connect", Topic: cfg.MDM.Topic, TLSRoot: tlsRoot}
	return p, nil
}

// MakeProfile returns the signed .mobileconfig for one reservation and its
// secrets.
func (p *Profiles) MakeProfile(_ context.Context, r enrollment.Reservation, s enrollment.Secrets) ([]byte, error) {
	o := p.base
	o.ReservationID = r.ID
	o.Challenge = s.Challenge
	if r.Identity == enrollment.IdentityACME {
		o.ACMEDirectoryURL = p.acmeDirectory
	}
	o.CheckInURL = p.checkin + "?t=" + url.QueryEscape(s.Token)
	body, err := profile.Build(o)
	if err != nil {
		return nil, err
	}
	return profile.Sign(body, p.signer.Cert, p.signer.Key, p.chain)
}
