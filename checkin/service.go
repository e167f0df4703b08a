package checkin

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
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
	Seen(ctx context.Context, id string, lastSeen *time.Time) error
	Attest(ctx context.Context, e enrollment.Enrollment, a enrollment.AttestationAnswer) (enrollment.Enrollment, error)
}

// Queue hands out commands to approved devices.
type Queue interface {
	Next(ctx context.Context, id string, state enrollment.State, r enrollment.Report) (enrollment.Command, error)
}

// Service dispatches the messages of identified devices: a check-in
// message to the approval gate, a command report to the queue. It knows
// no HTTP beyond the status each refusal maps to.
type Service struct {
	gate  Gate
	queue Queue
	log   *slog.Logger
}

// NewService returns the dispatcher over gate and queue.
func NewService(gate Gate, queue Queue, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{gate: gate, queue: queue, log: log}
}

// deviceError is how a request ends: a status for the device (terse), a
// reason for the log and the audit log (detailed).
type deviceError struct {
	status int
	reason error
}

func (e *deviceError) Error() string { return e.reason.Error() }
func (e *deviceError) Unwrap() error { return e.reason }

func fail(status int, format string, args ...any) *deviceError {
	return &deviceError{status: status, reason: fmt.Errorf(format, args...)}
}

// Checkin handles one decoded check-in message from the device id. token
// is the enrollment token from the check-in URL.
func (s *Service) Checkin(ctx context.Context, id Identity, msg any, token, remoteIP string) *deviceError {
	switch m := msg.(type) {
	case *mdm.Authenticate:
		return s.authenticate(ctx, id, m, token, remoteIP)
	case *mdm.TokenUpdate:
		e, derr := s.enrollmentOf(ctx, id, m.Enrollment, true)
		if derr != nil {
			return derr
		}
		if !m.DeviceChannel() {
			// No user channel: acknowledged so the device moves on.
			return nil
		}
		if err := s.gate.TokenUpdate(ctx, e.ID, enrollment.PushInfo{Token: hex.EncodeToString(m.Token), Magic: m.PushMagic, Topic: m.Topic}); err != nil {
			return fail(http.StatusInternalServerError, "token update: %w", err)
		}
		return nil
	case *mdm.CheckOut:
		e, derr := s.enrollmentOf(ctx, id, m.Enrollment, true)
		if derr != nil {
			return derr
		}
		whole, derr := s.whole(ctx, e)
		if derr != nil {
			return derr
		}
		if err := s.gate.CheckOut(ctx, whole, remoteIP); err != nil {
			return fail(http.StatusInternalServerError, "check out: %w", err)
		}
		return nil
	case *mdm.UserAuthenticate:
		// 410 tells the device this server has no user channel.
		return fail(http.StatusGone, "user channel is not supported")
	default:
		return fail(http.StatusBadRequest, "check-in message %T is not supported", msg)
	}
}

func (s *Service) authenticate(ctx context.Context, id Identity, m *mdm.Authenticate, token, remoteIP string) *deviceError {
	if !m.DeviceChannel() || m.UDID == "" {
		return fail(http.StatusBadRequest, "Authenticate without a device UDID (user enrollment is not supported)")
	}
	claim := enrollment.Claim{Token: token, CertReservationID: id.Record.ReservationID, Identity: id.Record.Attested, RemoteIP: remoteIP,
		Facts: enrollment.DeviceFacts{UDID: m.UDID, Serial: m.SerialNumber, Model: m.Model, ModelName: m.ModelName,
			ProductName: m.ProductName, OSVersion: m.OSVersion, BuildVersion: m.BuildVersion, IMEI: m.IMEI, MEID: m.MEID, DeviceName: m.DeviceName}}
	e, err := s.gate.Authenticate(ctx, claim)
	switch {
	case errors.Is(err, enrollment.ErrSignerUnavailable):
		return fail(http.StatusServiceUnavailable, "%w", err)
	case errors.Is(err, enrollment.ErrForbidden):
		return fail(http.StatusUnauthorized, "%w", err)
	case err != nil:
		return fail(http.StatusInternalServerError, "authenticate: %w", err)
	}
	s.log.InfoContext(ctx, "device authenticated", "enrollment", e.ID, "state", e.State, "re_enrollment", e.ReEnrollment)
	return nil
}

// enrollmentOf finds the enrollment the certificate belongs to and checks
// that the body speaks for the same device. allowPending admits devices
// still waiting for approval.
func (s *Service) enrollmentOf(ctx context.Context, id Identity, who mdm.Enrollment, allowPending bool) (enrollment.CheckinView, *deviceError) {
	var e enrollment.CheckinView
	if id.Record.Enrollment != nil {
		e = *id.Record.Enrollment
	} else {
		whole, derr := s.read(ctx, id.Record.ReservationID, "certificate for reservation %s has no enrollment")
		if derr != nil {
			return e, derr
		}
		e = whole.CheckinView()
	}
	if who.ID() != e.UDID {
		return e, fail(http.StatusUnauthorized, "body speaks for %.64q but the certificate belongs to %q", who.ID(), e.UDID)
	}
	return e, admitted(e.ID, e.State, allowPending)
}

