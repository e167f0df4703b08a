package checkin

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/clientaddr"
	"github.com/vestibule-mdm/vestibule/mdm"
)

// Auditor records refused device requests.
type Auditor interface {
	AppendAudit(ctx context.Context, ev enrollment.AuditEvent) error
}

// Options are the check-in endpoints' dependencies.
type Options struct {
	Gate         Gate
	Queue        Queue
	Certs        CertificateStore
	Audit        Auditor
	CA           *x509.Certificate
	TrustedProxy TrustedProxy
	Logger       *slog.Logger
	Now          func() time.Time
}

// Validate names what is missing.
func (o Options) Validate() error {
	switch {
	case o.Gate == nil:
		return errors.New("checkin: Gate is required")
	case o.Queue == nil:
		return errors.New("checkin: Queue is required")
	case o.Certs == nil:
		return errors.New("checkin: Certs is required")
	case o.Audit == nil:
		return errors.New("checkin: Audit is required")
	case o.CA == nil:
		return errors.New("checkin: CA is required")
	}
	return nil
}

// Handler is the HTTP side of the device endpoints: it reads the request
// (content type, size, body), has the Identifier establish the sender,
// decodes the plist, hands the message to the Service, and turns the
// outcome into a status code, a log line and, for refusals, an audit row.
type Handler struct {
	svc   *Service
	id    *Identifier
	audit Auditor
	log   *slog.Logger
	now   func() time.Time
}

// New returns the device endpoints over their dependencies.
func New(o Options) (*Handler, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Handler{svc: NewService(o.Gate, o.Queue, o.Logger), id: NewIdentifier(o.CA, o.Certs, o.TrustedProxy, o.Now),
		audit: o.Audit, log: o.Logger, now: o.Now}, nil
}

// The device endpoints' patterns, as the mux reports them on a request.
const (
	RouteCheckin = "PUT /mdm/checkin"
	RouteConnect = "PUT /mdm/connect"
)

// Routes mounts the device endpoints.
func (h *Handler) Routes(mux *http.ServeMux) {
	mux.HandleFunc(RouteCheckin, h.handleCheckin)
	mux.HandleFunc(RouteConnect, h.handleConnect)
}

// CheckinContentType is what devices send check-in messages as.
const CheckinContentType = "application/x-apple-aspen-mdm-checkin"

// readBody reads at most max bytes; more is an error, not a truncation.
func readBody(r *http.Request, max int64) ([]byte, *deviceError) {
	if r.ContentLength > max {
		return nil, fail(http.StatusRequestEntityTooLarge, "body of %d bytes is over the %d limit", r.ContentLength, max)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, fail(http.StatusRequestEntityTooLarge, "body over the server limit")
		}
		return nil, fail(http.StatusBadRequest, "read body: %v", err)
	}
	if int64(len(b)) > max {
		return nil, fail(http.StatusRequestEntityTooLarge, "body over the %d limit", max)
	}
	return b, nil
}

// logReason is a refusal's reason for the log, cut short: a decoder's
// error can quote a whole value the device sent, megabytes of it.
func logReason(err error) string {
	const most = 512
	s := err.Error()
	if len(s) > most {
		s = strings.ToValidUTF8(s[:most], "") + "… (cut)"
	}
	return s
}

// refuse logs and audits a refused device request and answers tersely.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, action string, e *deviceError) {
	ip := remoteIP(r)
	if e.status >= 500 {
		h.log.ErrorContext(r.Context(), "device request failed", "action", action, "remote_ip", ip, "err", logReason(e.reason))
	} else {
		h.log.WarnContext(r.Context(), "device request refused", "action", action, "status", e.status, "remote_ip", ip, "reason", logReason(e.reason))
		// Authenticate refusals are audited by the gate with their reason.
		if !errors.Is(e.reason, enrollment.ErrForbidden) {
			ev := enrollment.AuditEvent{At: h.now(), Actor: "device:unknown", Action: action, TargetType: "device",
				RemoteIP: ip, Outcome: enrollment.OutcomeRefused, Detail: e.reason.Error()}
			if err := h.audit.AppendAudit(r.Context(), ev); err != nil {
				h.log.ErrorContext(r.Context(), "audit of a refused device request failed", "err", err)
			}
		}
	}
	if e.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "30")
	}
	http.Error(w, http.StatusText(e.status), e.status)
}

func (h *Handler) handleCheckin(w http.ResponseWriter, r *http.Request) {
	if derr := h.checkin(r); derr != nil {
		h.refuse(w, r, "device.checkin", derr)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (h *Handler) checkin(r *http.Request) *deviceError {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != CheckinContentType {
		return fail(http.StatusUnsupportedMediaType, "check-in Content-Type %.64q", r.Header.Get("Content-Type"))
	}
	body, derr := readBody(r, mdm.MaxCheckinBody)
	if derr != nil {
		return derr
	}
	id, err := h.id.Identify(r.Context(), r, body)
	if err != nil {
		return fail(http.StatusUnauthorized, "%w", err)
	}
	msg, err := mdm.DecodeCheckin(body)
	if err != nil {
		return fail(http.StatusBadRequest, "%w", err)
	}
	return h.svc.Checkin(r.Context(), id, msg, r.URL.Query().Get("t"), remoteIP(r))
}

func (h *Handler) handleConnect(w http.ResponseWriter, r *http.Request) {
	next, derr := h.connect(r)
	if derr != nil {
		h.refuse(w, r, "device.connect", derr)
		return
	}
	if next == nil {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "application/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(next)
}

func (h *Handler) connect(r *http.Request) ([]byte, *deviceError) {
	body, derr := readBody(r, mdm.MaxReportBody)
	if derr != nil {
		return nil, derr
	}
	id, err := h.id.Identify(r.Context(), r, body)
	if err != nil {
		return nil, fail(http.StatusUnauthorized, "%w", err)
	}
	report, err := mdm.DecodeCommandReport(body)
	if err != nil {
		return nil, fail(http.StatusBadRequest, "%w", err)
	}
	return h.svc.Connect(r.Context(), id, report, remoteIP(r))
}

// remoteIP is the client's address, through trusted proxies.
func remoteIP(r *http.Request) string { return clientaddr.Of(r) }
