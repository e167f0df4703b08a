package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
	"github.com/vestibule-mdm/vestibule/internal/testidp"
	"github.com/vestibule-mdm/vestibule/internal/testserver"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

// newPortalEnv is a server whose users sign in at a real OpenID Provider.
func newPortalEnv(t *testing.T, users ...testidp.User) (*env, *testidp.IdP) {
	t.Helper()
	ctx := context.Background()
	var idp *testidp.IdP
	url, app := testserver.Start(t, storetest.DSN(t, "sqlite"), "", func(cfg *config.Config) {
		idp = testidp.Start(t, cfg.PublicURL+"/auth/callback", users...)
		secret := filepath.Join(t.TempDir(), "secret")
		os.WriteFile(secret, []byte(idp.ClientSecret), 0o600)
		cfg.OIDC = config.OIDC{Issuer: idp.URL, ClientID: idp.ClientID, ClientSecretFile: secret, EmailClaim: "email"}
		cfg.Portal.ReservationsPerHour = 3
		cfg.MDM.PostApprovalProfiles = t.TempDir()
	})
	for _, u := range []string{"alice@example.com", "dora@example.com"} {
		if _, err := app.Users.Add(ctx, admin, enrollment.UserInput{Email: u}); err != nil {
			t.Fatal(err)
		}
	}
	return &env{t: t, url: url, app: app, ctx: ctx}, idp
}

var loginIDRE = regexp.MustCompile(`name="id" value="([^"]+)"`)

