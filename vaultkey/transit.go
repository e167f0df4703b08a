package vaultkey

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// TransitConfig says where the key is and how to log in. Nothing is read
// from the environment: every value Vestibule uses is here.
type TransitConfig struct {
	Address   string
	Mount     string // default "transit"
	Key       string
	Namespace string
	CACert    string // PEM file of the CA that issued Vault's TLS certificate
	Timeout   time.Duration

	// One of: a token file, AppRole (role ID and secret ID files), or
	// Kubernetes (role and service account JWT file).
	TokenFile           string
	AppRoleMount        string // default "approle"
	AppRoleRoleIDFile   string
	AppRoleSecretIDFile string
	KubernetesMount     string // default "kubernetes"
	KubernetesRole      string
	KubernetesJWTFile   string

	// BreakerFailures consecutive failures open the circuit for
	// BreakerCoolDown; calls fail fast meanwhile.
	BreakerFailures int
	BreakerCoolDown time.Duration
	// CacheSize bounds the cache of successful verifications (0: 10,000);
	// CacheTTL bounds how long one is trusted (0: 5 minutes).
	CacheSize int
	CacheTTL  time.Duration

	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

func (c *TransitConfig) defaults() error {
	if c.Address == "" || c.Key == "" {
		return errors.New("vault: address and key are required")
	}
	if strings.ContainsAny(c.Key, "/ ") || strings.ContainsAny(c.Mount, " ") {
		return errors.New("vault: key and mount must not contain spaces; the key no slashes")
	}
	auths := 0
	for _, set := range []bool{c.TokenFile != "", c.AppRoleRoleIDFile != "" || c.AppRoleSecretIDFile != "", c.KubernetesRole != "" || c.KubernetesJWTFile != ""} {
		if set {
			auths++
		}
	}
	if auths != 1 {
		return errors.New("vault: set exactly one auth method: token_file, approle (role_id_file and secret_id_file) or kubernetes (role and jwt_file)")
	}
	if (c.AppRoleRoleIDFile == "") != (c.AppRoleSecretIDFile == "") {
		return errors.New("vault: approle needs role_id_file and secret_id_file")
	}
	if (c.KubernetesRole == "") != (c.KubernetesJWTFile == "") {
		return errors.New("vault: kubernetes needs role and jwt_file")
	}
	if c.Mount == "" {
		c.Mount = "transit"
	}
	c.Mount = strings.Trim(c.Mount, "/")
	if c.AppRoleMount == "" {
		c.AppRoleMount = "approle"
	}
	if c.KubernetesMount == "" {
		c.KubernetesMount = "kubernetes"
	}
	if c.Timeout <= 0 {
		c.Timeout = 3 * time.Second
	}
	if c.BreakerFailures <= 0 {
		c.BreakerFailures = 5
	}
	if c.BreakerCoolDown <= 0 {
		c.BreakerCoolDown = 10 * time.Second
	}
	if c.CacheSize <= 0 {
		c.CacheSize = 10_000
	}
	if c.CacheTTL <= 0 {
		c.CacheTTL = 5 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// TransitSigner computes and verifies enrollment-token MACs with Vault's
// transit engine: the key never leaves Vault.
type TransitSigner struct {
	cfg     TransitConfig
	client  *vault.Client
	log     *slog.Logger
	breaker *breaker
	cache   *verifyCache
	metrics *transitMetrics
	stop    context.CancelFunc
	done    chan struct{}
}

// NewTransitSigner connects and logs in. It does not check the key; call
// EnsureKey or Health for that.
func NewTransitSigner(ctx context.Context, cfg TransitConfig) (*TransitSigner, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CACert != "" {
		pem, err := os.ReadFile(cfg.CACert)
		if err != nil {
			return nil, fmt.Errorf("vault: CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("vault: %s holds no PEM certificate", cfg.CACert)
		}
		tlsCfg.RootCAs = pool
	}
	vc := &vault.Config{
		Address:      cfg.Address,
		HttpClient:   &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 16}},
		Timeout:      cfg.Timeout,
		MinRetryWait: time.Millisecond,
		MaxRetryWait: time.Millisecond,
		MaxRetries:   0, // the breaker, not the client, decides about retrying
	}
	client, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	// The client picks VAULT_TOKEN, VAULT_NAMESPACE and VAULT_HEADERS from
	// the environment on its own; undo that, so only our config counts.
	client.ClearToken()
	client.ClearNamespace()
	client.SetHeaders(http.Header{vault.RequestHeaderName: []string{"true"}})
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	s := &TransitSigner{cfg: cfg, client: client, log: cfg.Logger, breaker: &breaker{max: cfg.BreakerFailures, coolDown: cfg.BreakerCoolDown},
		cache: newVerifyCache(cfg.CacheSize, cfg.CacheTTL), metrics: newTransitMetrics(cfg.Registerer), done: make(chan struct{})}
	secret, err := s.login(ctx)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.keepToken(wctx, secret)
	return s, nil
}

// Close stops token renewal.
func (s *TransitSigner) Close() error {
	s.stop()
	<-s.done
	return nil
}

func readSecretFile(path, what string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("vault: %s: %w", what, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("vault: %s file %s is empty", what, path)
	}
	return v, nil
}

// login authenticates with the configured method and returns the auth
// secret (nil for a static token that cannot be looked up).
func (s *TransitSigner) login(ctx context.Context) (*vault.Secret, error) {
	c := s.cfg
	var path string
	var body map[string]any
	switch {
	case c.TokenFile != "":
		tok, err := readSecretFile(c.TokenFile, "token")
		if err != nil {
			return nil, err
		}
		s.client.SetToken(tok)
		secret, err := s.client.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return nil, s.explain("token lookup", "auth/token/lookup-self", "read", err)
		}
		return secret, nil
	case c.AppRoleRoleIDFile != "":
		roleID, err := readSecretFile(c.AppRoleRoleIDFile, "approle role_id")
		if err != nil {
			return nil, err
		}
		secretID, err := readSecretFile(c.AppRoleSecretIDFile, "approle secret_id")
		if err != nil {
			return nil, err
		}
		path, body = "auth/"+c.AppRoleMount+"/login", map[string]any{"role_id": roleID, "secret_id": secretID}
	default:
		jwt, err := readSecretFile(c.KubernetesJWTFile, "kubernetes jwt")
		if err != nil {
			return nil, err
		}
		path, body = "auth/"+c.KubernetesMount+"/login", map[string]any{"role": c.KubernetesRole, "jwt": jwt}
	}
	secret, err := s.client.Logical().WriteWithContext(ctx, path, body)
	if err != nil {
		return nil, s.explain("login", path, "update", err)
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return nil, fmt.Errorf("vault: login at %s returned no token", path)
	}
	s.client.SetToken(secret.Auth.ClientToken)
	return secret, nil
}

// keepToken renews a renewable token in the background and logs in again
// when renewal ends (AppRole and Kubernetes can; a static token cannot).
func (s *TransitSigner) keepToken(ctx context.Context, secret *vault.Secret) {
	defer close(s.done)
	for {
		if secret == nil {
			<-ctx.Done()
			return
		}
		if renewable, _ := secret.TokenIsRenewable(); !renewable {
			<-ctx.Done()
			return
		}
		w, err := s.client.NewLifetimeWatcher(&vault.LifetimeWatcherInput{Secret: secret})
		if err != nil {
			s.log.Error("vault token renewal", "err", err)
			<-ctx.Done()
			return
		}
		go w.Start()
	watch:
		for {
			select {
			case <-ctx.Done():
				w.Stop()
				return
			case err := <-w.DoneCh():
				if err != nil {
					s.log.Warn("vault token renewal ended", "err", err)
				}
				break watch
			case <-w.RenewCh():
				s.log.Debug("vault token renewed")
			}
		}
		w.Stop()
		if s.cfg.TokenFile != "" {
			s.log.Error("the vault token from token_file can no longer be renewed; give Vestibule a new token or use AppRole")
			<-ctx.Done()
			return
		}
		for {
			lctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
			secret, err = s.login(lctx)
			cancel()
			if err == nil {
				break
			}
			s.log.Error("vault login", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Second):
			}
		}
	}
}

