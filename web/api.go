package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// ReservationService is what the API needs from reservations.
type ReservationService interface {
	ReserveAs(ctx context.Context, actor enrollment.Actor, email, identity string) (enrollment.Reservation, enrollment.Secrets, error)
	DownloadAs(ctx context.Context, actor enrollment.Actor, id, identity string) (enrollment.Reservation, enrollment.Secrets, error)
	Revoke(ctx context.Context, actor enrollment.Actor, id string) error
	Get(ctx context.Context, id string) (enrollment.Reservation, error)
	List(ctx context.Context, f enrollment.ReservationFilter) ([]enrollment.Reservation, error)
	UserByEmail(ctx context.Context, email string) (enrollment.User, error)
}

// ProfileMaker turns a reservation and its secrets into a signed
// enrollment profile.
type ProfileMaker interface {
	MakeProfile(ctx context.Context, r enrollment.Reservation, s enrollment.Secrets) ([]byte, error)
}

// ProfileContentType is what Apple devices and browsers expect of a
// .mobileconfig download.
const ProfileContentType = "application/x-apple-aspen-config"

// API serves /api/v1.
type API struct {
	reservations ReservationService
	enrollments  EnrollmentService
	commands     CommandService
	builder      CommandBuilder
	audit        AuditReader
	waker        Waker
	profiles     ProfileMaker
	tokens       TokenAuthenticator
	publicURL    string
	log          *slog.Logger
}

// APIOptions are the API's dependencies.
type APIOptions struct {
	Reservations ReservationService
	Enrollments  EnrollmentService
	Commands     CommandService
	Builder      CommandBuilder
	Audit        AuditReader
	// Waker is nil when push is off.
	Waker     Waker
	Profiles  ProfileMaker
	Tokens    TokenAuthenticator
	PublicURL string
	Logger    *slog.Logger
}

// NewAPI returns the JSON API.
func NewAPI(o APIOptions) (*API, error) {
	if o.Reservations == nil || o.Enrollments == nil || o.Commands == nil || o.Builder == nil || o.Audit == nil ||
		o.Profiles == nil || o.Tokens == nil || o.PublicURL == "" {
		return nil, errors.New("api: reservations, enrollments, commands, a command builder, audit, profiles, tokens and the public URL are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &API{reservations: o.Reservations, enrollments: o.Enrollments, commands: o.Commands, builder: o.Builder, audit: o.Audit, waker: o.Waker, profiles: o.Profiles, tokens: o.Tokens, publicURL: o.PublicURL, log: o.Logger}, nil
}

// Routes mounts the API on mux.
func (a *API) Routes(mux *http.ServeMux) {
	admin, viewer := enrollment.RoleAdmin, enrollment.RoleViewer
	mux.HandleFunc("POST /api/v1/reservations", a.requireToken(admin, a.createReservation))
	mux.HandleFunc("GET /api/v1/reservations", a.requireToken(viewer, a.listReservations))
	mux.HandleFunc("GET /api/v1/reservations/{id}", a.requireToken(viewer, a.getReservation))
	mux.HandleFunc("GET /api/v1/reservations/{id}/profile", a.requireToken(admin, a.reservationProfile))
	mux.HandleFunc("DELETE /api/v1/reservations/{id}", a.requireToken(admin, a.revokeReservation))
	a.enrollmentRoutes(mux)
	mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeAPIError(w, apiError{http.StatusNotFound, "not_found", "no such API endpoint: " + r.Method + " " + r.URL.Path})
	})
}

// maxJSONBody bounds API request bodies; none needs more.
const maxJSONBody = 64 << 10

// decodeJSON reads a JSON object strictly: the right content type, no
// unknown fields, nothing after it.
func decodeJSON(r *http.Request, v any) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return fmt.Errorf("%w: Content-Type must be application/json", enrollment.ErrInvalid)
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxJSONBody+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("%w: body too large", enrollment.ErrInvalid)
		}
		return fmt.Errorf("%w: body: %v", enrollment.ErrInvalid, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: body: more than one JSON value", enrollment.ErrInvalid)
	}
	return nil
}

type reservationCreated struct {
	ID         string    `json:"id"`
	User       string    `json:"user"`
	Identity   string    `json:"identity"`
	ExpiresAt  time.Time `json:"expires_at"`
	ProfileURL string    `json:"profile_url"`
}

func (a *API) createReservation(w http.ResponseWriter, r *http.Request) {
	var req struct {
		User string `json:"user"`
		// Identity is "scep" (default) or "acme" (Secure Enclave key,
		// iOS 16 and macOS 14 or later).
		Identity string `json:"identity"`
	}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, r, a.log, err)
		return
	}
	if req.User == "" {
		writeError(w, r, a.log, fmt.Errorf("%w: \"user\" (an e-mail address) is required", enrollment.ErrInvalid))
		return
	}
	res, _, err := a.reservations.ReserveAs(r.Context(), actorFrom(r.Context()), req.User, req.Identity)
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	url := a.publicURL + "/api/v1/reservations/" + res.ID + "/profile"
	w.Header().Set("Location", a.publicURL+"/api/v1/reservations/"+res.ID)
	writeJSON(w, http.StatusCreated, reservationCreated{ID: res.ID, User: res.UserEmail, Identity: res.Identity, ExpiresAt: res.ExpiresAt, ProfileURL: url})
}

func (a *API) listReservations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state, err := enrollment.ParseReservationState(q.Get("state"))
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	f := enrollment.ReservationFilter{State: state}
	if email := q.Get("user"); email != "" {
		u, err := a.reservations.UserByEmail(r.Context(), email)
		if errors.Is(err, enrollment.ErrNotFound) {
			writeJSON(w, http.StatusOK, map[string]any{"items": []enrollment.Reservation{}})
			return
		}
		if err != nil {
			writeError(w, r, a.log, err)
			return
		}
		f.UserID = u.ID
	}
	list, err := a.reservations.List(r.Context(), f)
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	if list == nil {
		list = []enrollment.Reservation{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": list})
}

func (a *API) getReservation(w http.ResponseWriter, r *http.Request) {
	res, err := a.reservations.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (a *API) reservationProfile(w http.ResponseWriter, r *http.Request) {
	res, sec, err := a.reservations.DownloadAs(r.Context(), actorFrom(r.Context()), r.PathValue("id"), r.URL.Query().Get("identity"))
	if err != nil {
		writeError(w, r, a.log, err)
		return
	}
	body, err := a.profiles.MakeProfile(r.Context(), res, sec)
	if err != nil {
		writeError(w, r, a.log, fmt.Errorf("make profile: %w", err))
		return
	}
	WriteProfile(w, res.ID, body)
}

// WriteProfile sends a signed profile as a download.
func WriteProfile(w http.ResponseWriter, reservationID string, body []byte) {
	w.Header().Set("Content-Type", ProfileContentType)
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="enroll-%s.mobileconfig"`, reservationID[:8]))
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func (a *API) revokeReservation(w http.ResponseWriter, r *http.Request) {
	if err := a.reservations.Revoke(r.Context(), actorFrom(r.Context()), r.PathValue("id")); err != nil {
		writeError(w, r, a.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
