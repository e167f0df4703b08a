package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/mdm"
	"github.com/vestibule-mdm/vestibule/mdm/profile"
	"github.com/vestibule-mdm/vestibule/scep"
	"github.com/vestibule-mdm/vestibule/store"
	"github.com/vestibule-mdm/vestibule/trust"
	"github.com/vestibule-mdm/vestibule/trust/ssf"
	"github.com/vestibule-mdm/vestibule/web"
)

// Trust is device trust: the trust CA's SCEP service, its CRL and OCSP,
// the profile issuer and the SSF transmitter.
type Trust struct {
	CA          keyPair
	SCEP        *scep.Service
	Revocation  *trust.Revocation
	Issuer      *trust.Issuer
	Transmitter *ssf.Transmitter
	Keys        *ssf.Keyring
	devices     trustDevices
}

// Background intervals: the cheap scans run often, so an approval or a
// revocation reaches devices and receivers within seconds.
const (
	trustIssuerInterval     = 2 * time.Second
	trustIssuerFullInterval = 10 * time.Minute
	ssfInterval             = time.Second
	crlKeepInterval         = time.Minute
)

// newTrust builds device trust, or returns nil when there is no trust CA
// (outside --dev, `vestibule ca init --trust` makes one).
func newTrust(cfg config.Config, st *store.Store, tokens *auth.APITokens, profiles *Profiles, refusals *enrollment.RefusalAggregator,
	reg prometheus.Registerer, log *slog.Logger) (*Trust, error) {
	var ca keyPair
	var err error
	if cfg.Dev {
		var created bool
		ca, created, err = InitTrustCA(cfg.Trust.CACertFile, cfg.Trust.CAKeyFile, cfg.Org.Name, 2048)
		if created {
			log.Info("generated a development device-trust CA", "cert", cfg.Trust.CACertFile)
		}
	} else {
		ca, err = loadKeyPair(cfg.Trust.CACertFile, cfg.Trust.CAKeyFile)
		if errors.Is(err, fs.ErrNotExist) {
			log.Info("device trust is off: no trust CA; create one with `vestibule ca init --trust`", "cert", cfg.Trust.CACertFile)
			return nil, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("trust CA (trust.ca_cert_file, trust.ca_key_file): %w", err)
	}
	t := &Trust{CA: ca, devices: trustDevices{st}}
	contents := trust.Contents{Owners: st, BaseURL: cfg.PublicURL}
	t.SCEP, err = scep.New(scep.Options{Authority: ca, Store: trustIssuanceStore{st.TrustIssuance(), refusals},
		Validity: cfg.Trust.CertValidity.D(), MinRSABits: cfg.SCEP.MinRSABits, Decorate: contents.Decorate, Name: "trust", Logger: log})
	if err != nil {
		return nil, err
	}
	t.Revocation = trust.NewRevocation(ca, st, log, time.Now)
	t.Issuer, err = trust.NewIssuer(trust.IssuerOptions{Store: st, Profiles: trustProfiles{profiles, cfg, ca},
		RenewBefore: cfg.Trust.RenewBefore.D(), ChallengeTTL: cfg.Trust.ChallengeTTL.D(), Interval: trustIssuerInterval,
		FullInterval: trustIssuerFullInterval, Logger: log})
	if err != nil {
		return nil, err
	}
	if t.Keys, err = ssf.OpenKeyring(cfg.Trust.SSFKeyDir, cfg.Trust.SSFKeyRotation.D(), time.Now); err != nil {
		return nil, err
	}
	t.Transmitter, err = ssf.New(ssf.Options{Store: st, Keys: t.Keys, Issuer: cfg.PublicURL, Receivers: receivers{tokens},
		AllowHTTPPush: cfg.Dev, AllowPrivateEndpoints: cfg.Dev || cfg.Trust.SSFAllowPrivateEndpoints, Registerer: reg, Logger: log})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Run keeps the CRL current, sends trust profiles and delivers events
// until ctx ends. Every replica runs it; the store shares the work.
func (t *Trust) Run(ctx context.Context) {
	go t.Revocation.Keep(ctx, crlKeepInterval)
	go t.Issuer.Run(ctx)
	go t.Transmitter.Run(ctx, ssfInterval)
}

// Routes mounts the trust CA's SCEP, CRL and OCSP, and the SSF transmitter.
func (t *Trust) Routes(mux *http.ServeMux) {
	t.SCEP.RoutesAt(mux, trust.SCEPPath)
	t.Revocation.Routes(mux)
	t.Transmitter.Routes(mux)
	t.Transmitter.PullRoutes(mux, t.devices)
}

// trustIssuanceStore is the trust issuance store, its refusals aggregated.
type trustIssuanceStore struct {
	store.TrustIssuance
	refusals *enrollment.RefusalAggregator
}

func (s trustIssuanceStore) AppendAudit(ctx context.Context, ev enrollment.AuditEvent) error {
	return s.refusals.AppendAudit(ctx, ev)
}

// trustProfiles makes the signed InstallProfile command of a trust profile.
type trustProfiles struct {
	p   *Profiles
	cfg config.Config
	ca  keyPair
}

func (t trustProfiles) TrustProfile(e enrollment.Enrollment, challenge string) (enrollment.NewCommand, error) {
	body, err := profile.BuildTrust(profile.TrustOptions{DeviceID: e.ID, OrgName: t.cfg.Org.Name, IdentifierPrefix: t.cfg.Profile.IdentifierPrefix,
		SCEPURL: t.cfg.PublicURL + trust.SCEPPath, Challenge: challenge, CAName: t.ca.Cert.Subject.CommonName})
	if err != nil {
		return enrollment.NewCommand{}, err
	}
	signed, err := profile.Sign(body, t.p.signer.Cert, t.p.signer.Key, t.p.chain)
	if err != nil {
		return enrollment.NewCommand{}, err
	}
	return newCommand(mdm.NewInstallProfile(signed))
}

// receivers admits API tokens of the receiver role.
type receivers struct{ tokens *auth.APITokens }

func (r receivers) Receiver(ctx context.Context, bearer string) (ssf.Receiver, error) {
	tok, err := r.tokens.Authenticate(ctx, bearer)
	if err != nil {
		return ssf.Receiver{}, err
	}
	if tok.Role != enrollment.RoleReceiver {
		return ssf.Receiver{}, fmt.Errorf("token %s has role %s, not receiver", tok.Name, tok.Role)
	}
	return ssf.Receiver{TokenID: tok.ID, Name: strings.TrimSpace(tok.Name)}, nil
}

// trustDevices answers the pull API from the store.
type trustDevices struct{ st *store.Store }

func (d trustDevices) Enrollment(ctx context.Context, id string) (enrollment.Enrollment, error) {
	return d.st.Enrollment(ctx, id)
}

func (d trustDevices) DeviceTrustCertificates(ctx context.Context, id string) ([]ssf.TrustCert, error) {
	certs, err := d.st.TrustCertificates(ctx, id)
	if err != nil {
		return nil, err
	}
	out := make([]ssf.TrustCert, len(certs))
	for i, c := range certs {
		out[i] = trustCert(c)
	}
	return out, nil
}

func (d trustDevices) DeviceOfTrustCertificate(ctx context.Context, sum string) (string, ssf.TrustCert, error) {
	c, err := d.st.TrustCertificateBySHA256(ctx, sum)
	if err != nil {
		return "", ssf.TrustCert{}, err
	}
	return c.ReservationID, trustCert(c), nil
}

func trustCert(c scep.Certificate) ssf.TrustCert {
	return ssf.TrustCert{Serial: c.Serial, SHA256: c.SHA256, NotAfter: c.NotAfter, RevokedAt: c.RevokedAt, RevokeReason: c.RevokeReason}
}

// consoleTrust is device trust as the console shows it.
type consoleTrust struct {
	st      *store.Store
	summary web.TrustSummary
}

func newConsoleTrust(t *Trust, st *store.Store, publicURL string) web.TrustFacts {
	if t == nil {
		return nil
	}
	sum := sha256.Sum256(t.CA.Cert.Raw)
	return consoleTrust{st: st, summary: web.TrustSummary{CASubject: t.CA.Cert.Subject.String(), CASHA256: fmt.Sprintf("%X", sum),
		CAExpires: t.CA.Cert.NotAfter, CAURL: publicURL + trust.CACertPath, CRLURL: publicURL + trust.CRLPath, OCSPURL: publicURL + trust.OCSPPath,
		SSFMetadata: publicURL + ssf.ConfigurationPath}}
}

func (c consoleTrust) TrustCertificates(ctx context.Context, id string) ([]scep.Certificate, error) {
	return c.st.TrustCertificates(ctx, id)
}

func (c consoleTrust) LastEvents(ctx context.Context, id string) ([]ssf.LastEvent, error) {
	return c.st.LastEvents(ctx, id)
}

func (c consoleTrust) Streams(ctx context.Context, tokenID string) ([]ssf.Stream, error) {
	return c.st.Streams(ctx, tokenID)
}

func (c consoleTrust) DeleteStream(ctx context.Context, id string, ev enrollment.AuditEvent) error {
	if _, err := c.st.Stream(ctx, id); err != nil {
		return err
	}
	return c.st.DeleteStream(ctx, id, ev)
}

func (c consoleTrust) TrustSummary() web.TrustSummary { return c.summary }
