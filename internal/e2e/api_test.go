package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
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
	return e.apiAs(token, method, path, "", body)
}

// apiAs is api with a Content-Type other than JSON's.
func (e *env) apiAs(token, method, path, contentType, body string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType == "" && body != "" {
		contentType = "application/json"
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
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

// TestFleetCommandAPI: one request queues a command for many devices, each
// its own, and wakes the approved ones; a request naming a device that
// cannot take it, or any malformed one, queues nothing at all.
func TestFleetCommandAPI(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		approver, viewer := e.token(enrollment.RoleApprover), e.token(enrollment.RoleViewer)
		var approved []*devicesim.Device
		var ids []string
		for i := range 2 {
			d, r := e.enrolledDevice("alice@example.com", fmt.Sprintf("SER-FLEET-%d", i))
			code, err := d.Authenticate(e.ctx)
			e.expect("Authenticate", code, err, 200)
			code, err = d.TokenUpdate(e.ctx)
			e.expect("TokenUpdate", code, err, 200)
			if _, err := e.app.Enrollments.Approve(e.ctx, admin, r.ID, ""); err != nil {
				t.Fatal(err)
			}
			if _, err := d.DrainCommands(e.ctx, 10); err != nil {
				t.Fatal(err)
			}
			approved = append(approved, d)
			ids = append(ids, r.ID)
		}
		// The pending device has a push token too: it is still not woken.
		pending, pr := e.enrolledDevice("bob@example.com", "SER-FLEET-P")
		code, err := pending.Authenticate(e.ctx)
		e.expect("Authenticate", code, err, 200)
		code, err = pending.TokenUpdate(e.ctx)
		e.expect("TokenUpdate", code, err, 200)
		denied, dr := e.enrolledDevice("bob@example.com", "SER-FLEET-D")
		code, err = denied.Authenticate(e.ctx)
		e.expect("Authenticate", code, err, 200)
		if _, err := e.app.Enrollments.Deny(e.ctx, admin, dr.ID, "lost"); err != nil {
			t.Fatal(err)
		}
		// What each request changed: commands queued for anyone, pushes asked.
		queued := func() (commands, pushes int) {
			t.Helper()
			db := e.app.Store.DB()
			if err := db.Get(&commands, `SELECT COUNT(*) FROM commands WHERE request_type = 'DeviceInformation' AND status = 'queued'`); err != nil {
				t.Fatal(err)
			}
			if err := db.Get(&pushes, `SELECT COUNT(*) FROM push_outbox`); err != nil {
				t.Fatal(err)
			}
			return commands, pushes
		}
		list := func(devices ...string) string {
			b, _ := json.Marshal(devices)
			return string(b)
		}
		tooMany := make([]string, enrollment.MaxFleetCommand+1)
		for i := range tooMany {
			tooMany[i] = ids[0]
		}
		for _, tc := range []struct {
			name, token, contentType, body string
			want                           int
			wantIn                         string
		}{
			{"error/a denied device among them", approver, "", `{"request_type":"DeviceInformation","devices":` + list(ids[0], dr.ID, ids[1]) + `}`, 409, dr.ID},
			{"error/an unknown device", approver, "", `{"request_type":"DeviceInformation","devices":` + list(ids[0], "NO-SUCH-SERIAL") + `}`, 404, "NO-SUCH-SERIAL"},
			{"error/a device named twice", approver, "", `{"request_type":"DeviceInformation","devices":` + list(ids[0], approved[0].UDID) + `}`, 400, "twice"},
			{"error/no device", approver, "", `{"request_type":"DeviceInformation","devices":[]}`, 400, "1 to 500"},
			{"error/too many devices", approver, "", `{"request_type":"DeviceInformation","devices":` + list(tooMany...) + `}`, 400, "1 to 500"},
			{"error/unknown command", approver, "", `{"request_type":"EraseDevice","devices":` + list(ids[0]) + `}`, 400, "EraseDevice"},
			{"error/unknown command for unknown devices", approver, "", `{"request_type":"EraseDevice","devices":["NO-SUCH-DEVICE"]}`, 400, "EraseDevice"},
			{"error/approver installs a profile", approver, "", `{"request_type":"InstallProfile","payload":"PHBsaXN0Lz4=","devices":` + list(ids[0]) + `}`, 403, "admin"},
			{"error/viewer", viewer, "", `{"request_type":"DeviceInformation","devices":` + list(ids[0]) + `}`, 403, ""},
			{"error/no token", "", "", `{"request_type":"DeviceInformation","devices":` + list(ids[0]) + `}`, 401, ""},
			{"error/form body", approver, "application/x-www-form-urlencoded", `devices=` + ids[0], 400, "application/json"},
			{"error/truncated JSON", approver, "", `{"request_type":"DeviceInformation","devices":["`, 400, ""},
			{"error/unknown field", approver, "", `{"request_type":"DeviceInformation","devices":` + list(ids[0]) + `,"all":true}`, 400, "all"},
			{"error/a device name too long", approver, "", `{"request_type":"DeviceInformation","devices":["` + strings.Repeat("A", 129) + `"]}`, 400, "longer than 128"},
			{"error/oversized body", approver, "", `{"request_type":"DeviceInformation","devices":["` + strings.Repeat("A", 70<<10) + `"]}`, 400, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				beforeCommands, beforePushes := queued()
				code, body := e.apiAs(tc.token, "POST", "/api/v1/commands", tc.contentType, tc.body)
				if code != tc.want || !strings.Contains(body, tc.wantIn) {
					t.Fatalf("HTTP %d %s, want %d with %q", code, body, tc.want, tc.wantIn)
				}
				if c, p := queued(); c != beforeCommands || p != beforePushes {
					t.Fatalf("a refused request queued %d commands and %d pushes", c-beforeCommands, p-beforePushes)
				}
			})
		}

		// Pushes the approvals asked for are gone, as a pusher would take
		// them: the request must ask for exactly its own.
		if _, err := e.app.Store.DB().Exec(`DELETE FROM push_outbox`); err != nil {
			t.Fatal(err)
		}
		beforeCommands, _ := queued()
		// By enrollment ID or UDID, as /devices/{id} takes them.
		code, body := e.api(approver, "POST", "/api/v1/commands", `{"request_type":"DeviceInformation","devices":`+list(ids[0], approved[1].UDID, pending.UDID)+`}`)
		var out struct {
			Items []struct {
				DeviceID    string `json:"device_id"`
				CommandUUID string `json:"command_uuid"`
			}
		}
		if code != 202 || json.Unmarshal([]byte(body), &out) != nil || len(out.Items) != 3 {
			t.Fatalf("fleet command: %d %s", code, body)
		}
		if out.Items[0].DeviceID != ids[0] || out.Items[1].DeviceID != ids[1] || out.Items[2].DeviceID != pr.ID ||
			out.Items[0].CommandUUID == out.Items[1].CommandUUID || out.Items[1].CommandUUID == out.Items[2].CommandUUID {
			t.Fatalf("fleet command items: %s", body)
		}
		// Commands for three devices; pushes for the two approved ones only.
		var woken []string
		if err := e.app.Store.DB().Select(&woken, `SELECT enrollment_id FROM push_outbox ORDER BY enrollment_id`); err != nil {
			t.Fatal(err)
		}
		wantWoken := slices.Sorted(slices.Values(ids))
		if c, _ := queued(); c != beforeCommands+3 || !slices.Equal(woken, wantWoken) {
			t.Fatalf("queued %d commands (want 3), pushes for %v (want %v)", c-beforeCommands, woken, wantWoken)
		}
		for i, d := range approved {
			if code, cmd, err := d.Connect(e.ctx, "Idle", ""); err != nil || code != 200 || cmd == nil || cmd.UUID != out.Items[i].CommandUUID {
				t.Errorf("device %d got %d %+v %v, want %s", i, code, cmd, err, out.Items[i].CommandUUID)
			}
		}
		// The pending device gets nothing of it before approval.
		if code, cmd, err := pending.Connect(e.ctx, "Idle", ""); err != nil || code != 200 || (cmd != nil && cmd.UUID == out.Items[2].CommandUUID) {
			t.Fatalf("pending device: %d %+v %v", code, cmd, err)
		}
		code, body = e.api(viewer, "GET", "/api/v1/audit?action=command.enqueue&target_id="+pr.ID, "")
		if code != 200 || strings.Count(body, `"command.enqueue"`) != 1 {
			t.Errorf("audit: %d %s", code, body)
		}
	})
}
