package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vestibule-mdm/vestibule/acme"
	"github.com/vestibule-mdm/vestibule/attest"
	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/checkin"
	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/mdm"
	"github.com/vestibule-mdm/vestibule/push"
	"github.com/vestibule-mdm/vestibule/scep"
	"github.com/vestibule-mdm/vestibule/store"
)

// SettingPublicURL is the public URL the running server serves, recorded
// for the admin commands beside it.
const SettingPublicURL = "public_url"

// App is everything a configuration builds: the store, the keys and the
// domain services. serve and every admin command use the same App, so a
// command acts on exactly what a server with that configuration would.
type App struct {
	// What it was built from, and what it reports.
	Config   config.Config
	Log      *slog.Logger
	Registry *prometheus.Registry                       // the metrics of the App's parts; the server serves it
	Ready    map[string]func(ctx context.Context) error // checks /readyz runs beyond the database's

	// BuildCore: storage and the parts that decide and administer.
	Store        *store.Store
	Users        *enrollment.Users
	Enrollments  *enrollment.Enrollments // without Tokens (BuildCore) it decides but admits no device
	Commands     *enrollment.Commands
	PostApproval enrollment.PostApproval
	APITokens    *auth.APITokens
	Sessions     *auth.Sessions
	Webhook      *webhook     // nil when no webhook is configured
	Mailer       *ownerMailer // nil when SMTP is not configured

	// Build: keys, devices and the outside world.
	Signer       enrollment.Signer
	Tokens       *enrollment.Tokens
	Reservations *enrollment.Reservations
	Passwords    *auth.PasswordLogin // nil when local sign-in is off
	CA           keyPair
	Profiles     *Profiles
	SCEP         *scep.Service
	ACME         *acme.Server // the Secure Enclave identity: ACME with device-attest-01
	Checkin      *checkin.Handler
	Refusals     *enrollment.RefusalAggregator // refused device requests, aggregated before the audit log
	Pusher       *push.Pusher                  // nil when push is not configured
	DEP          *DEP                          // nil when the ABM sync is off
	OIDC         *auth.OIDC                    // nil when no identity provider is configured
	Trust        *Trust                        // nil when there is no trust CA

	notify  notifiers
	closers []func() error
}

// BuildCore opens the store (migrated, or checked current when migrate is
// false) and builds what deciding and administering need: users, the
// approval gate (without the token key: it cannot admit devices),
// commands, API tokens, sessions and the owner notifications. It contacts
// no key backend, identity provider, APNs or Apple: admin commands such
// as `user list` run on it.
func BuildCore(ctx context.Context, cfg config.Config, log *slog.Logger, migrate bool) (_ *App, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &App{Config: cfg, Log: log, Registry: prometheus.NewRegistry(), Ready: map[string]func(context.Context) error{}}
	st, err := store.Open(ctx, cfg.Database.DSN, store.Options{MaxOpenConns: cfg.Database.MaxOpenConns, Logger: log,
		Webhook: cfg.MDM.WebhookURL != ""})
	if err != nil {
		return nil, err
	}
	a.Store = st
	a.closers = append(a.closers, st.Close)
	if st.Dialect() == store.SQLite {
		registerCheckpointMetrics(a.Registry, st)
	}
	// Whatever was opened is closed again when a later step fails.
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if err := a.schema(ctx, migrate); err != nil {
		return nil, err
	}
	a.Users = enrollment.NewUsers(st, time.Now)
	a.Commands = enrollment.NewCommands(st, time.Now)
	a.PostApproval = newPostApproval(cfg.MDM.PostApprovalProfiles, time.Now)
	if cfg.MDM.WebhookURL != "" {
		secret, err := os.ReadFile(cfg.MDM.WebhookSecretFile)
		if err != nil {
			return nil, fmt.Errorf("mdm.webhook_secret_file: %w", err)
		}
		a.Webhook = newWebhook(st, cfg.MDM.WebhookURL, cfg.PublicURL, []byte(strings.TrimSpace(string(secret))), cfg.MDM.WebhookRetryDelay.D(), log)
	}
	if cfg.SMTP.Host != "" {
		var password []byte
		if cfg.SMTP.PasswordFile != "" {
			if password, err = os.ReadFile(cfg.SMTP.PasswordFile); err != nil {
				return nil, fmt.Errorf("smtp.password_file: %w", err)
			}
		}
		a.Mailer = &ownerMailer{cfg: cfg.SMTP, password: strings.TrimSpace(string(password)), portal: cfg.PublicURL, org: cfg.Org.Name, log: log}
		a.notify = append(a.notify, a.Mailer)
	}
	a.Enrollments = a.gate(nil)
	a.Sessions = auth.NewSessions(st, cfg.Session.IdleTimeout.D(), cfg.Session.AbsoluteTimeout.D(), time.Now)
	a.APITokens = auth.NewAPITokens(st, time.Now)
	return a, nil
}

