package web

import (
	"encoding/csv"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// pendingItem is one row of the queue with what the approver should see.
type pendingItem struct {
	E        enrollment.Enrollment
	R        enrollment.Reservation
	Previous *enrollment.Enrollment
	// Conflict is another user's pending or approved enrollment whose
	// UDID or serial this one reports.
	Conflict     *enrollment.Enrollment
	OtherDevices int
	// ManyOtherDevices: more than OtherDevices (the count stops there).
	ManyOtherDevices bool
	// UserName is the owner's display name, when they have one.
	UserName string
	// DEPChecked is true when the ABM inventory is synced; InInventory
	// then says whether the claimed serial is in it.
	DEPChecked  bool
	InInventory bool
}

func (c *Console) pending(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	list, err := c.o.Enrollments.List(ctx, enrollment.EnrollmentFilter{State: enrollment.StatePending, Limit: 500})
	if err != nil {
		c.fail(w, r, me(r), http.StatusInternalServerError, "Error", userMessage(err))
		return
	}
	// One query per kind of fact, not per row: the queue stays fast with
	// many devices waiting.
	var ids, prevIDs, userIDs []string
	for _, e := range list {
		ids = append(ids, e.ID)
		userIDs = append(userIDs, e.UserID)
		if e.PreviousID != "" {
			prevIDs = append(prevIDs, e.PreviousID)
		}
		if e.ConflictID != "" {
			prevIDs = append(prevIDs, e.ConflictID)
		}
	}
	res, err := c.o.Queue.ReservationsByID(ctx, ids)
	if err == nil {
		var prev map[string]enrollment.Enrollment
		var approved map[string]int
		var names map[string]string
		if prev, err = c.o.Queue.EnrollmentsByID(ctx, prevIDs); err == nil {
			if approved, err = c.o.Queue.ApprovedCounts(ctx, userIDs, otherDevicesShown+1); err == nil {
				names, err = c.o.Queue.UserNames(ctx, userIDs)
			}
		}
		items := make([]pendingItem, 0, len(list))
		for _, e := range list {
			it := pendingItem{E: e, R: res[e.ID], OtherDevices: min(approved[e.UserID], otherDevicesShown),
				ManyOtherDevices: approved[e.UserID] > otherDevicesShown, UserName: names[e.UserID]}
			if p, ok := prev[e.PreviousID]; ok {
				it.Previous = &p
			}
			if p, ok := prev[e.ConflictID]; ok {
				it.Conflict = &p
			}
			if c.o.DEP != nil && e.Facts.Serial != "" {
				if _, in, err := c.o.DEP.DEPFacts(ctx, e.Facts.Serial); err == nil {
					it.DEPChecked, it.InInventory = true, in
				}
			}
			items = append(items, it)
		}
		if err == nil {
			c.renderPending(w, r, items)
			return
		}
	}
	c.fail(w, r, me(r), http.StatusInternalServerError, "Error", userMessage(err))
}

func (c *Console) renderPending(w http.ResponseWriter, r *http.Request, items []pendingItem) {
	c.render(w, r, http.StatusOK, "pending", "Pending enrollments", "pending", map[string]any{"Items": items})
}

func (c *Console) approve(w http.ResponseWriter, r *http.Request) {
	e, err := c.o.Enrollments.Approve(r.Context(), actor(r), r.PathValue("id"), r.PostFormValue("note"))
	if err != nil {
		back(w, r, fromPage(r, "/console/pending"), "error", userMessage(err))
		return
	}
	back(w, r, fromPage(r, "/console/pending"), "flash", fmt.Sprintf("Approved %s (%s).", deviceLabel(e), e.UserEmail))
}

func (c *Console) deny(w http.ResponseWriter, r *http.Request) {
	e, err := c.o.Enrollments.Deny(r.Context(), actor(r), r.PathValue("id"), r.PostFormValue("reason"))
	if err != nil {
		back(w, r, fromPage(r, "/console/pending"), "error", userMessage(err))
		return
	}
	back(w, r, fromPage(r, "/console/pending"), "flash", fmt.Sprintf("Denied %s (%s); its certificates are revoked.", deviceLabel(e), e.UserEmail))
}

// retire ends the enrollment named in the path on an approver's explicit
// decision that its device changed hands; it comes from the page of the
// enrollment that claims the device.
func (c *Console) retire(w http.ResponseWriter, r *http.Request) {
	e, err := c.o.Enrollments.Retire(r.Context(), actor(r), r.PathValue("id"), r.PostFormValue("reason"))
	if err != nil {
		back(w, r, fromPage(r, "/console/pending"), "error", userMessage(err))
		return
	}
	back(w, r, fromPage(r, "/console/pending"), "flash", fmt.Sprintf("Retired %s of %s; its certificates are revoked and the owner is told.", deviceLabel(e), e.UserEmail))
}

// otherDevicesShown is as far as the queue counts an owner's approved
// devices ("100+ other devices" past it).
const otherDevicesShown = 100

func (c *Console) bulkApprove(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		back(w, r, "/console/pending", "error", "unreadable form")
		return
	}
	ids := r.PostForm["id"]
	if len(ids) == 0 || len(ids) > enrollment.MaxBulkApproval {
		back(w, r, "/console/pending", "error", fmt.Sprintf("select 1 to %d devices", enrollment.MaxBulkApproval))
		return
	}
	results, err := c.o.Enrollments.ApproveAll(r.Context(), actor(r), ids, r.PostFormValue("note"))
	if err != nil {
		back(w, r, "/console/pending", "error", userMessage(err))
		return
	}
	var done int
	var failed []string
	batchErrs := map[string]int{}
	for _, res := range results {
		if res.BatchErr != nil {
			batchErrs[res.BatchErr.Error()]++
		}
		if res.Err != nil {
			failed = append(failed, userMessage(res.Err))
		} else {
			done++
		}
	}
	for msg, n := range batchErrs {
		c.log.ErrorContext(r.Context(), "bulk approval: a batch failed whole; its devices were decided one by one", "err", msg, "devices", n)
	}
	if len(failed) > 0 {
		back(w, r, "/console/pending", "error", fmt.Sprintf("Approved %d; %d failed: %s", done, len(failed), strings.Join(failed, "; ")))
		return
	}
	back(w, r, "/console/pending", "flash", fmt.Sprintf("Approved %d device(s).", done))
}