// idpLogin signs in through the portal and the IdP's login page as a
// browser would, and returns the client and the final response.
func idpLogin(t *testing.T, e *env, username, password string) (*http.Client, int, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.Get(e.url + "/auth/login?next=/portal")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := loginIDRE.FindSubmatch(page)
	if m == nil {
		t.Fatalf("no IdP login page at %s: %s", resp.Request.URL, page)
	}
	loginURL := resp.Request.URL.Scheme + "://" + resp.Request.URL.Host + "/login/username"
	resp, err = c.PostForm(loginURL, url.Values{"username": {username}, "password": {password}, "id": {string(m[1])}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return c, resp.StatusCode, string(body)
}

var portalUsers = []testidp.User{
	{Username: "alice", Password: "alice-pass", Email: "alice@example.com", EmailVerified: true},
	{Username: "mallory", Password: "mallory-pass", Email: "mallory@example.com", EmailVerified: true},
	{Username: "dora", Password: "dora-pass", Email: "dora@example.com", EmailVerified: false},
}

func TestPortalThroughARealIdP(t *testing.T) {
	e, _ := newPortalEnv(t, portalUsers...)

	start := time.Now()
	alice, code, body := idpLogin(t, e, "alice", "alice-pass")
	t.Logf("IdP sign-in round trip: %v", time.Since(start))
	if code != 200 || !strings.Contains(body, "Which device are you enrolling?") {
		t.Fatalf("alice's sign-in: %d %s", code, body)
	}
	resp, err := alice.PostForm(e.url+"/portal/enroll", url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	profile, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-apple-aspen-config" {
		t.Fatalf("profile: %d %v", resp.StatusCode, resp.Header)
	}
	// The profile enrolls a device, which waits for approval and shows
	// in the portal with "this wasn't me".
	d := devicesim.New(http.DefaultClient, "C02PORTAL001")
	if err := d.Install(profile); err != nil {
		t.Fatal(err)
	}
	if err := d.Enroll(e.ctx); err != nil {
		t.Fatal(err)
	}
	if code, err := d.Authenticate(e.ctx); err != nil || code != 200 {
		t.Fatalf("Authenticate: %d %v", code, err)
	}
	resp, _ = alice.Get(e.url + "/portal")
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "waiting for approval") || !strings.Contains(string(page), "C02PORTAL001") {
		t.Fatalf("the portal does not show the waiting device:\n%s", page)
	}
	// "This wasn't me": suspicious, and denied while pending.
	resp, _ = alice.PostForm(e.url+"/portal/devices/"+d.Profile.CN+"/not-me", url.Values{})
	resp.Body.Close()
	en, _ := e.app.Enrollments.Get(e.ctx, d.Profile.CN)
	if !en.Suspicious || en.State != enrollment.StateDenied {
		t.Fatalf("after this wasn't me: %+v", en)
	}
	// Rate limit: 3 an hour; one used above.
	for i := range 3 {
		resp, _ = alice.PostForm(e.url+"/portal/enroll", url.Values{})
		resp.Body.Close()
		if want := map[bool]int{true: 200, false: 429}[i < 2]; resp.StatusCode != want {
			t.Fatalf("profile %d: %d, want %d", i+2, resp.StatusCode, want)
		}
	}
}

func TestPortalRefusals(t *testing.T) {
	e, _ := newPortalEnv(t, portalUsers...)

	t.Run("unknown user", func(t *testing.T) {
		_, code, body := idpLogin(t, e, "mallory", "mallory-pass")
		if code != 403 || !strings.Contains(body, "Ask your administrator") {
			t.Fatalf("%d %s", code, body)
		}
		if list, _ := e.app.Reservations.List(e.ctx, enrollment.ReservationFilter{}); len(list) != 0 {
			t.Fatal("something was reserved")
		}
		ev, _ := e.app.Store.ListAudit(e.ctx, enrollment.AuditFilter{Actor: "user:mallory@example.com"})
		if len(ev) == 0 || ev[0].Outcome != enrollment.OutcomeRefused {
			t.Fatalf("the refusal is not audited: %+v", ev)
		}
	})
	t.Run("email not verified", func(t *testing.T) {
		_, code, body := idpLogin(t, e, "dora", "dora-pass")
		if code != 403 || !strings.Contains(body, "not verified") {
			t.Fatalf("%d %s", code, body)
		}
	})
	t.Run("disabled user", func(t *testing.T) {
		u, _ := e.app.Store.UserByEmail(e.ctx, "alice@example.com")
		if _, err := e.app.Users.SetDisabled(e.ctx, admin, u.ID, true); err != nil {
			t.Fatal(err)
		}
		defer e.app.Users.SetDisabled(e.ctx, admin, u.ID, false)
		_, code, _ := idpLogin(t, e, "alice", "alice-pass")
		if code != 403 {
			t.Fatalf("%d", code)
		}
	})
	t.Run("bad state", func(t *testing.T) {
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar}
		resp, err := c.Get(e.url + "/auth/callback?state=forged&code=whatever")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.Contains(string(body), "did not start in this browser") {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("replayed callback", func(t *testing.T) {
		// Sign in, then send the same callback (code, state, nonce) again.
		jar, _ := cookiejar.New(nil)
		var callback *url.URL
		c := &http.Client{Jar: jar, CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if r.URL.Path == "/auth/callback" {
				callback = r.URL
			}
			return nil
		}}
		resp, _ := c.Get(e.url + "/auth/login?next=/portal")
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := loginIDRE.FindSubmatch(page)
		resp, _ = c.PostForm(resp.Request.URL.Scheme+"://"+resp.Request.URL.Host+"/login/username",
			url.Values{"username": {"alice"}, "password": {"alice-pass"}, "id": {string(m[1])}})
		resp.Body.Close()
		if resp.StatusCode != 200 || callback == nil {
			t.Fatalf("first sign-in: %d %v", resp.StatusCode, callback)
		}
		// The state cookie is gone after use; an attacker replaying the
		// callback with the cookie set gets nothing either.
		jar2, _ := cookiejar.New(nil)
		u, _ := url.Parse(e.url + "/auth/")
		jar2.SetCookies(u, []*http.Cookie{{Name: "vestibule_oidc_state", Value: callback.Query().Get("state"), Path: "/auth/"}})
		resp, _ = (&http.Client{Jar: jar2}).Get(callback.String())
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.Contains(string(body), "already used") {
			t.Fatalf("replay: %d %s", resp.StatusCode, body)
		}
	})
}
