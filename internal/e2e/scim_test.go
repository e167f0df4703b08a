package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
)

const scimToken = "scim-token-for-tests-0123456789abcdef"

func scimCall(t *testing.T, e *env, token, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/scim+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// TestSCIMProvisioning drives /scim/v2/Users as Okta and Entra ID do.
func TestSCIMProvisioning(t *testing.T) {
	e := newEnv(t, "sqlite", func(c *config.Config) {
		f := filepath.Join(t.TempDir(), "scim")
		os.WriteFile(f, []byte(scimToken+"\n"), 0o600)
		c.Portal.SCIMTokenFile = f
	})
	code, u := scimCall(t, e, scimToken, "POST", "/scim/v2/Users",
		`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"Carol@Example.com","name":{"givenName":"Carol","familyName":"Jones"},"active":true}`)
	if code != 201 || u["userName"] != "carol@example.com" || u["displayName"] != "Carol Jones" || u["active"] != true {
		t.Fatalf("create: %d %v", code, u)
	}
	id := u["id"].(string)
	if code, _ := scimCall(t, e, scimToken, "POST", "/scim/v2/Users", `{"userName":"carol@example.com"}`); code != 409 {
		t.Errorf("duplicate: %d", code)
	}
	code, list := scimCall(t, e, scimToken, "GET", `/scim/v2/Users?filter=userName%20eq%20%22carol@example.com%22`, "")
	if code != 200 || list["totalResults"] != float64(1) {
		t.Fatalf("filter: %d %v", code, list)
	}
	if code, _ := scimCall(t, e, scimToken, "GET", `/scim/v2/Users?filter=emails%20co%20%22x%22`, ""); code != 400 {
		t.Errorf("unsupported filter: %d", code)
	}
	// The new user can reserve; deactivating revokes the open reservation.
	res, _, err := e.app.Reservations.Reserve(e.ctx, admin, "carol@example.com")
	if err != nil {
		t.Fatal(err)
	}
	code, u = scimCall(t, e, scimToken, "PATCH", "/scim/v2/Users/"+id,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}`)
	if code != 200 || u["active"] != false {
		t.Fatalf("deactivate: %d %v", code, u)
	}
	if r, _ := e.app.Reservations.Get(e.ctx, res.ID); r.State != enrollment.ReservationRevoked {
		t.Errorf("reservation of a deactivated user is %s", r.State)
	}
	code, u = scimCall(t, e, scimToken, "PUT", "/scim/v2/Users/"+id, `{"userName":"carol@example.com","displayName":"Carol J.","active":true}`)
	if code != 200 || u["active"] != true || u["displayName"] != "Carol J." {
		t.Fatalf("replace: %d %v", code, u)
	}
	if code, _ := scimCall(t, e, scimToken, "PUT", "/scim/v2/Users/"+id, `{"userName":"other@example.com"}`); code != 400 {
		t.Errorf("changing userName: %d", code)
	}
	if code, _ := scimCall(t, e, scimToken, "DELETE", "/scim/v2/Users/"+id, ""); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if got, _ := e.app.Store.UserByEmail(e.ctx, "carol@example.com"); got.Enabled() {
		t.Error("a deleted user is still enabled")
	}
	for _, tc := range []struct{ name, token, method, path string }{
		{"wrong token", "nope", "GET", "/scim/v2/Users"},
		{"no token", "", "GET", "/scim/v2/Users"},
	} {
		if code, _ := scimCall(t, e, tc.token, tc.method, tc.path, ""); code != 401 {
			t.Errorf("%s: %d", tc.name, code)
		}
	}
	if code, _ := scimCall(t, e, scimToken, "GET", "/scim/v2/Users/"+enrollment.NewID(), ""); code != 404 {
		t.Errorf("unknown user: %d", code)
	}
	ev, _ := e.app.Store.ListAudit(e.ctx, enrollment.AuditFilter{Actor: "scim"})
	if len(ev) < 4 {
		t.Errorf("SCIM changes audited: %d", len(ev))
	}
}
