package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// OIDC sign-in refusals. The person sees a page saying what to do; the
// audit log gets the detail.
var (
	ErrNotAllowed      = errors.New("not allowed to enroll: ask your administrator to add you")
	ErrEmailUnverified = errors.New("the identity provider has not verified this e-mail address")
	ErrLoginExpired    = errors.New("the sign-in took too long or was already used; start again")
	ErrStateMismatch   = errors.New("the sign-in did not start in this browser; start again")
	ErrIDTokenRejected = errors.New("the identity provider's answer did not verify")
)

// OIDCConfig configures the relying party.
type OIDCConfig struct {
	Issuer       string
	ClientID     string
	ClientSecret string
	RedirectURL  string
	Scopes       []string
	// EmailClaim names the claim that names the user ("email").
	EmailClaim string
	// AllowUnverifiedEmail accepts an e-mail the IdP has not verified.
	AllowUnverifiedEmail bool
	// GroupsClaim and GroupRoles map IdP groups to console roles.
	GroupsClaim string
	GroupRoles  map[string]enrollment.Role
	// HTTPClient talks to the IdP (tests give one that trusts a test CA).
	HTTPClient *http.Client
}

// LoginRecord is an IdP sign-in in progress.
type LoginRecord struct {
	StateHash string
	Nonce     string
	Verifier  string
	Next      string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// LoginStore keeps sign-ins in progress for the callback.
type LoginStore interface {
	CreateOIDCLogin(ctx context.Context, l LoginRecord) error
	// TakeOIDCLogin returns and deletes the record: a state is used once.
	TakeOIDCLogin(ctx context.Context, stateHash string) (LoginRecord, error)
}

// OIDC signs people in through the company's identity provider, with the
// authorization code flow, PKCE, state and nonce.
type OIDC struct {
	cfg      OIDCConfig
	provider *oidc.Provider
	oauth    oauth2.Config
	verifier *oidc.IDTokenVerifier
	store    LoginStore
	users    UserFinder
	audit    Auditor
	roles    RoleSetter
	now      func() time.Time
}

// NewOIDC discovers the provider.
func NewOIDC(ctx context.Context, cfg OIDCConfig, store LoginStore, users UserFinder, audit Auditor, now func() time.Time) (*OIDC, error) {
	if cfg.Issuer == "" || cfg.ClientID == "" || cfg.RedirectURL == "" {
		return nil, errors.New("oidc: issuer, client_id and the redirect URL are required")
	}
	if cfg.EmailClaim == "" {
		cfg.EmailClaim = "email"
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = []string{oidc.ScopeOpenID, "email", "profile"}
	}
	if now == nil {
		now = time.Now
	}
	if cfg.HTTPClient != nil {
		ctx = oidc.ClientContext(ctx, cfg.HTTPClient)
	}
	provider, err := oidc.NewProvider(ctx, cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("oidc discovery at %s: %w", cfg.Issuer, err)
	}
	o := &OIDC{cfg: cfg, provider: provider, store: store, users: users, audit: audit, now: now,
		oauth:    oauth2.Config{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, RedirectURL: cfg.RedirectURL, Endpoint: provider.Endpoint(), Scopes: cfg.Scopes},
		verifier: provider.VerifierContext(oidc.ClientContext(context.Background(), cfg.HTTPClient), &oidc.Config{ClientID: cfg.ClientID, Now: now})}
	return o, nil
}

// NewOIDCWithVerifier is NewOIDC without discovery, for verifying tokens
// against a given key set (tests of the verification rules).
func NewOIDCWithVerifier(cfg OIDCConfig, v *oidc.IDTokenVerifier, users UserFinder, audit Auditor, now func() time.Time) *OIDC {
	if cfg.EmailClaim == "" {
		cfg.EmailClaim = "email"
	}
	return &OIDC{cfg: cfg, verifier: v, users: users, audit: audit, now: now}
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashState(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// loginTTL is how long a person has at the IdP.
const loginTTL = 10 * time.Minute

// Begin starts a sign-in and returns the IdP URL to send the browser to
// and the state, which the caller also keeps in a cookie so the callback
// can tell it came back to the browser that started it.
func (o *OIDC) Begin(ctx context.Context, next string) (authURL, state string, err error) {
	state, nonce, verifier := randomString(24), randomString(24), oauth2.GenerateVerifier()
	now := o.now()
	if err := o.store.CreateOIDCLogin(ctx, LoginRecord{StateHash: hashState(state), Nonce: nonce, Verifier: verifier, Next: next,
		CreatedAt: now, ExpiresAt: now.Add(loginTTL)}); err != nil {
		return "", "", fmt.Errorf("begin sign-in: %w", err)
	}
	return o.oauth.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), state, nil
}

// Identity is who the IdP says signed in.
type Identity struct {
	Email    string
	Name     string
	Subject  string
	Verified bool
}

// Finish completes a sign-in at the callback: the state must match the
// browser's and be unused and fresh, the code is exchanged with the PKCE
// verifier, the ID token verified (signature, issuer, audience, expiry,
// nonce), and the user must be known to Vestibule and enabled.
func (o *OIDC) Finish(ctx context.Context, state, cookieState, code, ip string) (enrollment.User, string, error) {
	if state == "" || cookieState == "" || state != cookieState {
		return enrollment.User{}, "", ErrStateMismatch
	}
	rec, err := o.store.TakeOIDCLogin(ctx, hashState(state))
	if errors.Is(err, enrollment.ErrNotFound) {
		return enrollment.User{}, "", ErrLoginExpired
	}
	if err != nil {
		return enrollment.User{}, "", fmt.Errorf("finish sign-in: %w", err)
	}
	if !o.now().Before(rec.ExpiresAt) {
		return enrollment.User{}, "", ErrLoginExpired
	}
	if o.cfg.HTTPClient != nil {
		ctx = oidc.ClientContext(ctx, o.cfg.HTTPClient)
	}
	tok, err := o.oauth.Exchange(ctx, code, oauth2.VerifierOption(rec.Verifier))
	if err != nil {
		return enrollment.User{}, "", fmt.Errorf("%w: code exchange: %v", ErrIDTokenRejected, err)
	}
	raw, _ := tok.Extra("id_token").(string)
	// Some IdPs put the e-mail only in the UserInfo answer, not in the ID
	// token; ask for it with the access token when the token lacks it.
	userinfo := func(sub string) (map[string]any, error) {
		info, err := o.provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
		if err != nil {
			return nil, err
		}
		if info.Subject != sub {
			return nil, errors.New("userinfo is for another subject")
		}
		var claims map[string]any
		if err := info.Claims(&claims); err != nil {
			return nil, err
		}
		return claims, nil
	}
	u, err := o.verify(ctx, raw, rec.Nonce, ip, userinfo)
	return u, rec.Next, err
}

// Verify checks an ID token and maps it to a known, enabled user.
func (o *OIDC) Verify(ctx context.Context, rawIDToken, nonce, ip string) (enrollment.User, error) {
	return o.verify(ctx, rawIDToken, nonce, ip, nil)
}

func (o *OIDC) verify(ctx context.Context, rawIDToken, nonce, ip string, userinfo func(sub string) (map[string]any, error)) (enrollment.User, error) {
	if rawIDToken == "" {
		return enrollment.User{}, fmt.Errorf("%w: no ID token", ErrIDTokenRejected)
	}
	idt, err := o.verifier.Verify(ctx, rawIDToken)
	if err != nil {
		return enrollment.User{}, fmt.Errorf("%w: %v", ErrIDTokenRejected, err)
	}
	if idt.Nonce != nonce {
		return enrollment.User{}, fmt.Errorf("%w: nonce does not match this sign-in", ErrIDTokenRejected)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return enrollment.User{}, fmt.Errorf("%w: claims: %v", ErrIDTokenRejected, err)
	}
	if _, ok := claims[o.cfg.EmailClaim]; !ok && userinfo != nil {
		extra, err := userinfo(idt.Subject)
		if err != nil {
			return enrollment.User{}, fmt.Errorf("%w: userinfo: %v", ErrIDTokenRejected, err)
		}
		for k, v := range extra {
			if _, ok := claims[k]; !ok {
				claims[k] = v
			}
		}
	}
	email, _ := claims[o.cfg.EmailClaim].(string)
	verified, _ := claims["email_verified"].(bool)
	norm, err := enrollment.NormalizeEmail(email)
	if err != nil {
		o.record(ctx, email, ip, "no usable "+o.cfg.EmailClaim+" claim")
		return enrollment.User{}, fmt.Errorf("%w: claim %s is %q", ErrNotAllowed, o.cfg.EmailClaim, email)
	}
	if !verified && !o.cfg.AllowUnverifiedEmail && o.cfg.EmailClaim == "email" {
		o.record(ctx, norm, ip, "email not verified by the IdP")
		return enrollment.User{}, ErrEmailUnverified
	}
	u, err := o.users.UserByEmail(ctx, norm)
	if errors.Is(err, enrollment.ErrNotFound) || (err == nil && !u.Enabled()) {
		o.record(ctx, norm, ip, "not a known, enabled user")
		return enrollment.User{}, ErrNotAllowed
	}
	if err != nil {
		return enrollment.User{}, fmt.Errorf("sign-in: %w", err)
	}
	if len(o.cfg.GroupRoles) > 0 && o.roles != nil {
		if role := o.roleFromGroups(claims[o.cfg.GroupsClaim]); role != u.Role {
			if u, err = o.roles.SetRole(ctx, enrollment.Actor{Name: "oidc:groups", RemoteIP: ip}, u.ID, role); err != nil {
				return enrollment.User{}, fmt.Errorf("sign-in: role from groups: %w", err)
			}
		}
	}
	return u, nil
}

// RoleSetter changes a user's role.
type RoleSetter interface {
	SetRole(ctx context.Context, actor enrollment.Actor, id string, role enrollment.Role) (enrollment.User, error)
}

// SetRoleSetter lets group membership at the IdP decide console roles.
func (o *OIDC) SetRoleSetter(r RoleSetter) { o.roles = r }

// roleOrder ranks roles to pick the highest of a person's groups.
var roleOrder = map[enrollment.Role]int{enrollment.RoleUser: 0, enrollment.RoleViewer: 1, enrollment.RoleApprover: 2, enrollment.RoleAdmin: 3}

func (o *OIDC) roleFromGroups(claim any) enrollment.Role {
	best := enrollment.RoleUser
	groups, _ := claim.([]any)
	for _, g := range groups {
		name, _ := g.(string)
		if r, ok := o.cfg.GroupRoles[name]; ok && roleOrder[r] > roleOrder[best] {
			best = r
		}
	}
	return best
}

func (o *OIDC) record(ctx context.Context, email, ip, detail string) {
	if o.audit == nil {
		return
	}
	_ = o.audit.AppendAudit(ctx, enrollment.AuditEvent{At: o.now(), Actor: "user:" + strings.ToLower(email), Action: "session.oidc",
		TargetType: "user", RemoteIP: ip, Outcome: enrollment.OutcomeRefused, Detail: detail})
}
