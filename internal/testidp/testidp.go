// Package testidp runs a real OpenID Provider (zitadel/oidc's op package
// with its example storage and login page) in-process on a random port,
// with discovery, JWKS and the code flow, for tests of IdP sign-in.
package testidp

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
)

// User is a person at the IdP.
type User struct {
	Username, Password, Email string
	EmailVerified             bool
}

// IdP is a running provider.
type IdP struct {
	URL          string // the issuer
	ClientID     string
	ClientSecret string
}

// Start runs a provider that knows users and one web client whose
// redirect URI is redirectURL.
func Start(t testing.TB, redirectURL string, users ...User) *IdP {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	issuer := "http://" + srv.Listener.Addr().String()
	m := map[string]map[string]any{}
	for i, u := range users {
		id := "id" + string(rune('a'+i))
		m[id] = map[string]any{"ID": id, "Username": u.Username, "Password": u.Password, "FirstName": "Test", "LastName": u.Username,
			"Email": u.Email, "EmailVerified": u.EmailVerified, "PreferredLanguage": "en"}
	}
	b, _ := json.Marshal(m)
	path := filepath.Join(t.TempDir(), "users.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	us, err := storage.StoreFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	client := storage.WebClient("vestibule", "s3cret-for-tests", redirectURL)
	st := storage.NewStorageWithClients(us, map[string]*storage.Client{"vestibule": client})
	srv.Config.Handler = exampleop.SetupServer(issuer, st, nil, false)
	srv.Start()
	t.Cleanup(srv.Close)
	return &IdP{URL: issuer, ClientID: "vestibule", ClientSecret: "s3cret-for-tests"}
}