// explain turns a Vault error into one that says what is wrong: sealed,
// unreachable, or which path and capability the policy lacks.
func (s *TransitSigner) explain(op, path, capability string, err error) error {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		switch re.StatusCode {
		case http.StatusForbidden:
			return fmt.Errorf("vault %s: permission denied on %s (the policy needs %q on it): %w", op, path, capability, enrollment.ErrSignerUnavailable)
		case http.StatusServiceUnavailable:
			return fmt.Errorf("vault %s: Vault is sealed or in standby: %w", op, enrollment.ErrSignerUnavailable)
		case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway, http.StatusGatewayTimeout:
			return fmt.Errorf("vault %s: %s answered %d: %w", op, path, re.StatusCode, enrollment.ErrSignerUnavailable)
		}
		return fmt.Errorf("vault %s: %s: %s", op, path, strings.Join(re.Errors, "; "))
	}
	return fmt.Errorf("vault %s: %s unreachable: %v: %w", op, path, err, enrollment.ErrSignerUnavailable)
}

func (s *TransitSigner) hmacPath() string { return s.cfg.Mount + "/hmac/" + s.cfg.Key + "/sha2-256" }
func (s *TransitSigner) verifyPath() string {
	return s.cfg.Mount + "/verify/" + s.cfg.Key + "/sha2-256"
}

