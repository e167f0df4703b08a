package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vestibule-mdm/vestibule/store/dsn"
)

// Config is the whole configuration. Every field has a yaml key; the
// environment variable that overrides it is VESTIBULE_ followed by the key
// path in upper case joined with underscores (database.dsn →
// VESTIBULE_DATABASE_DSN).
type Config struct {
	// Dev selects the embedded defaults; it is set by the --dev flag only.
	Dev bool `yaml:"-"`

	Listen    string     `yaml:"listen"`
	PublicURL string     `yaml:"public_url"`
	DataDir   string     `yaml:"data_dir"`
	Org       Org        `yaml:"org"`
	Database  Database   `yaml:"database"`
	HTTP      HTTP       `yaml:"http"`
	TLS       TLS        `yaml:"tls"`
	Log       Log        `yaml:"log"`
	Enroll    Enrollment `yaml:"enrollment"`
	Signer    Signer     `yaml:"signer"`
	MDM       MDM        `yaml:"mdm"`
	Profile   Profile    `yaml:"profile"`
	SCEP      SCEP       `yaml:"scep"`
	Trust     Trust      `yaml:"trust"`
	Vault     Vault      `yaml:"vault"`
	Session   Session    `yaml:"session"`
	Push      Push       `yaml:"push"`
	OIDC      OIDC       `yaml:"oidc"`
	Portal    Portal     `yaml:"portal"`
	DEP       DEP        `yaml:"dep"`
	SMTP      SMTP       `yaml:"smtp"`
	Metrics   Metrics    `yaml:"metrics"`
	Approval  Approval   `yaml:"approval"`
	Runtime   Runtime    `yaml:"runtime"`
}

// Runtime tunes the Go runtime the server runs on.
type Runtime struct {
	// GCHeapFloorMB lets the heap grow to at least this many MiB before
	// the garbage collector runs; above twice the live heap, Go's default
	// applies. 0 is Go's default throughout. GOGC or GOMEMLIMIT in the
	// environment take precedence.
	GCHeapFloorMB int `yaml:"gc_heap_floor_mb"`
}

// Approval tunes the approval gate. Policies here only make approval
// stricter; nothing makes a device approved.
type Approval struct {
	// RequireAttestation makes an enrollment that is not attested by Apple
	// (or whose attestation does not match its claim) unapprovable, except
	// by an admin with a written reason, which is audited.
	RequireAttestation bool `yaml:"require_attestation"`
}

// Metrics protects /metrics. It is open on the main listener unless a
// bearer token or a listener of its own is set; both may be.
type Metrics struct {
	// Listen serves /metrics on this address only (host:port), and not on
	// the main listener.
	Listen string `yaml:"listen"`
	// TokenFile holds a bearer token that /metrics then requires.
	TokenFile string `yaml:"token_file"`
}

