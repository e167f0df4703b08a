package auth_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

// TestIDTokenRules signs ID tokens with a real key and checks go-oidc's
// verification as Vestibule configures it: issuer, audience, expiry,
// signature, nonce, and the e-mail rules.
func TestIDTokenRules(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t, "sqlite")
	now := time.Now()
	users := enrollment.NewUsers(st, nil)
	users.Add(ctx, enrollment.Actor{Name: "t"}, enrollment.UserInput{Email: "alice@example.com"})
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	const iss, aud = "https://idp.example", "vestibule"
	verifier := oidc.NewVerifier(iss, &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{key.Public()}}, &oidc.Config{ClientID: aud, Now: func() time.Time { return now }})
	o := auth.NewOIDCWithVerifier(auth.OIDCConfig{}, verifier, st, st, func() time.Time { return now })

	sign := func(k *rsa.PrivateKey, claims map[string]any) string {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k}, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(claims)
		jws, err := signer.Sign(b)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := jws.CompactSerialize()
		return s
	}
	base := func() map[string]any {
		return map[string]any{"iss": iss, "aud": aud, "sub": "u1", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
			"nonce": "n1", "email": "Alice@example.com", "email_verified": true}
	}
	with := func(k string, v any) map[string]any { c := base(); c[k] = v; return c }
	without := func(k string) map[string]any { c := base(); delete(c, k); return c }

	if u, err := o.Verify(ctx, sign(key, base()), "n1", "192.0.2.1"); err != nil || u.Email != "alice@example.com" {
		t.Fatalf("valid token: %v", err)
	}
	for _, tc := range []struct {
		name  string
		token string
		nonce string
		want  error
	}{
		{"error/wrong audience", sign(key, with("aud", "someone-else")), "n1", auth.ErrIDTokenRejected},
		{"error/wrong issuer", sign(key, with("iss", "https://evil.example")), "n1", auth.ErrIDTokenRejected},
		{"error/expired", sign(key, with("exp", now.Add(-time.Minute).Unix())), "n1", auth.ErrIDTokenRejected},
		{"error/other key", sign(other, base()), "n1", auth.ErrIDTokenRejected},
		{"error/nonce of another sign-in", sign(key, base()), "n2", auth.ErrIDTokenRejected},
		{"error/no nonce", sign(key, without("nonce")), "n1", auth.ErrIDTokenRejected},
		{"error/email not verified", sign(key, with("email_verified", false)), "n1", auth.ErrEmailUnverified},
		{"error/email_verified missing", sign(key, without("email_verified")), "n1", auth.ErrEmailUnverified},
		{"error/unknown user", sign(key, with("email", "mallory@example.com")), "n1", auth.ErrNotAllowed},
		{"error/no email", sign(key, without("email")), "n1", auth.ErrNotAllowed},
		{"error/garbage", "not.a.jwt", "n1", auth.ErrIDTokenRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := o.Verify(ctx, tc.token, tc.nonce, "192.0.2.1"); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	// Groups decide console roles when a mapping is configured.
	g := auth.NewOIDCWithVerifier(auth.OIDCConfig{GroupsClaim: "groups",
		GroupRoles: map[string]enrollment.Role{"mdm-admins": enrollment.RoleAdmin, "helpdesk": enrollment.RoleApprover}},
		verifier, st, st, func() time.Time { return now })
	g.SetRoleSetter(users)
	for _, tc := range []struct {
		groups []string
		want   enrollment.Role
	}{
		{[]string{"helpdesk", "staff"}, enrollment.RoleApprover},
		{[]string{"helpdesk", "mdm-admins"}, enrollment.RoleAdmin},
		{nil, enrollment.RoleUser},
	} {
		u, err := g.Verify(ctx, sign(key, with("groups", tc.groups)), "n1", "192.0.2.1")
		if err != nil || u.Role != tc.want {
			t.Errorf("groups %v: role %s, %v; want %s", tc.groups, u.Role, err, tc.want)
		}
	}
}