func deviceLabel(e enrollment.Enrollment) string {
	if e.Facts.DeviceName != "" {
		return e.Facts.DeviceName + " (" + e.Facts.Serial + ")"
	}
	return e.Facts.Model + " " + e.Facts.Serial
}

func (c *Console) devices(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	state, err := enrollment.ParseState(r.URL.Query().Get("state"))
	if err != nil {
		state = ""
	}
	f := enrollment.EnrollmentFilter{State: state, Limit: 500}
	var list []enrollment.Enrollment
	switch {
	case q == "":
		list, err = c.o.Enrollments.List(r.Context(), f)
	case strings.Contains(q, "@"):
		var u enrollment.User
		if u, err = c.o.Reservations.UserByEmail(r.Context(), q); err == nil {
			f.UserID = u.ID
			list, err = c.o.Enrollments.List(r.Context(), f)
		} else if errors.Is(err, enrollment.ErrNotFound) || errors.Is(err, enrollment.ErrInvalid) {
			err = nil
		}
	default:
		f.Serial = q
		if list, err = c.o.Enrollments.List(r.Context(), f); err == nil && len(list) == 0 {
			f.Serial, f.UDID = "", q
			list, err = c.o.Enrollments.List(r.Context(), f)
		}
	}
	if err != nil {
		c.fail(w, r, me(r), http.StatusInternalServerError, "Error", userMessage(err))
		return
	}
	states := []enrollment.State{enrollment.StatePending, enrollment.StateApproved, enrollment.StateDenied, enrollment.StateSuperseded, enrollment.StateUnenrolled}
	c.render(w, r, http.StatusOK, "devices", "Devices", "devices", map[string]any{"Items": list, "Q": q, "State": state, "States": states})
}

func (c *Console) device(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	e, err := c.o.Enrollments.Get(ctx, r.PathValue("id"))
	if err != nil {
		if errors.Is(err, enrollment.ErrNotFound) {
			c.fail(w, r, me(r), http.StatusNotFound, "No such device",
				"No device has this ID. It may be mistyped, or the device never checked in. The Devices page lists every enrollment.")
			return
		}
		c.fail(w, r, me(r), http.StatusInternalServerError, "Error", userMessage(err))
		return
	}
	history, _ := c.o.Enrollments.List(ctx, enrollment.EnrollmentFilter{UDID: e.Facts.UDID})
	certs, _ := c.o.Certificates.ListCertificates(ctx, e.ID)
	cmds, _ := c.o.Commands.List(ctx, e.ID)
	var conflict *enrollment.Enrollment
	if e.ConflictID != "" {
		if ce, err := c.o.Enrollments.Get(ctx, e.ConflictID); err == nil {
			conflict = &ce
		}
	}
	data := map[string]any{"E": e, "History": history, "Certs": certs, "Commands": cmds, "PushOn": c.o.PushEnabled, "Conflict": conflict}
	// How the device got here: who issued its profile, from where.
	if res, err := c.o.Reservations.Get(ctx, e.ID); err == nil {
		data["R"] = res
	}
	if c.o.Trust != nil {
		trusted, why := e.Trusted()
		data["TrustOn"], data["Trusted"], data["TrustReason"] = true, trusted, why
		if tc, _ := c.o.Trust.TrustCertificates(ctx, e.ID); len(tc) > 0 {
			data["TrustCert"] = tc[0]
		}
		data["TrustEvents"], _ = c.o.Trust.LastEvents(ctx, e.ID)
	}
	c.render(w, r, http.StatusOK, "device", deviceLabel(e), "devices", data)
}

