package checkin

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/mdm"
)

// Gate is the approval gate the service consults.
type Gate interface {
	Authenticate(ctx context.Context, c enrollment.Claim) (enrollment.Enrollment, error)
	Get(ctx context.Context, id string) (enrollment.Enrollment, error)
	TokenUpdate(ctx context.Context, id string, p enrollment.PushInfo) error
	CheckOut(ctx context.Context, e enrollment.Enrollment, remoteIP string) error
	Seen(ctx context.Context, e enrollment.Enrollment) error
}

// Queue hands out commands to approved devices.
type Queue interface {
	Next(ctx context.Context, e enrollment.Enrollment, r enrollment.Report) (enrollment.Command, error)
}

// Auditor records refused device requests.
type Auditor interface {
	AppendAudit(ctx context.Context, ev enrollment.AuditEvent) error
}

// Options are the service's dependencies.
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

// Service answers devices on the check-in and command endpoints.
type Service struct {
	gate  Gate
	queue Queue
	audit Auditor
	id    identifier
	log   *slog.Logger
	now   func() time.Time
}

// New returns the check-in service.
func New(o Options) (*Service, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	roots := x509.NewCertPool()
	roots.AddCert(o.CA)
	return &Service{gate: o.Gate, queue: o.Queue, audit: o.Audit, log: o.Logger, now: o.Now,
		id: identifier{roots: roots, certs: o.Certs, proxy: o.TrustedProxy, now: o.Now}}, nil
}

// Routes mounts the device endpoints.
func (s *Service) Routes(mux *http.ServeMux) {
	mux.HandleFunc("PUT /mdm/checkin", s.handleCheckin)
	mux.HandleFunc("PUT /mdm/connect", s.handleConnect)
}

// CheckinContentType is what devices send check-in messages as.
const CheckinContentType = "application/x-apple-aspen-mdm-checkin"

// deviceError is how a request ends: a status for the device (terse), a
// reason for the log and the audit log (detailed).
type deviceError struct {
	status int
	reason error
}

func (e *deviceError) Error() string { return e.reason.Error() }

func fail(status int, format string, args ...any) *deviceError {
	return &deviceError{status: status, reason: fmt.Errorf(format, args...)}
}

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

// refuse logs and audits a refused device request and answers tersely.
func (s *Service) refuse(w http.ResponseWriter, r *http.Request, action string, e *deviceError) {
	ip := remoteIP(r)
	if e.status >= 500 {
		s.log.ErrorContext(r.Context(), "device request failed", "action", action, "remote_ip", ip, "err", e.reason)
	} else {
		s.log.WarnContext(r.Context(), "device request refused", "action", action, "status", e.status, "remote_ip", ip, "reason", e.reason)
		// Authenticate refusals are audited by the gate with their reason.
		if !errors.Is(e.reason, enrollment.ErrForbidden) {
			ev := enrollment.AuditEvent{At: s.now(), Actor: "device:unknown", Action: action, TargetType: "device",
				RemoteIP: ip, Outcome: enrollment.OutcomeRefused, Detail: e.reason.Error()}
			if err := s.audit.AppendAudit(r.Context(), ev); err != nil {
				s.log.ErrorContext(r.Context(), "audit of a refused device request failed", "err", err)
			}
		}
	}
	if e.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "30")
	}
	http.Error(w, http.StatusText(e.status), e.status)
}

func (s *Service) handleCheckin(w http.ResponseWriter, r *http.Request) {
	if derr := s.checkin(w, r); derr != nil {
		s.refuse(w, r, "device.checkin", derr)
	}
}

func (s *Service) checkin(w http.ResponseWriter, r *http.Request) *deviceError {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != CheckinContentType {
		return fail(http.StatusUnsupportedMediaType, "check-in Content-Type %.64q", r.Header.Get("Content-Type"))
	}
	body, derr := readBody(r, mdm.MaxCheckinBody)
	if derr != nil {
		return derr
	}
	id, err := s.id.identify(r.Context(), r, body)
	if err != nil {
		return fail(http.StatusUnauthorized, "%w", err)
	}
	msg, err := mdm.DecodeCheckin(body)
	if err != nil {
		return fail(http.StatusBadRequest, "%w", err)
	}
	ctx := r.Context()
	switch m := msg.(type) {
	case *mdm.Authenticate:
		return s.authenticate(w, r, id, m)
	case *mdm.TokenUpdate:
		e, derr := s.enrollmentOf(ctx, id, m.Enrollment, true)
		if derr != nil {
			return derr
		}
		if !m.DeviceChannel() {
			// No user channel: acknowledge so the device moves on.
			w.WriteHeader(http.StatusOK)
			return nil
		}
		if err := s.gate.TokenUpdate(ctx, e.ID, enrollment.PushInfo{Token: hex.EncodeToString(m.Token), Magic: m.PushMagic, Topic: m.Topic}); err != nil {
			return fail(http.StatusInternalServerError, "token update: %w", err)
		}
		w.WriteHeader(http.StatusOK)
		return nil
	case *mdm.CheckOut:
		e, derr := s.enrollmentOf(ctx, id, m.Enrollment, true)
		if derr != nil {
			return derr
		}
		if err := s.gate.CheckOut(ctx, e, remoteIP(r)); err != nil {
			return fail(http.StatusInternalServerError, "check out: %w", err)
		}
		w.WriteHeader(http.StatusOK)
		return nil
	case *mdm.UserAuthenticate:
		// 410 tells the device this server has no user channel.
		return fail(http.StatusGone, "user channel is not supported")
	default:
		return fail(http.StatusBadRequest, "check-in message %T is not supported", msg)
	}
}