// call writes to Vault through the breaker and the per-call timeout.
func (s *TransitSigner) call(ctx context.Context, op, path string, body map[string]any) (*vault.Secret, error) {
	if !s.breaker.allow() {
		s.metrics.errors.WithLabelValues(op, "breaker_open").Inc()
		return nil, fmt.Errorf("vault %s: circuit open after repeated failures: %w", op, enrollment.ErrSignerUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	start := time.Now()
	secret, err := s.client.Logical().WriteWithContext(ctx, path, body)
	s.metrics.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		err = s.explain(op, path, "update", err)
		if errors.Is(err, enrollment.ErrSignerUnavailable) {
			s.breaker.failure()
			s.metrics.errors.WithLabelValues(op, "unavailable").Inc()
		} else {
			s.breaker.success()
			s.metrics.errors.WithLabelValues(op, "refused").Inc()
		}
		return nil, err
	}
	s.breaker.success()
	return secret, nil
}

// MAC asks Vault for the HMAC of msg under the key's latest version.
func (s *TransitSigner) MAC(ctx context.Context, msg []byte) (enrollment.MAC, error) {
	secret, err := s.call(ctx, "hmac", s.hmacPath(), map[string]any{"input": base64.StdEncoding.EncodeToString(msg)})
	if err != nil {
		return enrollment.MAC{}, err
	}
	v, _ := secret.Data["hmac"].(string)
	mac, err := parseVaultHMAC(v)
	if err != nil {
		return enrollment.MAC{}, fmt.Errorf("vault hmac: %w", err)
	}
	return mac, nil
}

// parseVaultHMAC reads "vault:vN:<base64>".
func parseVaultHMAC(v string) (enrollment.MAC, error) {
	parts := strings.SplitN(v, ":", 3)
	if len(parts) != 3 || parts[0] != "vault" || !strings.HasPrefix(parts[1], "v") {
		return enrollment.MAC{}, fmt.Errorf("unexpected HMAC format %.20q", v)
	}
	ver, err := strconv.ParseUint(parts[1][1:], 10, 32)
	if err != nil || ver == 0 {
		return enrollment.MAC{}, fmt.Errorf("unexpected HMAC key version %q", parts[1])
	}
	sum, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil {
		return enrollment.MAC{}, fmt.Errorf("HMAC is not base64")
	}
	return enrollment.MAC{KeyVersion: uint32(ver), Sum: sum}, nil
}

// Verify asks Vault whether mac is msg's HMAC under mac's key version;
// Vault refuses versions below the key's min_decryption_version.
// Successful answers are cached briefly, so a device retrying a check-in
// does not cost another call.
func (s *TransitSigner) Verify(ctx context.Context, msg []byte, mac enrollment.MAC) error {
	if mac.KeyVersion == 0 || len(mac.Sum) == 0 {
		return enrollment.ErrBadMAC
	}
	key := cacheKey(msg, mac)
	if s.cache.hit(key) {
		s.metrics.cacheHits.Inc()
		return nil
	}
	hmac := fmt.Sprintf("vault:v%d:%s", mac.KeyVersion, base64.StdEncoding.EncodeToString(mac.Sum))
	secret, err := s.call(ctx, "verify", s.verifyPath(), map[string]any{"input": base64.StdEncoding.EncodeToString(msg), "hmac": hmac})
	if err != nil {
		if errors.Is(err, enrollment.ErrSignerUnavailable) {
			return err
		}
		// A version Vault does not have, or has retired, is a bad MAC.
		return fmt.Errorf("%v: %w", err, enrollment.ErrBadMAC)
	}
	if valid, _ := secret.Data["valid"].(bool); !valid {
		return enrollment.ErrBadMAC
	}
	s.cache.add(key)
	return nil
}

func cacheKey(msg []byte, mac enrollment.MAC) [32]byte {
	h := sha256.New()
	h.Write(msg)
	fmt.Fprintf(h, "|%d|", mac.KeyVersion)
	h.Write(mac.Sum)
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}

// KeyInfo is what Vault says about the transit key.
type KeyInfo struct {
	Type                 string
	LatestVersion        int
	MinDecryptionVersion int
}

// KeyInfo reads the key's type and versions.
func (s *TransitSigner) KeyInfo(ctx context.Context) (KeyInfo, error) {
	path := s.cfg.Mount + "/keys/" + s.cfg.Key
	secret, err := s.client.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return KeyInfo{}, s.explain("read key", path, "read", err)
	}
	if secret == nil {
		return KeyInfo{}, fmt.Errorf("vault: transit key %q does not exist at %s/ (run `vestibule vault init`)", s.cfg.Key, s.cfg.Mount)
	}
	num := func(k string) int {
		switch v := secret.Data[k].(type) {
		case float64:
			return int(v)
		case interface{ Int64() (int64, error) }:
			n, _ := v.Int64()
			return int(n)
		}
		return 0
	}
	t, _ := secret.Data["type"].(string)
	return KeyInfo{Type: t, LatestVersion: num("latest_version"), MinDecryptionVersion: num("min_decryption_version")}, nil
}

