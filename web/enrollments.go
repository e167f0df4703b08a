package web

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// EnrollmentService is what the API needs from the approval gate.
type EnrollmentService interface {
	List(ctx context.Context, f enrollment.EnrollmentFilter) ([]enrollment.Enrollment, error)
	Get(ctx context.Context, id string) (enrollment.Enrollment, error)
	Resolve(ctx context.Context, device string) (enrollment.Enrollment, error)
	ResolveEach(ctx context.Context, devices []string) ([]enrollment.Enrollment, error)
	Approve(ctx context.Context, actor enrollment.Actor, id, note string) (enrollment.Enrollment, error)
	ApproveAll(ctx context.Context, actor enrollment.Actor, ids []string, note string) ([]enrollment.BulkResult, error)
	Deny(ctx context.Context, actor enrollment.Actor, id, reason string) (enrollment.Enrollment, error)
	Retire(ctx context.Context, actor enrollment.Actor, id, reason string) (enrollment.Enrollment, error)
}

// CommandService queues commands and lists them.
type CommandService interface {
	Enqueue(ctx context.Context, actor enrollment.Actor, e enrollment.Enrollment, cmds ...enrollment.NewCommand) error
	EnqueueFleet(ctx context.Context, actor enrollment.Actor, enrollments []enrollment.Enrollment, cmds []enrollment.NewCommand) error
	List(ctx context.Context, enrollmentID string) ([]enrollment.Command, error)
}

// CommandBuilder turns an API request into a command.
type CommandBuilder interface {
	Build(requestType string, payload []byte) (enrollment.NewCommand, error)
}

// Waker asks for a push to a device.
type Waker interface {
	PushNow(ctx context.Context, enrollmentID string) error
}

// AuditReader lists the audit log.
type AuditReader interface {
	ListAudit(ctx context.Context, f enrollment.AuditFilter) ([]enrollment.AuditEvent, error)
}

func (a *API) enrollmentRoutes(mux *http.ServeMux) {
	viewer, approver := enrollment.RoleViewer, enrollment.RoleApprover
	mux.HandleFunc("GET /api/v1/enrollments", a.requireToken(viewer, a.listEnrollments))
	mux.HandleFunc("GET /api/v1/enrollments/{id}", a.requireToken(viewer, a.getEnrollment))
	mux.HandleFunc("POST /api/v1/enrollments/{id}/approve", a.requireToken(approver, a.approve))
	mux.HandleFunc("POST /api/v1/enrollments/{id}/deny", a.requireToken(approver, a.deny))
	mux.HandleFunc("POST /api/v1/enrollments/{id}/retire", a.requireToken(approver, a.retire))
	mux.HandleFunc("GET /api/v1/devices/{id}/commands", a.requireToken(viewer, a.listCommands))
	mux.HandleFunc("POST /api/v1/devices/{id}/commands", a.requireToken(approver, a.enqueueCommand))
	mux.HandleFunc("POST /api/v1/commands", a.requireToken(approver, a.enqueueFleetCommand))
	mux.HandleFunc("GET /api/v1/audit", a.requireToken(viewer, a.listAudit))
	mux.HandleFunc("POST /api/v1/devices/{id}/push", a.requireToken(approver, a.pushDevice))
}

func (a *API) listEnrollments(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state, err := enrollment.ParseState(q.Get("state"))
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	list, err := a.enrollments.List(r.Context(), enrollment.EnrollmentFilter{State: state, UDID: q.Get("udid"), Serial: q.Get("serial"), Limit: limit})
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	out := make([]enrollmentView, len(list))
	for i, e := range list {
		out[i] = view(e)
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": out})
}

// enrollmentView is an enrollment as the API shows it.
type enrollmentView struct {
	enrollment.Enrollment
	DeviceID string   `json:"device_id"`
	Flags    []string `json:"flags"`
	HasPush  bool     `json:"has_push_token"`
}

func view(e enrollment.Enrollment) enrollmentView {
	flags := e.Flags()
	if flags == nil {
		flags = []string{}
	}
	return enrollmentView{Enrollment: e, DeviceID: e.ID, Flags: flags, HasPush: e.PushToken != ""}
}

func parseLimit(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 10_000 {
		return 0, fmt.Errorf("%w: limit must be 1 to 10000", enrollment.ErrInvalid)
	}
	return n, nil
}

func (a *API) getEnrollment(w http.ResponseWriter, r *http.Request) {
	e, err := a.enrollments.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	writeJSON(w, http.StatusOK, view(e))
}

func (a *API) approve(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Note string `json:"note"`
	}
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, r, a.log, err)
			return
		}
	}
	e, err := a.enrollments.Approve(r.Context(), actorFrom(r.Context()), r.PathValue("id"), req.Note)
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	writeJSON(w, http.StatusOK, view(e))
}

func (a *API) deny(w http.ResponseWriter, r *http.Request) {
	a.withReason(w, r, a.enrollments.Deny)
}

// retire ends another user's enrollment of a device that changed hands: an
// explicit decision, never a side effect of approving the new enrollment.
func (a *API) retire(w http.ResponseWriter, r *http.Request) {
	a.withReason(w, r, a.enrollments.Retire)
}

