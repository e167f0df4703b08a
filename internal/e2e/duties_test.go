package e2e

import (
	"encoding/csv"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

// TestNobodyApprovesTheirOwnEnrollment: an approver whose own device waits
// cannot approve it in the console, in bulk, or with an API token they
// created; another approver can.
func TestNobodyApprovesTheirOwnEnrollment(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		ann := e.browser(enrollment.RoleApprover)
		annEmail := e.lastBrowserEmail
		d, r := e.enrolledDevice(annEmail, "C02OWNDEVICE")
		code, err := d.Authenticate(e.ctx)
		e.expect("Authenticate", code, err, 200)

		code, _ = do(t, ann, "POST", e.url+"/console/enrollments/"+r.ID+"/approve", url.Values{"note": {"mine"}}, nil)
		if code != 303 || e.enrollment(r.ID).State != enrollment.StatePending {
			t.Fatalf("console approval of one's own enrollment: %d, state %s", code, e.enrollment(r.ID).State)
		}
		code, _ = do(t, ann, "POST", e.url+"/console/enrollments/bulk-approve", url.Values{"id": {r.ID}}, nil)
		if code != 303 || e.enrollment(r.ID).State != enrollment.StatePending {
			t.Fatalf("bulk approval of one's own enrollment: %d, state %s", code, e.enrollment(r.ID).State)
		}

		// A token made by Ann in the console acts for Ann.
		_, secret, err := e.app.APITokens.Create(e.ctx, enrollment.Actor{Name: "user:" + annEmail}, "ann-ci", enrollment.RoleApprover)
		if err != nil {
			t.Fatal(err)
		}
		code, body := e.api(secret, "POST", "/api/v1/enrollments/"+r.ID+"/approve", "")
		if code != 403 || !strings.Contains(body, "own name") {
			t.Fatalf("API approval with the owner's token: %d %s", code, body)
		}

		other := e.browser(enrollment.RoleApprover)
		code, _ = do(t, other, "POST", e.url+"/console/enrollments/"+r.ID+"/approve", url.Values{"note": {"checked with Ann"}}, nil)
		if code != 303 || e.enrollment(r.ID).State != enrollment.StateApproved {
			t.Fatalf("another approver: %d, state %s", code, e.enrollment(r.ID).State)
		}
		events, _ := e.app.Store.ListAudit(e.ctx, enrollment.AuditFilter{Action: "enrollment.self_approve"})
		if len(events) != 0 {
			t.Fatalf("self-approvals audited: %+v", events)
		}
	})
}