// trustStatus shows the trust CA, where relying parties find it, and the
// delivery health of every SSF stream.
func (c *Console) trustStatus(w http.ResponseWriter, r *http.Request) {
	if c.o.Trust == nil {
		c.fail(w, r, me(r), http.StatusNotFound, "Device trust", "Device trust is off on this server: create its CA with `vestibule ca init --trust`.")
		return
	}
	streams, err := c.o.Trust.Streams(r.Context(), "")
	if err != nil {
		c.fail(w, r, me(r), http.StatusInternalServerError, "Error", userMessage(err))
		return
	}
	c.render(w, r, http.StatusOK, "trust", "Device trust", "trust", map[string]any{"Summary": c.o.Trust.TrustSummary(), "Streams": streams})
}

func (c *Console) enqueue(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	path := "/console/devices/" + url.PathEscape(id)
	e, err := c.o.Enrollments.Get(r.Context(), id)
	if err != nil {
		back(w, r, "/console/devices", "error", userMessage(err))
		return
	}
	cmd, err := c.o.Builder.Build(r.PostFormValue("type"), nil)
	if err == nil {
		err = c.o.Commands.Enqueue(r.Context(), actor(r), e, cmd)
	}
	if err != nil {
		back(w, r, path, "error", userMessage(err))
		return
	}
	back(w, r, path, "flash", "Queued "+cmd.RequestType+".")
}

func (c *Console) resend(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	path := "/console/devices/" + url.PathEscape(id)
	e, err := c.o.Enrollments.Get(r.Context(), id)
	if err == nil && e.State != enrollment.StateApproved {
		err = fmt.Errorf("%w: only an approved device gets its post-approval profiles", enrollment.ErrConflict)
	}
	var cmds []enrollment.NewCommand
	if err == nil {
		cmds, err = c.o.PostApproval.Commands(e)
	}
	if err == nil {
		err = c.o.Commands.Enqueue(r.Context(), actor(r), e, cmds...)
	}
	if err != nil {
		back(w, r, path, "error", userMessage(err))
		return
	}
	back(w, r, path, "flash", fmt.Sprintf("Queued %d command(s).", len(cmds)))
}

func (c *Console) reservations(w http.ResponseWriter, r *http.Request) {
	state, err := enrollment.ParseReservationState(r.URL.Query().Get("state"))
	if err != nil || state == "" {
		state = enrollment.ReservationOpen
	}
	list, err := c.o.Reservations.List(r.Context(), enrollment.ReservationFilter{State: state, Limit: 500})
	if err != nil {
		c.fail(w, r, me(r), http.StatusInternalServerError, "Error", userMessage(err))
		return
	}
	states := []enrollment.ReservationState{enrollment.ReservationOpen, enrollment.ReservationClaimed, enrollment.ReservationExpired, enrollment.ReservationRevoked}
	c.render(w, r, http.StatusOK, "reservations", "Reservations", "reservations", map[string]any{"Items": list, "State": state, "States": states})
}

// downloadReservation hands out an open reservation's profile again, with
// fresh secrets: any earlier download of it stops working.
func (c *Console) downloadReservation(w http.ResponseWriter, r *http.Request) {
	res, sec, err := c.o.Reservations.DownloadAs(r.Context(), actor(r), r.PathValue("id"), r.PostFormValue("identity"))
	if err != nil {
		back(w, r, "/console/reservations", "error", userMessage(err))
		return
	}
	c.sendProfile(w, r, res, sec)
}

