package e2e

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

const testPassword = "correct horse battery staple"

// browser signs a new person with role in and returns a client that keeps
// their session cookie and does not follow redirects.
func (e *env) browser(role enrollment.Role) *http.Client {
	e.t.Helper()
	email := string(role) + "-" + enrollment.NewID()[:6] + "@example.com"
	e.lastBrowserEmail = email
	u, err := e.app.Users.Add(e.ctx, admin, enrollment.UserInput{Email: email, Role: role})
	if err != nil {
		e.t.Fatal(err)
	}
	hash, _ := auth.HashPassword(testPassword)
	if err := e.app.Store.SetUserPassword(e.ctx, u.ID, hash, enrollment.AuditEvent{At: u.CreatedAt, Actor: "test", Action: "user.password"}); err != nil {
		e.t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm(e.url+"/login", url.Values{"email": {email}, "password": {testPassword}})
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if role == enrollment.RoleUser {
		if resp.StatusCode != http.StatusUnauthorized {
			e.t.Fatalf("a plain user signed in to the console: %d", resp.StatusCode)
		}
		return c
	}
	if resp.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("sign-in as %s: %d", role, resp.StatusCode)
	}
	return c
}

func do(t testing.TB, c *http.Client, method, u string, form url.Values, header http.Header) (int, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, u, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestConsoleRoles walks every console route with every role.
func TestConsoleRoles(t *testing.T) {
	e := newEnv(t, "sqlite")
	d, r := e.enrolledDevice("alice@example.com", "SER-ROLES")
	if code, err := d.Authenticate(e.ctx); err != nil || code != 200 {
		t.Fatal(code, err)
	}
	users, _ := e.app.Users.List(e.ctx)
	bob := users[1].ID
	clients := map[enrollment.Role]*http.Client{}
	for _, role := range []enrollment.Role{enrollment.RoleViewer, enrollment.RoleApprover, enrollment.RoleAdmin} {
		clients[role] = e.browser(role)
	}
	clients[""] = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	clients[enrollment.RoleUser] = e.browser(enrollment.RoleUser)

	type route struct {
		method, path string
		form         url.Values
		min          enrollment.Role
	}
	routes := []route{
		{"GET", "/console/pending", nil, enrollment.RoleViewer},
		{"GET", "/console/devices", nil, enrollment.RoleViewer},
		{"GET", "/console/devices/" + r.ID, nil, enrollment.RoleViewer},
		{"GET", "/console/reservations", nil, enrollment.RoleViewer},
		{"GET", "/console/audit", nil, enrollment.RoleViewer},
		{"GET", "/console/audit.csv", nil, enrollment.RoleViewer},
		{"GET", "/console/users", nil, enrollment.RoleAdmin},
		{"GET", "/console/tokens", nil, enrollment.RoleAdmin},
		{"POST", "/console/devices/" + r.ID + "/commands", url.Values{"type": {"ProfileList"}}, enrollment.RoleApprover},
		{"POST", "/console/enrollments/" + enrollment.NewID() + "/approve", url.Values{}, enrollment.RoleApprover},
		{"POST", "/console/enrollments/" + enrollment.NewID() + "/deny", url.Values{"reason": {"x"}}, enrollment.RoleApprover},
		{"POST", "/console/enrollments/bulk-approve", url.Values{}, enrollment.RoleApprover},
		{"POST", "/console/devices/" + r.ID + "/resend", url.Values{}, enrollment.RoleApprover},
		{"POST", "/console/reservations", url.Values{"user": {"nobody@example.com"}}, enrollment.RoleAdmin},
		{"POST", "/console/reservations/" + enrollment.NewID() + "/revoke", url.Values{}, enrollment.RoleAdmin},
		{"POST", "/console/users", url.Values{"email": {"bad"}}, enrollment.RoleAdmin},
		{"POST", "/console/users/" + bob + "/disable", url.Values{}, enrollment.RoleAdmin},
		{"POST", "/console/users/" + bob + "/enable", url.Values{}, enrollment.RoleAdmin},
		{"POST", "/console/tokens", url.Values{"name": {"x y"}, "role": {"viewer"}}, enrollment.RoleAdmin},
		{"POST", "/console/tokens/nope/revoke", url.Values{}, enrollment.RoleAdmin},
	}
	rank := map[enrollment.Role]int{"": 0, enrollment.RoleUser: 0, enrollment.RoleViewer: 1, enrollment.RoleApprover: 2, enrollment.RoleAdmin: 3}
	for _, rt := range routes {
		for role, c := range clients {
			name := rt.method + " " + rt.path + " as " + string(role)
			if role == "" {
				name = rt.method + " " + rt.path + " signed out"
			}
			t.Run(name, func(t *testing.T) {
				code, _ := do(t, c, rt.method, e.url+rt.path, rt.form, nil)
				allowed := rank[role] >= rank[rt.min]
				switch {
				case role == "" || role == enrollment.RoleUser:
					if code != http.StatusSeeOther && code != http.StatusUnauthorized {
						t.Fatalf("got %d, want a redirect to sign-in or 401", code)
					}
				case !allowed:
					if code != http.StatusForbidden {
						t.Fatalf("got %d, want 403", code)
					}
				default:
					if code != http.StatusOK && code != http.StatusSeeOther {
						t.Fatalf("got %d, want 200 or 303", code)
					}
				}
			})
		}
	}
	if en, _ := e.app.Enrollments.Get(e.ctx, r.ID); en.State != enrollment.StatePending {
		t.Fatalf("the role walk changed the enrollment to %s", en.State)
	}
}

func TestConsoleSafety(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		admin := e.browser(enrollment.RoleAdmin)
		// The device names itself with markup: it must render as text.
		d, r := e.enrolledDevice("alice@example.com", `SER"><img src=x onerror=alert(1)>`)
		d.DeviceName = `<script>alert("owned")</script>`
		if code, err := d.Authenticate(e.ctx); err != nil || code != 200 {
			t.Fatal(code, err)
		}
		for _, path := range []string{"/console/pending", "/console/devices", "/console/devices/" + r.ID} {
			code, body := do(t, admin, "GET", e.url+path, nil, nil)
			if code != 200 || strings.Contains(body, `<script>alert`) || strings.Contains(body, `<img src=x`) ||
				!strings.Contains(body, `&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;`) {
				t.Fatalf("%s: %d, markup not escaped", path, code)
			}
		}
		// A forged cross-site form post is refused and changes nothing.
		code, _ := do(t, admin, "POST", e.url+"/console/enrollments/"+r.ID+"/approve", url.Values{},
			http.Header{"Origin": {"https://evil.example"}, "Sec-Fetch-Site": {"cross-site"}})
		if code != http.StatusForbidden {
			t.Fatalf("cross-site approve: %d", code)
		}
		if en, _ := e.app.Enrollments.Get(e.ctx, r.ID); en.State != enrollment.StatePending {
			t.Fatal("a cross-site request approved a device")
		}
		// Security headers on every page.
		req, _ := http.NewRequest("GET", e.url+"/console/pending", nil)
		resp, err := admin.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for h, want := range map[string]string{"Content-Security-Policy": "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff",
			"Referrer-Policy": "same-origin"} {
			if !strings.Contains(resp.Header.Get(h), want) {
				t.Errorf("%s: %q", h, resp.Header.Get(h))
			}
		}
		// Same-origin approval works, from the browser's point of view.
		code, _ = do(t, admin, "POST", e.url+"/console/enrollments/"+r.ID+"/approve", url.Values{"note": {"ok"}},
			http.Header{"Origin": {e.url}, "Sec-Fetch-Site": {"same-origin"}})
		if code != http.StatusSeeOther {
			t.Fatalf("same-origin approve: %d", code)
		}
		if en, _ := e.app.Enrollments.Get(e.ctx, r.ID); en.State != enrollment.StateApproved {
			t.Fatalf("state after approval: %s", en.State)
		}
		// Approving again says why it cannot.
		req, _ = http.NewRequest("POST", e.url+"/console/enrollments/"+r.ID+"/approve", strings.NewReader(""))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err = admin.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if strings.Contains(loc, "?") {
			t.Errorf("the message travels in the URL: %s", loc)
		}
		if _, page := do(t, admin, "GET", e.url+loc, nil, nil); !strings.Contains(page, "already approved") && !strings.Contains(page, "is approved") {
			t.Errorf("second approval: the page after %s does not say why", loc)
		}

		// Disabling a user revokes their open reservations.
		res, _, err := e.app.Reservations.Reserve(e.ctx, enrollment.Actor{Name: "t"}, "bob@example.com")
		if err != nil {
			t.Fatal(err)
		}
		bob, _ := e.app.Store.UserByEmail(e.ctx, "bob@example.com")
		if code, _ := do(t, admin, "POST", e.url+"/console/users/"+bob.ID+"/disable", url.Values{}, nil); code != http.StatusSeeOther {
			t.Fatalf("disable: %d", code)
		}
		if got, _ := e.app.Reservations.Get(e.ctx, res.ID); got.State != enrollment.ReservationRevoked {
			t.Errorf("reservation of a disabled user is %s", got.State)
		}
		if _, _, err := e.app.Reservations.Reserve(e.ctx, enrollment.Actor{Name: "t"}, "bob@example.com"); err == nil {
			t.Error("a disabled user got a reservation")
		}
		// Sign out ends the session.
		do(t, admin, "POST", e.url+"/logout", url.Values{}, nil)
		if code, _ := do(t, admin, "GET", e.url+"/console/pending", nil, nil); code != http.StatusSeeOther {
			t.Errorf("after sign-out: %d", code)
		}
	})
}

func TestConsoleIssuesAProfile(t *testing.T) {
	e := newEnv(t, "sqlite")
	admin := e.browser(enrollment.RoleAdmin)
	req, _ := http.NewRequest("POST", e.url+"/console/reservations", strings.NewReader("user=alice%40example.com"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := admin.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-apple-aspen-config" {
		t.Fatalf("profile download: %d %v", resp.StatusCode, resp.Header)
	}
	d := newDevice(e)
	if err := d.Install(body); err != nil {
		t.Fatal(err)
	}
	if err := d.Enroll(e.ctx); err != nil {
		t.Fatalf("the console's profile does not enroll: %v", err)
	}
}