// TestAuditExportKeepsFilters follows the console's "Export CSV" link from
// a filtered audit page: the export holds only what the page showed.
func TestAuditExportKeepsFilters(t *testing.T) {
	e := newEnv(t, "sqlite")
	viewer := e.browser(enrollment.RoleViewer)
	code, page := do(t, viewer, "GET", e.url+"/console/audit?action=user.add&actor=test%3Aadmin", nil, nil)
	if code != 200 {
		t.Fatalf("audit page: %d", code)
	}
	m := regexp.MustCompile(`href="([^"]*)" id="export-csv"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no export link on the audit page")
	}
	link := html.UnescapeString(m[1])
	code, csvBody := do(t, viewer, "GET", e.url+link, nil, nil)
	if code != 200 {
		t.Fatalf("export %s: %d", link, code)
	}
	rows, err := csv.NewReader(strings.NewReader(csvBody)).ReadAll()
	if err != nil || len(rows) < 2 {
		t.Fatalf("export %s: %v, %d rows", link, err, len(rows))
	}
	for _, row := range rows[1:] {
		if row[3] != "user.add" || row[1] != "test:admin" {
			t.Fatalf("the export ignored the filters (%s): row %v", link, row)
		}
	}
}

// TestBannersShowOnlyServerMessages: ?flash= and ?error= in a link no
// longer put words into the console's or the portal's banners.
func TestBannersShowOnlyServerMessages(t *testing.T) {
	e := newEnv(t, "sqlite")
	viewer := e.browser(enrollment.RoleViewer)
	const phish = "Your session expired: call +1 555 0199 now"
	for _, path := range []string{"/console/pending", "/console/devices", "/login", "/portal"} {
		for _, key := range []string{"flash", "error"} {
			_, page := do(t, viewer, "GET", e.url+path+"?"+key+"="+url.QueryEscape(phish), nil, nil)
			if strings.Contains(page, "555 0199") {
				t.Errorf("%s?%s= shows the link's text", path, key)
			}
		}
	}
}

// TestIdPErrorIsNotEchoed: the IdP callback's error parameter is shown only
// when it is a code OAuth defines.
func TestIdPErrorIsNotEchoed(t *testing.T) {
	e, _ := newPortalEnv(t)
	for _, tc := range []struct{ errParam, want, not string }{
		{"access_denied", "access_denied", ""},
		{"Call +1 555 0199 to restore your account", "did not name", "555 0199"},
	} {
		resp, err := http.Get(e.url + "/auth/callback?error=" + url.QueryEscape(tc.errParam))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), tc.want) || tc.not != "" && strings.Contains(string(b), tc.not) {
			t.Errorf("%q: the page says %q", tc.errParam, b)
		}
	}
}

// TestBulkApprovalInput: the console's bulk approval answers for each
// device it was given (approved, already decided, unknown, malformed, given
// twice) and changes only the pending ones; the same form sent again
// changes nothing; too many devices or too long a note change nothing.
func TestBulkApprovalInput(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		approver := e.browser(enrollment.RoleApprover)
		var pending []string
		for _, serial := range []string{"C02BULK00001", "C02BULK00002", "C02BULK00003", "C02BULK00004"} {
			d, r := e.enrolledDevice("alice@example.com", serial)
			code, err := d.Authenticate(e.ctx)
			e.expect("Authenticate", code, err, 200)
			pending = append(pending, r.ID)
		}
		decided := pending[3]
		if _, err := e.app.Enrollments.Approve(e.ctx, admin, decided, ""); err != nil {
			t.Fatal(err)
		}
		approvals := func() int {
			evs, err := e.app.Store.ListAudit(e.ctx, enrollment.AuditFilter{Action: "enrollment.approve", Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			return len(evs)
		}
		banner := func() string {
			t.Helper()
			_, body := do(t, approver, "GET", e.url+"/console/pending", nil, nil)
			m := regexp.MustCompile(`class="(?:flash|error)[^"]*"[^>]*>([^<]*)<`).FindStringSubmatch(body)
			if m == nil {
				t.Fatal("no message on the page")
			}
			return html.UnescapeString(m[1])
		}
		post := func(ids []string, note string) string {
			t.Helper()
			form := url.Values{"id": ids, "note": {note}}
			if code, body := do(t, approver, "POST", e.url+"/console/enrollments/bulk-approve", form, nil); code != http.StatusSeeOther {
				t.Fatalf("bulk approval: %d %.200s", code, body)
			}
			return banner()
		}

		form := []string{pending[0], pending[1], decided, "x;DROP", pending[2], pending[0]}
		before := approvals()
		msg := post(form, "checked")
		if !strings.Contains(msg, "Approved 3; 2 failed") || !strings.Contains(msg, "approved, not pending") || !strings.Contains(msg, `"x;DROP"`) {
			t.Fatalf("first bulk approval: %q", msg)
		}
		for _, id := range pending[:3] {
			if en := e.enrollment(id); en.State != enrollment.StateApproved || en.DecisionNote != "bulk approval: checked" {
				t.Fatalf("%s: %s, note %q", id, en.State, en.DecisionNote)
			}
		}
		if n := approvals() - before; n != 3 {
			t.Fatalf("%d approvals audited, want 3", n)
		}

		before = approvals()
		if msg := post(form, "checked"); !strings.Contains(msg, "Approved 0; 5 failed") {
			t.Fatalf("the same form again: %q", msg)
		}
		if n := approvals() - before; n != 0 {
			t.Fatalf("the form sent again audited %d approvals", n)
		}

		d, r := e.enrolledDevice("alice@example.com", "C02BULK00005")
		code, err := d.Authenticate(e.ctx)
		e.expect("Authenticate", code, err, 200)
		many := make([]string, enrollment.MaxBulkApproval+1)
		for i := range many {
			many[i] = r.ID
		}
		for _, tc := range []struct {
			ids  []string
			note string
			want string
		}{
			{many, "", "select 1 to 500 devices"},
			{[]string{r.ID}, strings.Repeat("n", 1986), "note longer than 1985 characters"},
		} {
			if msg := post(tc.ids, tc.note); !strings.Contains(msg, tc.want) {
				t.Fatalf("%q, want %q", msg, tc.want)
			}
			if en := e.enrollment(r.ID); en.State != enrollment.StatePending {
				t.Fatalf("after a refused bulk approval the device is %s", en.State)
			}
		}
	})
}