// reserve creates a reservation and answers with its signed profile: the
// plain download page for an admin enrolling a device on a user's behalf.
func (c *Console) reserve(w http.ResponseWriter, r *http.Request) {
	res, sec, err := c.o.Reservations.ReserveAs(r.Context(), actor(r), r.PostFormValue("user"), r.PostFormValue("identity"))
	if err != nil {
		back(w, r, "/console/reservations", "error", userMessage(err))
		return
	}
	c.sendProfile(w, r, res, sec)
}

// sendProfile answers with the signed profile of a reservation, or back to
// the reservations page when it cannot be made.
func (c *Console) sendProfile(w http.ResponseWriter, r *http.Request, res enrollment.Reservation, sec enrollment.Secrets) {
	body, err := c.o.Profiles.MakeProfile(r.Context(), res, sec)
	if err != nil {
		c.log.ErrorContext(r.Context(), "make profile", "err", err)
		back(w, r, "/console/reservations", "error", "the profile could not be made")
		return
	}
	WriteProfile(w, res.ID, body)
}

func (c *Console) revokeReservation(w http.ResponseWriter, r *http.Request) {
	if err := c.o.Reservations.Revoke(r.Context(), actor(r), r.PathValue("id")); err != nil {
		back(w, r, "/console/reservations", "error", userMessage(err))
		return
	}
	back(w, r, "/console/reservations", "flash", "Reservation revoked; its profile no longer works.")
}

func (c *Console) users(w http.ResponseWriter, r *http.Request) {
	list, err := c.o.Users.List(r.Context())
	if err != nil {
		c.fail(w, r, me(r), http.StatusInternalServerError, "Error", userMessage(err))
		return
	}
	roles := []enrollment.Role{enrollment.RoleUser, enrollment.RoleViewer, enrollment.RoleApprover, enrollment.RoleAdmin}
	c.render(w, r, http.StatusOK, "users", "Users", "users", map[string]any{"Items": list, "Roles": roles})
}

func (c *Console) addUser(w http.ResponseWriter, r *http.Request) {
	u, err := c.o.Users.Add(r.Context(), actor(r), enrollment.UserInput{Email: r.PostFormValue("email"), Name: r.PostFormValue("name"),
		Role: enrollment.Role(r.PostFormValue("role"))})
	if err != nil {
		back(w, r, "/console/users", "error", userMessage(err))
		return
	}
	back(w, r, "/console/users", "flash", "Added "+u.Email+".")
}

// maxImport bounds an uploaded user file.
const maxImport = 8 << 20

func (c *Console) importUsers(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxImport)
	f, _, err := r.FormFile("file")
	if err != nil {
		back(w, r, "/console/users", "error", "choose a CSV file (at most 8 MB)")
		return
	}
	defer f.Close()
	created, updated, err := c.o.Users.Import(r.Context(), actor(r), f)
	if err != nil {
		back(w, r, "/console/users", "error", userMessage(err))
		return
	}
	back(w, r, "/console/users", "flash", fmt.Sprintf("Imported: %d created, %d updated.", created, updated))
}

func (c *Console) setDisabled(disabled bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if id == me(r).ID {
			back(w, r, "/console/users", "error", "you cannot disable yourself")
			return
		}
		u, err := c.o.Users.SetDisabled(r.Context(), actor(r), id, disabled)
		if err != nil {
			back(w, r, "/console/users", "error", userMessage(err))
			return
		}
		verb := map[bool]string{true: "Disabled", false: "Enabled"}[disabled]
		back(w, r, "/console/users", "flash", verb+" "+u.Email+".")
	}
}

// auditFilter reads the audit page's filters; dates are whole days.
func auditFilter(r *http.Request, limit int) (enrollment.AuditFilter, string, string) {
	q := r.URL.Query()
	f := enrollment.AuditFilter{Actor: q.Get("actor"), Action: q.Get("action"), TargetID: q.Get("target"), Limit: limit}
	since, until := q.Get("since"), q.Get("until")
	if t, err := time.ParseInLocation("2006-01-02", since, time.Local); err == nil {
		f.Since = t
	}
	if t, err := time.ParseInLocation("2006-01-02", until, time.Local); err == nil {
		f.Until = t.AddDate(0, 0, 1)
	}
	return f, since, until
}

func (c *Console) audit(w http.ResponseWriter, r *http.Request) {
	f, since, until := auditFilter(r, 500)
	events, err := c.o.Audit.ListAudit(r.Context(), f)
	if err != nil {
		c.fail(w, r, me(r), http.StatusInternalServerError, "Error", userMessage(err))
		return
	}
	// The export link carries the same filters, encoded once here: a raw
	// query put into the template's URL context is escaped a second time.
	q := url.Values{}
	for k, v := range map[string]string{"actor": f.Actor, "action": f.Action, "target": f.TargetID, "since": since, "until": until} {
		if v != "" {
			q.Set(k, v)
		}
	}
	c.render(w, r, http.StatusOK, "audit", "Audit log", "audit", map[string]any{"Items": events, "F": f, "Since": since, "Until": until,
		"CSVLink": template.URL("/console/audit.csv?" + q.Encode())})
}