// whole reads all of an enrollment a check-in let in, for the rare paths
// that need more than its state (checking out, the attestation answer;
// both admit a pending device). The read is newer than the one that let
// the device in, so it is judged again.
func (s *Service) whole(ctx context.Context, st enrollment.CheckinView) (enrollment.Enrollment, *deviceError) {
	e, derr := s.read(ctx, st.ID, "enrollment %s is gone")
	if derr != nil {
		return e, derr
	}
	return e, admitted(e.ID, e.State, true)
}

// read is the gate's Get as a device's answer: missing (a format with the
// ID) says why a device whose enrollment is not there is refused.
func (s *Service) read(ctx context.Context, id, missing string) (enrollment.Enrollment, *deviceError) {
	e, err := s.gate.Get(ctx, id)
	if errors.Is(err, enrollment.ErrNotFound) {
		return e, fail(http.StatusUnauthorized, missing, id)
	}
	if err != nil {
		return e, fail(http.StatusInternalServerError, "enrollment: %w", err)
	}
	return e, nil
}

// admitted refuses an enrollment that is not let in: only approved ones,
// and pending ones when allowPending.
func admitted(id string, state enrollment.State, allowPending bool) *deviceError {
	if state == enrollment.StateApproved || state == enrollment.StatePending && allowPending {
		return nil
	}
	return fail(http.StatusUnauthorized, "enrollment %s is %s", id, state)
}

// Connect handles one command report and returns the next command's body,
// or nil when there is none for the device. A pending device gets only the
// attestation question, which asks and installs nothing; its answer is
// handed to the gate to verify.
func (s *Service) Connect(ctx context.Context, id Identity, report *mdm.CommandReport, remoteIP string) ([]byte, *deviceError) {
	e, derr := s.enrollmentOf(ctx, id, report.Enrollment, true)
	if derr != nil {
		return nil, derr
	}
	if !report.DeviceChannel() {
		// The device's commands are not for one of its users, and a
		// user's report is not the device's result. This server refuses
		// UserAuthenticate, so no user channel should be open; one that
		// connects anyway gets nothing.
		return nil, nil
	}
	if err := s.gate.Seen(ctx, e.ID, e.LastSeenAt); err != nil {
		s.log.WarnContext(ctx, "record check-in time", "err", err)
	}
	if derr := s.attestation(ctx, e, report, remoteIP); derr != nil {
		return nil, derr
	}
	if report.Status == mdm.StatusIdle && id.Record.NoCommands && id.Record.Enrollment != nil {
		// Most check-ins: the read that identified the device found
		// nothing queued, sent or deferred, so there is nothing to hand
		// out and no second read to make. A command queued since is
		// pushed, and the device comes back for it.
		return nil, nil
	}
	cmd, err := s.queue.Next(ctx, e.ID, e.State, enrollment.Report{Status: report.Status, CommandUUID: report.CommandUUID, Raw: report.Raw})
	switch {
	case errors.Is(err, enrollment.ErrNotFound):
		return nil, nil
	case errors.Is(err, enrollment.ErrInvalid):
		return nil, fail(http.StatusBadRequest, "%w", err)
	case err != nil:
		return nil, fail(http.StatusInternalServerError, "next command: %w", err)
	}
	return cmd.Body, nil
}

// attestation hands the answer to the attestation question to the gate:
// only a report for the question's own command, while it is open.
func (s *Service) attestation(ctx context.Context, st enrollment.CheckinView, report *mdm.CommandReport, remoteIP string) *deviceError {
	if st.AttestStatus != enrollment.AttestAsked || report.CommandUUID != st.AttestCommand ||
		report.Status == mdm.StatusIdle || report.Status == mdm.StatusNotNow {
		return nil
	}
	e, derr := s.whole(ctx, st)
	if derr != nil {
		return derr
	}
	chain, answered, err := mdm.DecodeAttestation(report.Raw)
	if err != nil {
		// Malformed attestation is an answer that does not verify.
		chain, answered = nil, true
	}
	if _, err := s.gate.Attest(ctx, e, enrollment.AttestationAnswer{Status: report.Status, Answered: answered, Chain: chain, RemoteIP: remoteIP,
		CommandUUID: report.CommandUUID}); err != nil {
		return fail(http.StatusInternalServerError, "attestation: %w", err)
	}
	return nil
}