func (s *Service) authenticate(w http.ResponseWriter, r *http.Request, id identity, m *mdm.Authenticate) *deviceError {
	if !m.DeviceChannel() || m.UDID == "" {
		return fail(http.StatusBadRequest, "Authenticate without a device UDID (user enrollment is not supported)")
	}
	claim := enrollment.Claim{Token: r.URL.Query().Get("t"), CertReservationID: id.record.ReservationID, RemoteIP: remoteIP(r),
		Facts: enrollment.DeviceFacts{UDID: m.UDID, Serial: m.SerialNumber, Model: m.Model, ModelName: m.ModelName,
			ProductName: m.ProductName, OSVersion: m.OSVersion, BuildVersion: m.BuildVersion, IMEI: m.IMEI, MEID: m.MEID, DeviceName: m.DeviceName}}
	e, err := s.gate.Authenticate(r.Context(), claim)
	switch {
	case errors.Is(err, enrollment.ErrSignerUnavailable):
		return fail(http.StatusServiceUnavailable, "%w", err)
	case errors.Is(err, enrollment.ErrForbidden):
		return fail(http.StatusUnauthorized, "%w", err)
	case err != nil:
		return fail(http.StatusInternalServerError, "authenticate: %w", err)
	}
	s.log.InfoContext(r.Context(), "device authenticated", "enrollment", e.ID, "state", e.State, "re_enrollment", e.ReEnrollment)
	w.WriteHeader(http.StatusOK)
	return nil
}

// enrollmentOf finds the enrollment the certificate belongs to and checks
// that the body speaks for the same device. allowPending admits devices
// still waiting for approval.
func (s *Service) enrollmentOf(ctx context.Context, id identity, who mdm.Enrollment, allowPending bool) (enrollment.Enrollment, *deviceError) {
	e, err := s.gate.Get(ctx, id.record.ReservationID)
	if errors.Is(err, enrollment.ErrNotFound) {
		return e, fail(http.StatusUnauthorized, "certificate for reservation %s has no enrollment", id.record.ReservationID)
	}
	if err != nil {
		return e, fail(http.StatusInternalServerError, "enrollment: %w", err)
	}
	if who.ID() != e.Facts.UDID {
		return e, fail(http.StatusUnauthorized, "body speaks for %q but the certificate belongs to %q", who.ID(), e.Facts.UDID)
	}
	switch {
	case e.State == enrollment.StateApproved, e.State == enrollment.StatePending && allowPending:
		return e, nil
	default:
		return e, fail(http.StatusUnauthorized, "enrollment %s is %s", e.ID, e.State)
	}
}

func (s *Service) handleConnect(w http.ResponseWriter, r *http.Request) {
	if derr := s.connect(w, r); derr != nil {
		s.refuse(w, r, "device.connect", derr)
	}
}

func (s *Service) connect(w http.ResponseWriter, r *http.Request) *deviceError {
	body, derr := readBody(r, mdm.MaxReportBody)
	if derr != nil {
		return derr
	}
	id, err := s.id.identify(r.Context(), r, body)
	if err != nil {
		return fail(http.StatusUnauthorized, "%w", err)
	}
	report, err := mdm.DecodeCommandReport(body)
	if err != nil {
		return fail(http.StatusBadRequest, "%w", err)
	}
	ctx := r.Context()
	e, derr := s.enrollmentOf(ctx, id, report.Enrollment, true)
	if derr != nil {
		return derr
	}
	if err := s.gate.Seen(ctx, e); err != nil {
		s.log.WarnContext(ctx, "record check-in time", "err", err)
	}
	if e.State == enrollment.StatePending {
		// Waiting for approval: an empty answer and the device idles.
		w.WriteHeader(http.StatusOK)
		return nil
	}
	cmd, err := s.queue.Next(ctx, e, enrollment.Report{Status: report.Status, CommandUUID: report.CommandUUID, Raw: report.Raw})
	switch {
	case errors.Is(err, enrollment.ErrNotFound):
		w.WriteHeader(http.StatusOK)
		return nil
	case errors.Is(err, enrollment.ErrInvalid):
		return fail(http.StatusBadRequest, "%w", err)
	case err != nil:
		return fail(http.StatusInternalServerError, "next command: %w", err)
	}
	w.Header().Set("Content-Type", "application/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(cmd.Body)
	return nil
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