// withReason runs a decision that takes a required reason from the body.
func (a *API) withReason(w http.ResponseWriter, r *http.Request,
	decide func(context.Context, enrollment.Actor, string, string) (enrollment.Enrollment, error)) {
	var req struct {
		Reason string `json:"reason"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, r, a.log, err)
		return
	}
	e, err := decide(r.Context(), actorFrom(r.Context()), r.PathValue("id"), req.Reason)
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	writeJSON(w, http.StatusOK, view(e))
}

func (a *API) device(r *http.Request) (enrollment.Enrollment, error) {
	return a.enrollments.Resolve(r.Context(), r.PathValue("id"))
}

func (a *API) listCommands(w http.ResponseWriter, r *http.Request) {
	e, err := a.device(r)
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	cmds, err := a.commands.List(r.Context(), e.ID)
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	if cmds == nil {
		cmds = []enrollment.Command{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": cmds})
}

func (a *API) enqueueCommand(w http.ResponseWriter, r *http.Request) {
	var req struct {
		RequestType string `json:"request_type"`
		Payload     []byte `json:"payload"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, r, a.log, err)
		return
	}
	// Approvers decide who gets in and may ask a device questions; what is
	// installed on devices is an admin's to decide.
	if need := commandRole(req.RequestType); roleRank[roleFrom(r.Context())] < roleRank[need] {
		writeAPIError(w, apiError{http.StatusForbidden, "forbidden", req.RequestType + " needs an admin token: approvers may queue DeviceInformation and ProfileList"})
		return
	}
	e, err := a.device(r)
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	cmd, err := a.builder.Build(req.RequestType, req.Payload)
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	if err := a.commands.Enqueue(r.Context(), actorFrom(r.Context()), e, cmd); err != nil {
		writeError(w, r, a.log, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"command_uuid": cmd.UUID, "request_type": cmd.RequestType, "device_id": e.ID})
}

// maxDeviceName bounds a device named in a request: enrollment IDs and
// UDIDs are at most 40 characters.
const maxDeviceName = 128

// enqueueFleetCommand queues one command for each named device (an
// enrollment ID or UDID, as in /devices/{id}), up to
// enrollment.MaxFleetCommand in one request: every device gets its own
// command UUID, approved ones a push, and a device that cannot take a
// command refuses the whole request.
func (a *API) enqueueFleetCommand(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Devices     []string `json:"devices"`
		RequestType string   `json:"request_type"`
		Payload     []byte   `json:"payload"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, r, a.log, err)
		return
	}
	if len(req.Devices) == 0 || len(req.Devices) > enrollment.MaxFleetCommand {
		writeError(w, r, a.log, fmt.Errorf("%w: devices must name 1 to %d devices", enrollment.ErrInvalid, enrollment.MaxFleetCommand))
		return
	}
	if need := commandRole(req.RequestType); roleRank[roleFrom(r.Context())] < roleRank[need] {
		writeAPIError(w, apiError{http.StatusForbidden, "forbidden", req.RequestType + " needs an admin token: approvers may queue DeviceInformation and ProfileList"})
		return
	}
	for i, device := range req.Devices {
		// No enrollment ID or UDID is this long; the error would echo it.
		if len(device) > maxDeviceName {
			writeError(w, r, a.log, fmt.Errorf("%w: device %d is longer than %d characters", enrollment.ErrInvalid, i, maxDeviceName))
			return
		}
	}
	// The command is checked before any device is looked up.
	cmds := make([]enrollment.NewCommand, len(req.Devices))
	for i := range cmds {
		var err error
		if cmds[i], err = a.builder.Build(req.RequestType, req.Payload); err != nil {
			writeError(w, r, a.log, err)
			return
		}
	}
	enrollments, err := a.enrollments.ResolveEach(r.Context(), req.Devices)
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	if err := a.commands.EnqueueFleet(r.Context(), actorFrom(r.Context()), enrollments, cmds); err != nil {
		writeError(w, r, a.log, err)
		return
	}
	type queued struct {
		DeviceID    string `json:"device_id"`
		CommandUUID string `json:"command_uuid"`
		RequestType string `json:"request_type"`
	}
	out := make([]queued, len(cmds))
	for i, cmd := range cmds {
		out[i] = queued{enrollments[i].ID, cmd.UUID, cmd.RequestType}
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"items": out})
}

// commandRole is the least role that may queue a command of this type.
func commandRole(requestType string) enrollment.Role {
	if requestType == "InstallProfile" {
		return enrollment.RoleAdmin
	}
	return enrollment.RoleApprover
}

func (a *API) listAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := enrollment.AuditFilter{Actor: q.Get("actor"), Action: q.Get("action"), TargetType: q.Get("target_type"), TargetID: q.Get("target_id")}
	var err error
	if f.Limit, err = parseLimit(q.Get("limit")); err != nil {
		writeError(w, r, a.log, err)
		return
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeError(w, r, a.log, fmt.Errorf("%w: %s must be RFC 3339, e.g. 2026-11-23T10:00:00Z", enrollment.ErrInvalid, p.name))
				return
			}
			*p.dst = t
		}
	}
	events, err := a.audit.ListAudit(r.Context(), f)
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	if events == nil {
		events = []enrollment.AuditEvent{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": events})
}

func (a *API) pushDevice(w http.ResponseWriter, r *http.Request) {
	if a.waker == nil {
		writeAPIError(w, apiError{http.StatusConflict, "push_off", "push is not configured on this server (push.cert_file)"})
		return
	}
	e, err := a.device(r)
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	if err := a.waker.PushNow(r.Context(), e.ID); err != nil {
		writeError(w, r, a.log, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"device_id": e.ID, "status": "push queued"})
}