// gate is the approval gate with the owner notifications; tokens is nil
// for a gate that only decides.
func (a *App) gate(tokens *enrollment.Tokens) *enrollment.Enrollments {
	g := enrollment.NewEnrollments(a.Store, tokens, a.PostApproval, time.Now)
	if len(a.notify) > 0 {
		g.SetNotifier(a.notify)
	}
	return g
}

// Build is BuildCore and everything the server runs: the token key (Vault
// or the local file), reservations and profiles, the SCEP CA, push, the
// ABM sync, the identity provider, and the device endpoints.
// cfg.PublicURL must be final.
func Build(ctx context.Context, cfg config.Config, log *slog.Logger, migrate bool, opts ...Option) (_ *App, err error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	a, err := BuildCore(ctx, cfg, log, migrate)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	log, st := a.Log, a.Store
	sg, err := newSigner(ctx, cfg, log, a.Registry)
	if err != nil {
		return nil, err
	}
	a.Signer = sg.Signer
	if sg.close != nil {
		a.closers = append(a.closers, sg.close)
	}
	if sg.health != nil {
		a.Ready["vault"] = sg.health
	}
	if a.Tokens, err = enrollment.NewTokens(a.Signer, cfg.Org.ID, cfg.Enroll.ClockSkew.D(), time.Now); err != nil {
		return nil, err
	}
	a.Reservations = enrollment.NewReservations(st, a.Tokens, cfg.Org.ID, cfg.Enroll.TokenTTL.D(), time.Now)
	a.Enrollments = a.gate(a.Tokens)
	// Every new enrollment is asked for Managed Device Attestation, checked
	// against Apple's pinned root.
	verifier, err := attest.New(o.attest...)
	if err != nil {
		return nil, err
	}
	a.Enrollments.SetAttestation(attestationQuestion{}, verifier, cfg.Approval.RequireAttestation)
	// Refused requests from one source (device check-ins, SCEP, sign-ins)
	// are written once a minute, with a count, not once each; the rest is
	// flushed before the store closes.
	a.Refusals = enrollment.NewRefusalAggregator(st, time.Minute, 10_000, time.Now)
	a.closers = append(a.closers, func() error { return a.Refusals.Flush(context.Background(), true) })
	if cfg.Session.LocalLogin {
		a.Passwords = auth.NewPasswordLogin(st, a.Refusals, st, auth.DefaultThrottlePolicy(), time.Now)
	}
	if a.CA, err = loadCA(cfg, log); err != nil {
		return nil, err
	}
	if a.Profiles, err = NewProfiles(cfg, a.CA); err != nil {
		return nil, err
	}
	if a.Pusher, err = newPusher(cfg, st, log, a.Registry); err != nil {
		return nil, err
	}
	if a.Pusher != nil {
		a.Ready["push"] = a.Pusher.Health
	}
	if cfg.DEP.Enabled {
		if a.DEP, err = newDEP(cfg, st, log); err != nil {
			return nil, err
		}
	}
	if cfg.OIDC.Enabled() {
		if a.OIDC, err = newOIDC(ctx, cfg, st); err != nil {
			return nil, err
		}
	}
	if a.Trust, err = newTrust(cfg, st, a.APITokens, a.Profiles, a.Refusals, a.Registry, log); err != nil {
		return nil, err
	}
	a.SCEP, err = scep.New(scep.Options{Authority: a.CA, Store: scepStore{st, a.Refusals}, Validity: cfg.SCEP.CertValidity.D(),
		MinRSABits: cfg.SCEP.MinRSABits, Logger: log})
	if err != nil {
		return nil, err
	}
	a.ACME, err = acme.New(acme.Options{Store: st.ACME(), Authority: a.CA, Verifier: verifier, Audit: a.Refusals, BaseURL: cfg.PublicURL,
		Validity: cfg.SCEP.CertValidity.D(), Logger: log})
	if err != nil {
		return nil, err
	}
	proxies := trustedProxies(cfg)
	a.Checkin, err = checkin.New(checkin.Options{Gate: a.Enrollments, Queue: a.Commands, Certs: checkinCertificates{st},
		Audit: a.Refusals, CA: a.CA.Cert, TrustedProxy: checkin.TrustedProxy{Header: cfg.MDM.TrustedProxyHeader, Networks: proxies}, Logger: log})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// trustedProxies are mdm.trusted_proxy_cidrs, parsed (config validated
// them): the proxies whose certificate header and X-Forwarded-For are
// believed.
func trustedProxies(cfg config.Config) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range cfg.MDM.TrustedProxyCIDRs {
		out = append(out, netip.MustParsePrefix(c))
	}
	return out
}

// Option adjusts Build.
type Option func(*options)

type options struct{ attest []attest.Option }

// WithAttestationRoots trusts roots instead of Apple's for Managed Device
// Attestation. Tests use it with a root of their own; no configuration key
// reaches it, so a deployment always checks against Apple's.
func WithAttestationRoots(roots *x509.CertPool) Option {
	return func(o *options) { o.attest = append(o.attest, attest.WithRoots(roots)) }
}

