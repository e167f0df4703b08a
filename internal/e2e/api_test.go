package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

func (e *env) token(role enrollment.Role) string {
	e.t.Helper()
	_, secret, err := e.app.APITokens.Create(e.ctx, admin, "t-"+string(role)+"-"+enrollment.NewID()[:8], role)
	if err != nil {
		e.t.Fatal(err)
	}
	return secret
}

func (e *env) api(token, method, path, body string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestApprovalAPI(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		approver, viewer := e.token(enrollment.RoleApprover), e.token(enrollment.RoleViewer)
		adminToken := e.token(enrollment.RoleAdmin)
		d, r := e.enrolledDevice("alice@example.com", "SER-API")
		code, err := d.Authenticate(e.ctx)
		e.expect("Authenticate", code, err, 200)

		code, body := e.api(viewer, "GET", "/api/v1/enrollments?state=pending", "")
		var list struct {
			Items []struct {
				ID, State, DeviceID string
				Device              struct{ UDID, Serial string }
			}
		}
		json.Unmarshal([]byte(body), &list)
		if code != 200 || len(list.Items) != 1 || list.Items[0].ID != r.ID || list.Items[0].Device.Serial != "SER-API" {
			t.Fatalf("pending list: %d %s", code, body)
		}
		for _, tc := range []struct {
			name, token, method, path, body string
			want                            int
		}{
			{"error/viewer approves", viewer, "POST", "/api/v1/enrollments/" + r.ID + "/approve", "", 403},
			{"error/deny without reason", approver, "POST", "/api/v1/enrollments/" + r.ID + "/deny", `{}`, 400},
			{"error/unknown enrollment", approver, "POST", "/api/v1/enrollments/" + enrollment.NewID() + "/approve", "", 404},
			{"error/bad state filter", viewer, "GET", "/api/v1/enrollments?state=maybe", "", 400},
			{"error/unknown command", approver, "POST", "/api/v1/devices/" + r.ID + "/commands", `{"request_type":"EraseDevice"}`, 400},
			{"ok/queue for a pending device", approver, "POST", "/api/v1/devices/" + d.UDID + "/commands", `{"request_type":"ProfileList"}`, 202},
			{"error/approver installs a profile", approver, "POST", "/api/v1/devices/" + r.ID + "/commands",
				`{"request_type":"InstallProfile","payload":"PHBsaXN0Lz4="}`, 403},
			{"error/admin installs an empty profile", adminToken, "POST", "/api/v1/devices/" + r.ID + "/commands",
				`{"request_type":"InstallProfile"}`, 400},
			{"error/bad audit time", viewer, "GET", "/api/v1/audit?since=yesterday", "", 400},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if code, body := e.api(tc.token, tc.method, tc.path, tc.body); code != tc.want {
					t.Fatalf("HTTP %d %s, want %d", code, body, tc.want)
				}
			})
		}

		// Two admins approve at once: one wins, the other is told.
		codes := make([]int, 2)
		bodies := make([]string, 2)
		var wg sync.WaitGroup
		for i := range codes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[i], bodies[i] = e.api(approver, "POST", "/api/v1/enrollments/"+r.ID+"/approve", `{"note":"ok"}`)
			}()
		}
		wg.Wait()
		if !(codes[0] == 200 && codes[1] == 409 || codes[0] == 409 && codes[1] == 200) {
			t.Fatalf("concurrent approvals: %v %v", codes, bodies)
		}
		loser := bodies[0]
		if codes[0] == 200 {
			loser = bodies[1]
		}
		if !strings.Contains(loser, "approved") || !strings.Contains(loser, `"conflict"`) {
			t.Errorf("the loser's message: %s", loser)
		}
		// The attestation question, queued first, was never answered while
		// pending: it comes first after approval.
		types, err := d.DrainCommands(e.ctx, 10)
		if err != nil || strings.Join(types, ",") != "DeviceInformation,ProfileList,DeviceInformation,InstallProfile" {
			t.Fatalf("after approval: %v %v", types, err)
		}
		code, body = e.api(viewer, "GET", "/api/v1/devices/"+r.ID+"/commands", "")
		if code != 200 || strings.Count(body, `"acknowledged"`) != 4 {
			t.Errorf("commands: %d %s", code, body)
		}
		code, body = e.api(viewer, "GET", "/api/v1/audit?target_id="+r.ID+"&action=enrollment.approve", "")
		if code != 200 || strings.Count(body, `"enrollment.approve"`) != 1 {
			t.Errorf("audit: %d %s", code, body)
		}
	})
}