func (c *Console) auditCSV(w http.ResponseWriter, r *http.Request) {
	f, _, _ := auditFilter(r, 10_000)
	events, err := c.o.Audit.ListAudit(r.Context(), f)
	if err != nil {
		http.Error(w, userMessage(err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="vestibule-audit.csv"`)
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"at", "actor", "remote_ip", "action", "target_type", "target_id", "outcome", "detail"})
	for _, e := range events {
		_ = cw.Write([]string{e.At.UTC().Format(time.RFC3339), csvSafe(e.Actor), e.RemoteIP, csvSafe(e.Action), csvSafe(e.TargetType),
			csvSafe(e.TargetID), e.Outcome, csvSafe(e.Detail)})
	}
	cw.Flush()
}

// csvSafe defuses spreadsheet formulas in fields a device or user wrote.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func (c *Console) tokens(w http.ResponseWriter, r *http.Request) {
	c.renderTokens(w, r, "")
}

func (c *Console) renderTokens(w http.ResponseWriter, r *http.Request, secret string) {
	list, err := c.o.Tokens.List(r.Context())
	if err != nil {
		c.fail(w, r, me(r), http.StatusInternalServerError, "Error", userMessage(err))
		return
	}
	c.render(w, r, http.StatusOK, "tokens", "API tokens", "tokens", map[string]any{"Items": list, "Secret": secret})
}

func (c *Console) createToken(w http.ResponseWriter, r *http.Request) {
	role, err := enrollment.ParseTokenRole(r.PostFormValue("role"))
	if err != nil {
		back(w, r, "/console/tokens", "error", userMessage(err))
		return
	}
	_, secret, err := c.o.Tokens.Create(r.Context(), actor(r), r.PostFormValue("name"), role)
	if err != nil {
		back(w, r, "/console/tokens", "error", userMessage(err))
		return
	}
	// Rendered, not redirected: the secret must not travel in a URL.
	c.renderTokens(w, r, secret)
}

func (c *Console) revokeToken(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := c.o.Tokens.Revoke(r.Context(), actor(r), name); err != nil {
		back(w, r, "/console/tokens", "error", userMessage(err))
		return
	}
	back(w, r, "/console/tokens", "flash", "Revoked "+name+".")
}

// deleteStream removes a receiver's stream: a receiver that is gone, or
// whose endpoint fails for good.
func (c *Console) deleteStream(w http.ResponseWriter, r *http.Request) {
	if c.o.Trust == nil {
		c.fail(w, r, me(r), http.StatusNotFound, "Device trust", "Device trust is off on this server.")
		return
	}
	id := r.PathValue("id")
	if !enrollment.ValidID(id) {
		back(w, r, "/console/trust", "error", "No such stream.")
		return
	}
	a := actor(r)
	ev := enrollment.AuditEvent{At: time.Now(), Actor: a.Name, Action: "ssf.stream.delete", TargetType: "ssf_stream", TargetID: id,
		RemoteIP: a.RemoteIP, Outcome: enrollment.OutcomeOK, Detail: "deleted in the console"}
	if err := c.o.Trust.DeleteStream(r.Context(), id, ev); err != nil {
		back(w, r, "/console/trust", "error", userMessage(err))
		return
	}
	back(w, r, "/console/trust", "flash", "Deleted the stream and its undelivered events.")
}

func (c *Console) depStatus(w http.ResponseWriter, r *http.Request) {
	if c.o.DEP == nil {
		c.fail(w, r, me(r), http.StatusNotFound, "Apple Business Manager", "The ABM sync is off on this server (dep.enabled).")
		return
	}
	st, err := c.o.DEP.DEPStatus(r.Context())
	if err != nil {
		c.fail(w, r, me(r), http.StatusInternalServerError, "Error", userMessage(err))
		return
	}
	devices, err := c.o.DEP.ListDEPDevices(r.Context(), 1000)
	if err != nil {
		c.fail(w, r, me(r), http.StatusInternalServerError, "Error", userMessage(err))
		return
	}
	c.render(w, r, http.StatusOK, "dep_status", "Apple Business Manager", "dep", map[string]any{"Server": st, "Devices": devices})
}