// attestationQuestion builds the DeviceInformation question with the
// attestation query.
type attestationQuestion struct{}

func (attestationQuestion) AttestationQuestion(nonce []byte) (enrollment.NewCommand, error) {
	return newCommand(mdm.NewAttestationQuestion(nonce))
}

// scepStore is the store as SCEP sees it, its refusals aggregated.
type scepStore struct {
	*store.Store
	refusals *enrollment.RefusalAggregator
}

func (s scepStore) AppendAudit(ctx context.Context, ev enrollment.AuditEvent) error {
	return s.refusals.AppendAudit(ctx, ev)
}

func newOIDC(ctx context.Context, cfg config.Config, st *store.Store) (*auth.OIDC, error) {
	var secret string
	if cfg.OIDC.ClientSecretFile != "" {
		b, err := os.ReadFile(cfg.OIDC.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("oidc.client_secret_file: %w", err)
		}
		secret = strings.TrimSpace(string(b))
	}
	roles := map[string]enrollment.Role{}
	for g, r := range cfg.OIDC.GroupRoles {
		roles[g] = enrollment.Role(r)
	}
	o, err := auth.NewOIDC(ctx, auth.OIDCConfig{Issuer: cfg.OIDC.Issuer, ClientID: cfg.OIDC.ClientID, ClientSecret: secret,
		RedirectURL: cfg.PublicURL + "/auth/callback", Scopes: cfg.OIDC.Scopes, EmailClaim: cfg.OIDC.EmailClaim,
		AllowUnverifiedEmail: cfg.OIDC.AllowUnverifiedEmail, GroupsClaim: cfg.OIDC.GroupsClaim, GroupRoles: roles},
		st, st, st, time.Now)
	if err != nil {
		return nil, err
	}
	o.SetRoleSetter(enrollment.NewUsers(st, time.Now))
	return o, nil
}

// loadCA reads the SCEP CA; --dev creates it on first start.
func loadCA(cfg config.Config, log *slog.Logger) (keyPair, error) {
	if cfg.Dev {
		ca, created, err := InitCA(cfg.SCEP.CACertFile, cfg.SCEP.CAKeyFile, cfg.Org.Name, 2048)
		if err != nil {
			return keyPair{}, fmt.Errorf("dev CA: %w", err)
		}
		if created {
			log.Info("generated a development CA", "cert", cfg.SCEP.CACertFile)
		}
		return ca, nil
	}
	ca, err := loadKeyPair(cfg.SCEP.CACertFile, cfg.SCEP.CAKeyFile)
	if err != nil {
		return keyPair{}, fmt.Errorf("SCEP CA (scep.ca_cert_file, scep.ca_key_file): %w; create one with `vestibule ca init`", err)
	}
	return ca, nil
}

func (a *App) schema(ctx context.Context, migrate bool) error {
	if migrate {
		applied, err := a.Store.Migrate(ctx)
		if err != nil {
			return err
		}
		if len(applied) > 0 {
			a.Log.Info("database migrated", "versions", applied)
		}
		return nil
	}
	status, err := a.Store.Migrations(ctx)
	if err != nil {
		return err
	}
	if status.Pending() {
		return fmt.Errorf("the database schema is at version %d, this binary needs %d: run `vestibule migrate` first", status.Current, status.Target)
	}
	return nil
}

// Close releases what Build opened.
func (a *App) Close() error {
	var first error
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i](); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// registerCheckpointMetrics shows the SQLite checkpointer's work: a WAL
// that keeps growing, or failing rounds, is a database that will slow
// every read.
func registerCheckpointMetrics(reg prometheus.Registerer, st *store.Store) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vestibule_sqlite_wal_pages",
			Help: "Pages in the SQLite WAL at the last checkpoint round."},
			func() float64 { return float64(st.Checkpoints().WALFrames) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "vestibule_sqlite_checkpoints_total",
			Help: "SQLite checkpoint rounds run."},
			func() float64 { return float64(st.Checkpoints().Rounds) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "vestibule_sqlite_checkpoint_restarts_total",
			Help: "SQLite checkpoint rounds that started a long WAL over."},
			func() float64 { return float64(st.Checkpoints().Restarts) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "vestibule_sqlite_checkpoint_restarts_given_up_total",
			Help: "SQLite WAL restarts that gave up waiting for a reader."},
			func() float64 { return float64(st.Checkpoints().GaveUp) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "vestibule_sqlite_checkpoint_failures_total",
			Help: "SQLite checkpoint rounds that failed."},
			func() float64 { return float64(st.Checkpoints().Failed) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "vestibule_sqlite_transactions_total",
			Help: "SQLite writes committed."},
			func() float64 { return float64(st.WriteGroups().Transactions) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "vestibule_sqlite_commits_total",
			Help: "SQLite COMMITs: writes waiting together are committed together."},
			func() float64 { return float64(st.WriteGroups().Commits) }),
	)
}
