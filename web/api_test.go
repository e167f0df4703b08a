package web_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/micromdm/plist"
	"github.com/smallstep/pkcs7"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/testserver"
	"github.com/vestibule-mdm/vestibule/server"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

type apiFixture struct {
	url    string
	app    *server.App
	tokens map[enrollment.Role]string
}

func newAPI(t *testing.T, dialect string) apiFixture {
	t.Helper()
	ctx := context.Background()
	url, app := testserver.Start(t, storetest.DSN(t, dialect), "", nil)
	f := apiFixture{url: url, app: app, tokens: map[enrollment.Role]string{}}
	for _, r := range []enrollment.Role{enrollment.RoleAdmin, enrollment.RoleApprover, enrollment.RoleViewer} {
		_, secret, err := app.APITokens.Create(ctx, enrollment.Actor{Name: "test"}, "t-"+string(r), r)
		if err != nil {
			t.Fatal(err)
		}
		f.tokens[r] = secret
	}
	for _, u := range []enrollment.UserInput{{Email: "alice@example.com"}, {Email: "gone@example.com"}} {
		if _, err := app.Users.Add(ctx, enrollment.Actor{Name: "test"}, u); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f apiFixture) do(t *testing.T, role enrollment.Role, method, path, contentType, body string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if role != "" {
		req.Header.Set("Authorization", "Bearer "+f.tokens[role])
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func errorCode(b []byte) string {
	var e struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal(b, &e)
	return e.Error.Code
}

const jsonCT = "application/json"

func TestReservationsAPI(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		f := newAPI(t, dialect)
		admin := enrollment.RoleAdmin

		resp, body := f.do(t, admin, "POST", "/api/v1/reservations", jsonCT, `{"user":"Alice@example.com"}`)
		if resp.StatusCode != 201 {
			t.Fatalf("create: %d %s", resp.StatusCode, body)
		}
		var created struct {
			ID         string `json:"id"`
			User       string `json:"user"`
			ProfileURL string `json:"profile_url"`
			ExpiresAt  string `json:"expires_at"`
		}
		if err := json.Unmarshal(body, &created); err != nil {
			t.Fatal(err)
		}
		if created.User != "alice@example.com" || !strings.HasSuffix(created.ProfileURL, "/api/v1/reservations/"+created.ID+"/profile") || created.ExpiresAt == "" {
			t.Fatalf("created: %s", body)
		}

		// Two downloads: two different challenges and tokens; only the
		// last one's secrets are on the reservation.
		var secrets [2]struct{ challenge, token string }
		for i := range secrets {
			resp, body = f.do(t, admin, "GET", "/api/v1/reservations/"+created.ID+"/profile", "", "")
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-apple-aspen-config" ||
				!strings.Contains(resp.Header.Get("Content-Disposition"), ".mobileconfig") {
				t.Fatalf("profile: %d %v", resp.StatusCode, resp.Header)
			}
			secrets[i].challenge, secrets[i].token = profileSecrets(t, f.app, body, created.ID)
		}
		if secrets[0].challenge == secrets[1].challenge || secrets[0].token == secrets[1].token {
			t.Fatal("two downloads carry the same secrets")
		}
		res, err := f.app.Store.Reservation(context.Background(), created.ID)
		if err != nil {
			t.Fatal(err)
		}
		if res.ChallengeHash != enrollment.HashChallenge(secrets[1].challenge) || res.DownloadedAt == nil {
			t.Errorf("the stored challenge is not the last download's")
		}
		tok, err := f.app.Tokens.Verify(context.Background(), secrets[1].token)
		if err != nil || tok.ReservationID != created.ID || tok.NonceHex() != res.TokenNonce {
			t.Errorf("token: %+v %v", tok, err)
		}

		resp, body = f.do(t, enrollment.RoleViewer, "GET", "/api/v1/reservations?user=alice@example.com&state=open", "", "")
		if resp.StatusCode != 200 || !strings.Contains(string(body), created.ID) {
			t.Errorf("list: %d %s", resp.StatusCode, body)
		}
		resp, body = f.do(t, enrollment.RoleViewer, "GET", "/api/v1/reservations/"+created.ID, "", "")
		if resp.StatusCode != 200 || strings.Contains(string(body), "challenge_hash") || strings.Contains(string(body), res.TokenNonce) {
			t.Errorf("get leaks secrets or fails: %d %s", resp.StatusCode, body)
		}

		resp, _ = f.do(t, admin, "DELETE", "/api/v1/reservations/"+created.ID, "", "")
		if resp.StatusCode != 204 {
			t.Fatalf("revoke: %d", resp.StatusCode)
		}
		for _, path := range []string{"/api/v1/reservations/" + created.ID + "/profile"} {
			resp, body = f.do(t, admin, "GET", path, "", "")
			if resp.StatusCode != 409 || errorCode(body) != "conflict" {
				t.Errorf("download after revoke: %d %s", resp.StatusCode, body)
			}
		}
		resp, _ = f.do(t, admin, "DELETE", "/api/v1/reservations/"+created.ID, "", "")
		if resp.StatusCode != 409 {
			t.Errorf("revoke twice: %d", resp.StatusCode)
		}

		audit, _ := f.app.Store.ListAudit(context.Background(), enrollment.AuditFilter{TargetID: created.ID})
		var actions []string
		for _, a := range audit {
			actions = append(actions, a.Action+"@"+a.Actor)
		}
		if got := strings.Join(actions, " "); got != "reservation.revoke@api:t-admin reservation.download@api:t-admin reservation.download@api:t-admin reservation.create@api:t-admin" {
			t.Errorf("audit: %s", got)
		}
	})
}

func TestReservationsAPIRefusals(t *testing.T) {
	f := newAPI(t, "sqlite")
	unknown := enrollment.NewID()
	for _, tc := range []struct {
		name         string
		role         enrollment.Role
		method, path string
		ct, body     string
		status       int
		code         string
	}{
		{"error/no token", "", "POST", "/api/v1/reservations", jsonCT, `{"user":"alice@example.com"}`, 401, ""},
		{"error/viewer creates", enrollment.RoleViewer, "POST", "/api/v1/reservations", jsonCT, `{"user":"alice@example.com"}`, 403, "forbidden"},
		{"error/approver downloads", enrollment.RoleApprover, "GET", "/api/v1/reservations/" + unknown + "/profile", "", "", 403, "forbidden"},
		{"error/unknown user", enrollment.RoleAdmin, "POST", "/api/v1/reservations", jsonCT, `{"user":"mallory@example.com"}`, 403, "forbidden"},
		{"error/not an email", enrollment.RoleAdmin, "POST", "/api/v1/reservations", jsonCT, `{"user":"mallory"}`, 400, "invalid"},
		{"error/missing user", enrollment.RoleAdmin, "POST", "/api/v1/reservations", jsonCT, `{}`, 400, "invalid"},
		{"error/unknown field", enrollment.RoleAdmin, "POST", "/api/v1/reservations", jsonCT, `{"user":"alice@example.com","admin":true}`, 400, "invalid"},
		{"error/not json", enrollment.RoleAdmin, "POST", "/api/v1/reservations", jsonCT, `user=alice`, 400, "invalid"},
		{"error/wrong content type", enrollment.RoleAdmin, "POST", "/api/v1/reservations", "text/plain", `{"user":"alice@example.com"}`, 400, "invalid"},
		{"error/two values", enrollment.RoleAdmin, "POST", "/api/v1/reservations", jsonCT, `{"user":"alice@example.com"}{}`, 400, "invalid"},
		{"error/huge body", enrollment.RoleAdmin, "POST", "/api/v1/reservations", jsonCT, `{"user":"` + strings.Repeat("a", 2<<20) + `"}`, 413, ""},
		{"error/unknown reservation", enrollment.RoleAdmin, "GET", "/api/v1/reservations/" + unknown + "/profile", "", "", 404, "not_found"},
		{"error/garbage id", enrollment.RoleAdmin, "GET", "/api/v1/reservations/..%2f..%2fetc/profile", "", "", 404, "not_found"},
		{"error/bad state filter", enrollment.RoleViewer, "GET", "/api/v1/reservations?state=everything", "", "", 400, "invalid"},
		{"error/unknown endpoint", enrollment.RoleAdmin, "GET", "/api/v1/nothing", "", "", 404, "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.do(t, tc.role, tc.method, tc.path, tc.ct, tc.body)
			if resp.StatusCode != tc.status || (tc.code != "" && errorCode(body) != tc.code) {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, body, tc.status, tc.code)
			}
		})
	}
	if list, _ := f.app.Reservations.List(context.Background(), enrollment.ReservationFilter{}); len(list) != 0 {
		t.Errorf("refused requests left %d reservations", len(list))
	}
}

// profileSecrets verifies a downloaded profile's signature against the dev
// CA and returns the challenge and token it carries.
func profileSecrets(t *testing.T, app *server.App, signed []byte, reservationID string) (challenge, token string) {
	t.Helper()
	p7, err := pkcs7.Parse(signed)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(app.CA.Cert)
	if err := p7.VerifyWithChain(pool); err != nil {
		t.Fatalf("profile signature: %v", err)
	}
	var p struct {
		PayloadContent []map[string]any
	}
	if err := plist.Unmarshal(p7.Content, &p); err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(p7.Content, []byte(reservationID)); n < 3 {
		t.Errorf("reservation ID appears %d times", n)
	}
	for _, pl := range p.PayloadContent {
		switch pl["PayloadType"] {
		case "com.apple.security.scep":
			challenge = pl["PayloadContent"].(map[string]any)["Challenge"].(string)
		case "com.apple.mdm":
			u := pl["CheckInURL"].(string)
			_, token, _ = strings.Cut(u, "?t=")
		}
	}
	if challenge == "" || token == "" {
		t.Fatalf("profile lacks a challenge or token")
	}
	return challenge, token
}