// SMTP sends owner notifications by e-mail; off when host is empty.
type SMTP struct {
	Host         string `yaml:"host"`
	Port         int    `yaml:"port"`
	From         string `yaml:"from"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// DEP configures the Apple Business Manager sync.
type DEP struct {
	Enabled bool `yaml:"enabled"`
	// Name labels the DEP server token.
	Name string `yaml:"name"`
	// ServerURL overrides Apple's DEP API address (tests, proxies).
	ServerURL    string   `yaml:"server_url"`
	SyncInterval Duration `yaml:"sync_interval"`
	// The DEP profile `vestibule dep profile apply` defines.
	Department     string   `yaml:"department"`
	SupportPhone   string   `yaml:"support_phone"`
	SupportEmail   string   `yaml:"support_email"`
	SkipSetupItems []string `yaml:"skip_setup_items"`
}

// OIDC configures sign-in through the company's identity provider.
type OIDC struct {
	Issuer               string   `yaml:"issuer"`
	ClientID             string   `yaml:"client_id"`
	ClientSecretFile     string   `yaml:"client_secret_file"`
	Scopes               []string `yaml:"scopes"`
	EmailClaim           string   `yaml:"email_claim"`
	AllowUnverifiedEmail bool     `yaml:"allow_unverified_email"`
	// GroupsClaim names the claim listing the person's groups; with
	// GroupRoles set, the IdP decides console roles at every sign-in.
	GroupsClaim string            `yaml:"groups_claim"`
	GroupRoles  map[string]string `yaml:"group_roles"`
}

// Enabled reports whether an IdP is configured.
func (o OIDC) Enabled() bool { return o.Issuer != "" }

// Portal configures the user portal.
type Portal struct {
	// SCIMTokenFile holds the bearer token an IdP uses to provision users
	// at /scim/v2 (at least 32 characters); empty: SCIM is off.
	SCIMTokenFile string `yaml:"scim_token_file"`
	// ReservationsPerHour bounds how many profiles one user may download
	// in an hour.
	ReservationsPerHour int `yaml:"reservations_per_hour"`
}

// Push configures APNs. Push is on when a certificate is set.
type Push struct {
	CertFile        string `yaml:"cert_file"`
	KeyFile         string `yaml:"key_file"`
	P12File         string `yaml:"p12_file"`
	P12PasswordFile string `yaml:"p12_password_file"`
	Environment     string `yaml:"environment"`
	Host            string `yaml:"host"`
	Workers         int    `yaml:"workers"`
	// Rate paces pushes, per second and per replica: every push wakes a
	// device that then checks in, so a fleet-wide command must not wake
	// the whole fleet at once.
	Rate int `yaml:"rate"`
}

// Enabled reports whether a push certificate is configured.
func (p Push) Enabled() bool { return p.CertFile != "" || p.P12File != "" }

// Session configures sign-in sessions of the console and portal.
type Session struct {
	IdleTimeout     Duration `yaml:"idle_timeout"`
	AbsoluteTimeout Duration `yaml:"absolute_timeout"`
	// LocalLogin allows local accounts (passwords) to sign in; turn it off
	// once the IdP is the only way in (break-glass accounts excepted by
	// keeping it on).
	LocalLogin bool `yaml:"local_login"`
}

// Vault locates the enrollment-token key in Vault's transit engine and
// says how to log in. Nothing is read from VAULT_* variables.
type Vault struct {
	Address    string        `yaml:"address"`
	Mount      string        `yaml:"mount"`
	Key        string        `yaml:"key"`
	Namespace  string        `yaml:"namespace"`
	CACert     string        `yaml:"ca_cert"`
	Timeout    Duration      `yaml:"timeout"`
	TokenFile  string        `yaml:"token_file"`
	AppRole    VaultAppRole  `yaml:"approle"`
	Kubernetes VaultK8sLogin `yaml:"kubernetes"`
}

// VaultAppRole is AppRole login: the role ID and secret ID, each in a file.
type VaultAppRole struct {
	Mount        string `yaml:"mount"`
	RoleIDFile   string `yaml:"role_id_file"`
	SecretIDFile string `yaml:"secret_id_file"`
}

// VaultK8sLogin is Kubernetes login with the pod's service account token.
type VaultK8sLogin struct {
	Mount   string `yaml:"mount"`
	Role    string `yaml:"role"`
	JWTFile string `yaml:"jwt_file"`
}

// Trust configures device trust: the CA of device-trust certificates
// (separate from the SCEP identity CA) and the signing keys of the
// compliance events sent to identity providers. It is on when the trust CA
// exists (--dev creates one; `vestibule ca init --trust` otherwise).
type Trust struct {
	CACertFile   string   `yaml:"ca_cert_file"`
	CAKeyFile    string   `yaml:"ca_key_file"`
	CertValidity Duration `yaml:"cert_validity"`
	// RenewBefore: a trust certificate this close to expiry is renewed.
	RenewBefore Duration `yaml:"renew_before"`
	// ChallengeTTL: how long the one-time challenge of a trust profile
	// lasts before the device is sent a new profile.
	ChallengeTTL Duration `yaml:"challenge_ttl"`
	// SSFKeyDir holds the ES256 keys that sign Security Event Tokens; the
	// newest signs, all are published.
	SSFKeyDir string `yaml:"ssf_key_dir"`
	// SSFKeyRotation: a signing key older than this is replaced by a new
	// one at start and while running.
	SSFKeyRotation Duration `yaml:"ssf_key_rotation"`
	// SSFAllowPrivateEndpoints lets SSF pushes reach loopback and private
	// addresses (a receiver inside the company network). --dev allows them.
	SSFAllowPrivateEndpoints bool `yaml:"ssf_allow_private_endpoints"`
}

// SCEP configures the CA that issues device identities.
type SCEP struct {
	CACertFile   string   `yaml:"ca_cert_file"`
	CAKeyFile    string   `yaml:"ca_key_file"`
	CertValidity Duration `yaml:"cert_validity"`
	MinRSABits   int      `yaml:"min_rsa_bits"`
}

// MDM configures the MDM enrollment payload.
type MDM struct {
	// Topic is the APNs topic of the MDM push certificate
	// (com.apple.mgmt.External.<UUID>).
	Topic string `yaml:"topic"`
	// WebhookURL receives a signed JSON event when an enrollment becomes
	// pending; WebhookSecretFile holds the HMAC key. Empty: no webhook.
	WebhookURL        string `yaml:"webhook_url"`
	WebhookSecretFile string `yaml:"webhook_secret_file"`
	// WebhookRetryDelay is the wait before the first retry of a failed
	// delivery; it doubles with each of the four retries.
	WebhookRetryDelay Duration `yaml:"webhook_retry_delay"`
	// PostApprovalProfiles is a folder of .mobileconfig files installed on
	// a device once it is approved, never before. It is read at most once
	// a second.
	PostApprovalProfiles string `yaml:"post_approval_profiles"`
	// TrustedProxyHeader names the header in which a TLS-terminating proxy
	// forwards the client certificate (RFC 9440 Client-Cert or URL-escaped
	// PEM); empty: off.
	TrustedProxyHeader string `yaml:"trusted_proxy_header"`
	// TrustedProxyCIDRs are the networks that header is believed from.
	TrustedProxyCIDRs []string `yaml:"trusted_proxy_cidrs"`
}

// Profile configures the enrollment profiles Vestibule signs.
type Profile struct {
	IdentifierPrefix string `yaml:"identifier_prefix"`
	SigningCertFile  string `yaml:"signing_cert_file"`
	SigningKeyFile   string `yaml:"signing_key_file"`
	TLSRootFile      string `yaml:"tls_root_file"`
}

// DevTopic is the push topic placeholder of --dev: devices accept it, but
// no push can be sent on it.
const DevTopic = "com.apple.mgmt.External.00000000-0000-0000-0000-vestibuledev"

// Org names the organisation devices enroll into.
type Org struct {
	ID   string `yaml:"id"`
	Name string `yaml:"name"`
}

// Database selects the store.
type Database struct {
	DSN          string `yaml:"dsn"`
	MaxOpenConns int    `yaml:"max_open_conns"`
}

// HTTP tunes the listener.
type HTTP struct {
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	ReadTimeout       Duration `yaml:"read_timeout"`
	WriteTimeout      Duration `yaml:"write_timeout"`
	IdleTimeout       Duration `yaml:"idle_timeout"`
	ShutdownTimeout   Duration `yaml:"shutdown_timeout"`
	MaxBodyBytes      int64    `yaml:"max_body_bytes"`
}

// TLS makes Vestibule terminate TLS itself instead of behind a proxy.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Log configures the structured logger.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Enrollment tunes the enrollment ceremony.
type Enrollment struct {
	TokenTTL  Duration `yaml:"token_ttl"`
	ClockSkew Duration `yaml:"clock_skew"`
}

// Signer selects where the enrollment-token HMAC key lives.
type Signer struct {
	Backend      string `yaml:"backend"`
	LocalKeyFile string `yaml:"local_key_file"`
}

// Duration is a time.Duration written as "90s" or "1h" in YAML and in the
// environment.
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (use e.g. 30s, 5m, 1h)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// D returns the standard library duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Defaults are the tuning values every deployment starts from. They hold no
// deployment-specific value (addresses, URLs, database), which must be
// configured outside --dev.
func Defaults() Config {
	return Config{
		Database: Database{MaxOpenConns: 20},
		HTTP: HTTP{
			ReadHeaderTimeout: Duration(10 * time.Second),
			ReadTimeout:       Duration(30 * time.Second),
			WriteTimeout:      Duration(60 * time.Second),
			IdleTimeout:       Duration(120 * time.Second),
			ShutdownTimeout:   Duration(20 * time.Second),
			MaxBodyBytes:      1 << 20,
		},
		Log:    Log{Level: "info", Format: "text"},
		Enroll: Enrollment{TokenTTL: Duration(time.Hour), ClockSkew: Duration(2 * time.Minute)},
		Signer: Signer{Backend: "local"},
		SCEP:   SCEP{CertValidity: Duration(365 * 24 * time.Hour), MinRSABits: 2048},
		Trust: Trust{CertValidity: Duration(30 * 24 * time.Hour), RenewBefore: Duration(10 * 24 * time.Hour),
			ChallengeTTL: Duration(7 * 24 * time.Hour), SSFKeyRotation: Duration(90 * 24 * time.Hour)},
		Vault:   Vault{Mount: "transit", Key: "vestibule-token", Timeout: Duration(3 * time.Second)},
		Push:    Push{Environment: "production", Workers: 1, Rate: 200},
		Runtime: Runtime{GCHeapFloorMB: 16},
		MDM:     MDM{WebhookRetryDelay: Duration(2 * time.Second)},
		OIDC:    OIDC{EmailClaim: "email"},
		Portal:  Portal{ReservationsPerHour: 5},
		DEP:     DEP{Name: "abm", SyncInterval: Duration(30 * time.Minute)},
		SMTP:    SMTP{Port: 587},
		Session: Session{IdleTimeout: Duration(30 * time.Minute), AbsoluteTimeout: Duration(12 * time.Hour), LocalLogin: true},
	}
}

// DevDefaultListen is where `serve --dev` listens unless told otherwise.
const DevDefaultListen = "127.0.0.1:8080"

// Overrides are the values given on the command line; empty means unset.
type Overrides struct {
	ConfigFile string
	Dev        bool
	Listen     string
	PublicURL  string
	DataDir    string
	DB         string
}

// Load builds the configuration: defaults, then the file, then VESTIBULE_*
// variables from env, then command-line overrides, then --dev fill-ins, and
// validates the result.
func Load(o Overrides, env []string) (Config, error) {
	cfg := Defaults()
	cfg.Dev = o.Dev
	if o.ConfigFile != "" {
		b, err := os.ReadFile(o.ConfigFile)
		if err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		if err := decodeYAML(b, &cfg); err != nil {
			return Config{}, fmt.Errorf("config %s: %w", o.ConfigFile, err)
		}
	}
	if err := applyEnv(&cfg, env); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	for _, kv := range []struct {
		dst *string
		v   string
	}{{&cfg.Listen, o.Listen}, {&cfg.PublicURL, o.PublicURL}, {&cfg.DataDir, o.DataDir}, {&cfg.Database.DSN, o.DB}} {
		if kv.v != "" {
			*kv.dst = kv.v
		}
	}
	if cfg.Dev {
		fillDev(&cfg)
	}
	if cfg.Profile.IdentifierPrefix == "" && cfg.Org.ID != "" {
		cfg.Profile.IdentifierPrefix = "org.vestibule." + cfg.Org.ID
	}
	if cfg.DataDir != "" && cfg.SCEP.CACertFile == "" && cfg.SCEP.CAKeyFile == "" {
		cfg.SCEP.CACertFile = filepath.Join(cfg.DataDir, "ca.pem")
		cfg.SCEP.CAKeyFile = filepath.Join(cfg.DataDir, "ca.key")
	}
	if cfg.DataDir != "" && cfg.Trust.CACertFile == "" && cfg.Trust.CAKeyFile == "" {
		cfg.Trust.CACertFile = filepath.Join(cfg.DataDir, "trust-ca.pem")
		cfg.Trust.CAKeyFile = filepath.Join(cfg.DataDir, "trust-ca.key")
	}
	if cfg.DataDir != "" && cfg.Trust.SSFKeyDir == "" {
		cfg.Trust.SSFKeyDir = filepath.Join(cfg.DataDir, "ssf-keys")
	}
	if cfg.Signer.Backend == "local" && cfg.Signer.LocalKeyFile == "" && cfg.DataDir != "" {
		cfg.Signer.LocalKeyFile = filepath.Join(cfg.DataDir, "hmac-keys.json")
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

func decodeYAML(b []byte, cfg *Config) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return errors.New(readableYAMLError(err.Error()))
	}
	return nil
}

// yamlFieldError is how the YAML decoder names an unknown key: by the Go
// type it was decoding into, which means nothing to a person.
var yamlFieldError = regexp.MustCompile(`field (\S+) not found in type config\.(\w+)`)

// readableYAMLError names the section of the file instead of the Go type.
func readableYAMLError(msg string) string {
	sections := map[string]string{"Config": "the top level"}
	t := reflect.TypeOf(Config{})
	for i := range t.NumField() {
		f := t.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); tag != "" && f.Type.Kind() == reflect.Struct {
			sections[f.Type.Name()] = fmt.Sprintf("%q", tag)
		}
	}
	msg = yamlFieldError.ReplaceAllStringFunc(msg, func(m string) string {
		parts := yamlFieldError.FindStringSubmatch(m)
		where, ok := sections[parts[2]]
		if !ok {
			where = "its section"
		}
		return fmt.Sprintf("unknown key %q in %s (see configs/vestibule.example.yaml)", parts[1], where)
	})
	msg = strings.ReplaceAll(msg, "yaml: unmarshal errors:\n  ", "")
	return strings.ReplaceAll(msg, "\n  ", "; ")
}

// fillDev supplies the embedded defaults of a laptop run. The public URL is
// left empty when the listen port is 0 so the server can derive it from the
// port it actually bound.
func fillDev(cfg *Config) {
	if cfg.Listen == "" {
		cfg.Listen = DevDefaultListen
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "data"
	}
	if cfg.PublicURL == "" {
		if _, port, err := net.SplitHostPort(cfg.Listen); err == nil && port != "0" {
			cfg.PublicURL = "http://" + cfg.Listen
		}
	}
	if cfg.Database.DSN == "" {
		cfg.Database.DSN = "sqlite:" + filepath.Join(cfg.DataDir, "vestibule.db")
	}
	if cfg.Org.ID == "" {
		cfg.Org.ID = "dev"
	}
	if cfg.Org.Name == "" {
		cfg.Org.Name = "Vestibule Dev"
	}
	if cfg.MDM.Topic == "" {
		cfg.MDM.Topic = DevTopic
	}
	if cfg.MDM.PostApprovalProfiles == "" {
		cfg.MDM.PostApprovalProfiles = filepath.Join("configs", "profiles")
	}
}

// FieldError names the configuration key at fault.
type FieldError struct {
	Key     string
	Problem string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("config: %s: %s (env VESTIBULE_%s)", e.Key, e.Problem, strings.ToUpper(strings.ReplaceAll(e.Key, ".", "_")))
}

// Validate checks every key and returns all problems at once, each naming
// its key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, problem string) { errs = append(errs, &FieldError{Key: key, Problem: problem}) }
	required := func(key, v string) bool {
		if strings.TrimSpace(v) == "" {
			bad(key, "is required (or run with --dev for the embedded defaults)")
			return false
		}
		return true
	}

	if required("listen", c.Listen) {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			bad("listen", fmt.Sprintf("%q is not host:port", c.Listen))
		}
	}
	if c.PublicURL != "" || !c.Dev {
		if required("public_url", c.PublicURL) {
			u, err := url.Parse(c.PublicURL)
			switch {
			case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
				bad("public_url", fmt.Sprintf("%q is not an absolute http(s) URL", c.PublicURL))
			case u.RawQuery != "" || u.Fragment != "":
				bad("public_url", "must not carry a query or fragment")
			case !c.Dev && u.Scheme != "https":
				bad("public_url", "must be https outside --dev: Apple devices speak MDM and SCEP enrollment only over HTTPS")
			}
		}
	}
	required("data_dir", c.DataDir)
	if required("database.dsn", c.Database.DSN) {
		if _, _, err := dsn.Split(c.Database.DSN); err != nil {
			bad("database.dsn", err.Error())
		}
	}
	if c.Database.MaxOpenConns < 1 {
		bad("database.max_open_conns", "must be at least 1")
	}
	if required("org.id", c.Org.ID) && strings.ContainsAny(c.Org.ID, " \t\n/") {
		bad("org.id", "must not contain spaces or slashes")
	}
	required("org.name", c.Org.Name)

	for _, d := range []struct {
		key string
		v   Duration
	}{
		{"http.read_header_timeout", c.HTTP.ReadHeaderTimeout},
		{"http.read_timeout", c.HTTP.ReadTimeout},
		{"http.write_timeout", c.HTTP.WriteTimeout},
		{"http.idle_timeout", c.HTTP.IdleTimeout},
		{"http.shutdown_timeout", c.HTTP.ShutdownTimeout},
		{"enrollment.token_ttl", c.Enroll.TokenTTL},
	} {
		if d.v <= 0 {
			bad(d.key, "must be a positive duration")
		}
	}
	if c.Enroll.ClockSkew < 0 || c.Enroll.ClockSkew.D() > 10*time.Minute {
		bad("enrollment.clock_skew", "must be between 0s and 10m")
	}
	if c.Enroll.TokenTTL.D() > 7*24*time.Hour {
		bad("enrollment.token_ttl", "must be at most 168h: a long-lived token is a standing invitation to enroll")
	}
	if c.HTTP.MaxBodyBytes < 1024 {
		bad("http.max_body_bytes", "must be at least 1024")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "cert_file and key_file go together")
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "must be host:port")
		} else if c.Metrics.Listen == c.Listen {
			bad("metrics.listen", "must differ from listen")
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", fmt.Sprintf("%q is not one of debug, info, warn, error", c.Log.Level))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", fmt.Sprintf("%q is not one of text, json", c.Log.Format))
	}
	switch c.Signer.Backend {
	case "local":
		required("signer.local_key_file", c.Signer.LocalKeyFile)
	case "vault":
		required("vault.address", c.Vault.Address)
		required("vault.key", c.Vault.Key)
		methods := 0
		if c.Vault.TokenFile != "" {
			methods++
		}
		if c.Vault.AppRole.RoleIDFile != "" || c.Vault.AppRole.SecretIDFile != "" {
			methods++
			if c.Vault.AppRole.RoleIDFile == "" || c.Vault.AppRole.SecretIDFile == "" {
				bad("vault.approle", "role_id_file and secret_id_file go together")
			}
		}
		if c.Vault.Kubernetes.Role != "" || c.Vault.Kubernetes.JWTFile != "" {
			methods++
		}
		if methods != 1 {
			bad("vault", "set exactly one login: token_file, approle.role_id_file+secret_id_file, or kubernetes.role+jwt_file")
		}
		if c.Vault.Timeout <= 0 || c.Vault.Timeout.D() > time.Minute {
			bad("vault.timeout", "must be between 1ms and 1m")
		}
	default:
		bad("signer.backend", fmt.Sprintf("%q is not one of local, vault", c.Signer.Backend))
	}
	if c.Session.IdleTimeout.D() < time.Minute || c.Session.IdleTimeout > c.Session.AbsoluteTimeout {
		bad("session.idle_timeout", "must be at least 1m and at most session.absolute_timeout")
	}
	if c.Session.AbsoluteTimeout.D() > 7*24*time.Hour {
		bad("session.absolute_timeout", "must be at most 168h")
	}
	if c.Push.CertFile != "" && c.Push.P12File != "" {
		bad("push", "set cert_file and key_file, or p12_file, not both")
	}
	if (c.Push.CertFile == "") != (c.Push.KeyFile == "") {
		bad("push", "cert_file and key_file go together")
	}
	switch c.Push.Environment {
	case "production", "development":
	default:
		bad("push.environment", fmt.Sprintf("%q is not production or development", c.Push.Environment))
	}
	if c.Push.Workers < 1 || c.Push.Workers > 64 {
		bad("push.workers", "must be 1 to 64")
	}
	if c.Push.Rate < 1 || c.Push.Rate > 100_000 {
		bad("push.rate", "must be 1 to 100000 pushes a second")
	}
	if c.Runtime.GCHeapFloorMB < 0 || c.Runtime.GCHeapFloorMB > 65_536 {
		bad("runtime.gc_heap_floor_mb", "must be 0 (Go's default) to 65536")
	}
	if c.OIDC.Enabled() {
		if u, err := url.Parse(c.OIDC.Issuer); err != nil || u.Host == "" || (u.Scheme != "https" && !(c.Dev && u.Scheme == "http")) {
			bad("oidc.issuer", "must be the IdP's https issuer URL")
		}
		required("oidc.client_id", c.OIDC.ClientID)
		for g, r := range c.OIDC.GroupRoles {
			switch r {
			case "user", "viewer", "approver", "admin":
			default:
				bad("oidc.group_roles", fmt.Sprintf("group %q maps to %q, not one of user, viewer, approver, admin", g, r))
			}
		}
		if len(c.OIDC.GroupRoles) > 0 && c.OIDC.GroupsClaim == "" {
			bad("oidc.groups_claim", "is required with group_roles")
		}
	}
	if c.Portal.ReservationsPerHour < 1 || c.Portal.ReservationsPerHour > 1000 {
		bad("portal.reservations_per_hour", "must be 1 to 1000")
	}
	if c.DEP.Enabled && (c.DEP.SyncInterval.D() < time.Minute || strings.ContainsAny(c.DEP.Name, " /")) {
		bad("dep", "sync_interval must be at least 1m and name a word")
	}
	if c.MDM.WebhookURL != "" {
		if u, err := url.Parse(c.MDM.WebhookURL); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			bad("mdm.webhook_url", "must be an absolute URL")
		}
		required("mdm.webhook_secret_file", c.MDM.WebhookSecretFile)
		if c.MDM.WebhookRetryDelay < 0 || c.MDM.WebhookRetryDelay.D() > time.Hour {
			bad("mdm.webhook_retry_delay", "must be between 0s and 1h")
		}
	}
	if c.SMTP.Host != "" {
		if _, err := mail.ParseAddress(c.SMTP.From); err != nil {
			bad("smtp.from", "must be an e-mail address")
		}
		if c.SMTP.Port < 1 || c.SMTP.Port > 65535 {
			bad("smtp.port", "must be a TCP port")
		}
	}
	required("mdm.topic", c.MDM.Topic)
	if c.MDM.TrustedProxyHeader != "" && len(c.MDM.TrustedProxyCIDRs) == 0 {
		bad("mdm.trusted_proxy_cidrs", "is required with trusted_proxy_header: the header is believed only from these networks")
	}
	for _, p := range c.MDM.TrustedProxyCIDRs {
		if _, err := netip.ParsePrefix(p); err != nil {
			bad("mdm.trusted_proxy_cidrs", fmt.Sprintf("%q is not a CIDR prefix", p))
		}
	}
	if (c.SCEP.CACertFile == "") != (c.SCEP.CAKeyFile == "") {
		bad("scep", "ca_cert_file and ca_key_file go together")
	}
	if c.SCEP.CertValidity.D() < time.Hour || c.SCEP.CertValidity.D() > 5*365*24*time.Hour {
		bad("scep.cert_validity", "must be between 1h and 5 years")
	}
	if (c.Trust.CACertFile == "") != (c.Trust.CAKeyFile == "") {
		bad("trust", "ca_cert_file and ca_key_file go together")
	}
	if v := c.Trust.CertValidity.D(); v < time.Hour || v > 397*24*time.Hour {
		bad("trust.cert_validity", "must be between 1h and 397 days: trust certificates are short-lived")
	}
	if v := c.Trust.RenewBefore.D(); v <= 0 || v >= c.Trust.CertValidity.D() {
		bad("trust.renew_before", "must be positive and shorter than trust.cert_validity")
	}
	if v := c.Trust.ChallengeTTL.D(); v < time.Minute || v > 30*24*time.Hour {
		bad("trust.challenge_ttl", "must be between 1m and 30 days")
	}
	if v := c.Trust.SSFKeyRotation.D(); v < time.Hour {
		bad("trust.ssf_key_rotation", "must be at least 1h")
	}
	if c.SCEP.MinRSABits < 2048 || c.SCEP.MinRSABits > 8192 {
		bad("scep.min_rsa_bits", "must be between 2048 and 8192")
	}
	if !c.Dev {
		required("profile.signing_cert_file", c.Profile.SigningCertFile)
		required("profile.signing_key_file", c.Profile.SigningKeyFile)
	}
	if (c.Profile.SigningCertFile == "") != (c.Profile.SigningKeyFile == "") {
		bad("profile", "signing_cert_file and signing_key_file go together")
	}
	if strings.ContainsAny(c.Profile.IdentifierPrefix, " /") {
		bad("profile.identifier_prefix", "must be reverse-DNS, e.g. com.example.mdm")
	}
	return errors.Join(errs...)
}