// EnsureKey creates the transit key of type hmac, or checks that the
// existing one is of that type.
func (s *TransitSigner) EnsureKey(ctx context.Context) (KeyInfo, error) {
	info, err := s.KeyInfo(ctx)
	if err == nil {
		if info.Type != "hmac" {
			return info, fmt.Errorf("vault: transit key %q is of type %s, not hmac", s.cfg.Key, info.Type)
		}
		return info, nil
	}
	path := s.cfg.Mount + "/keys/" + s.cfg.Key
	if _, werr := s.client.Logical().WriteWithContext(ctx, path, map[string]any{"type": "hmac", "key_size": 32}); werr != nil {
		return KeyInfo{}, s.explain("create key", path, "create", werr)
	}
	return s.KeyInfo(ctx)
}

// Rotate makes a new key version the one that signs.
func (s *TransitSigner) Rotate(ctx context.Context) (KeyInfo, error) {
	path := s.cfg.Mount + "/keys/" + s.cfg.Key + "/rotate"
	if _, err := s.client.Logical().WriteWithContext(ctx, path, nil); err != nil {
		return KeyInfo{}, s.explain("rotate key", path, "update", err)
	}
	s.cache.clear()
	return s.KeyInfo(ctx)
}

// Health reports whether Vault answers, unsealed, for /readyz.
func (s *TransitSigner) Health(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	h, err := s.client.Sys().HealthWithContext(ctx)
	if err != nil {
		return fmt.Errorf("vault unreachable: %v", err)
	}
	if h.Sealed {
		return errors.New("vault is sealed")
	}
	if !s.breaker.allow() {
		return errors.New("vault circuit open after repeated failures")
	}
	return nil
}

// breaker fails fast after repeated unavailability, so devices get a quick
// 503 rather than each waiting out a timeout.
type breaker struct {
	mu        sync.Mutex
	max       int
	coolDown  time.Duration
	failures  int
	openUntil time.Time
}

func (b *breaker) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	// After the cool-down one call goes through (half-open): its outcome
	// closes the circuit or opens it again.
	return b.failures < b.max || !time.Now().Before(b.openUntil)
}

func (b *breaker) failure() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	if b.failures >= b.max {
		b.openUntil = time.Now().Add(b.coolDown)
	}
}

func (b *breaker) success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures = 0
}

// verifyCache remembers recent successful verifications, bounded in size
// and age.
type verifyCache struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	items map[[32]byte]time.Time
	order [][32]byte
}

func newVerifyCache(max int, ttl time.Duration) *verifyCache {
	return &verifyCache{max: max, ttl: ttl, items: map[[32]byte]time.Time{}}
}

func (c *verifyCache) hit(k [32]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.items[k]
	return ok && time.Since(at) < c.ttl
}

func (c *verifyCache) add(k [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[k]; !ok {
		c.order = append(c.order, k)
	}
	c.items[k] = time.Now()
	for len(c.order) > c.max {
		delete(c.items, c.order[0])
		c.order = c.order[1:]
	}
}

func (c *verifyCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.items = map[[32]byte]time.Time{}
	c.order = nil
}

type transitMetrics struct {
	latency   *prometheus.HistogramVec
	errors    *prometheus.CounterVec
	cacheHits prometheus.Counter
}

func newTransitMetrics(reg prometheus.Registerer) *transitMetrics {
	m := &transitMetrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "vestibule_vault_request_duration_seconds",
			Help: "Vault transit call latency by operation.", Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 3}},
			[]string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vestibule_vault_errors_total",
			Help: "Vault transit call failures by operation and kind."}, []string{"op", "kind"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "vestibule_vault_verify_cache_hits_total",
			Help: "Token verifications answered from the cache."}),
	}
	if reg != nil {
		reg.MustRegister(m.latency, m.errors, m.cacheHits)
	}
	return m
}
