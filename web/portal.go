package web

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/enrollment"
)

// IdP signs people in through the company's identity provider.
type IdP interface {
	Begin(ctx context.Context, next string) (authURL, state string, err error)
	Finish(ctx context.Context, state, cookieState, code, ip string) (enrollment.User, string, error)
}

// PortalService is what the portal needs beyond the console's services.
type PortalService interface {
	ReserveForSelfAs(ctx context.Context, actor enrollment.Actor, u enrollment.User, perHour int, identity string) (enrollment.Reservation, enrollment.Secrets, error)
	ReserveForDEP(ctx context.Context, actor enrollment.Actor, u enrollment.User, perHour int, serial, udid string) (enrollment.Reservation, enrollment.Secrets, error)
	RevokeOwn(ctx context.Context, actor enrollment.Actor, userID, id string) error
}

// OwnerActions are what a device's owner may do about it.
type OwnerActions interface {
	NotMe(ctx context.Context, actor enrollment.Actor, userID, id string) (enrollment.Enrollment, error)
}

const stateCookie = "vestibule_oidc_state"

// PortalOptions are the portal's dependencies.
type PortalOptions struct {
	Sessions SessionService
	// IdP is nil when no identity provider is configured.
	IdP          IdP
	Portal       PortalService
	Owner        OwnerActions
	Enrollments  EnrollmentService
	Reservations ReservationService
	Profiles     ProfileMaker
	// ReservationsPerHour limits the profiles one person downloads.
	ReservationsPerHour int
	OrgName             string
	// SecureCookies marks cookies Secure: true whenever the public URL is
	// https.
	SecureCookies bool
	Logger        *slog.Logger
	Now           func() time.Time
}

// Portal is where people sign in with the company IdP, download a profile
// made for their device, see their devices and say "this wasn't me"; it
// also answers Setup Assistant's DEP enrollment.
type Portal struct {
	*pages
	o PortalOptions
}

// NewPortal checks the portal's dependencies and parses its pages.
func NewPortal(o PortalOptions) (*Portal, error) {
	if o.Sessions == nil || o.Portal == nil || o.Owner == nil || o.Enrollments == nil || o.Reservations == nil || o.Profiles == nil {
		return nil, errors.New("portal: a dependency is missing")
	}
	pg, err := newPages(o.OrgName, o.Sessions, nil, false, o.Now, o.Logger)
	if err != nil {
		return nil, err
	}
	return &Portal{pages: pg, o: o}, nil
}

// Routes mounts the portal, the IdP sign-in and the Setup Assistant path,
// behind the same protections as the console.
func (c *Portal) Routes(mux *http.ServeMux) {
	cm := http.NewServeMux()
	cm.HandleFunc("GET /portal", c.portal)
	cm.HandleFunc("GET /auth/login", c.idpLogin)
	cm.HandleFunc("GET /auth/callback", c.idpCallback)
	cm.HandleFunc("POST /portal/enroll", c.need(enrollment.RoleUser, c.portalEnroll))
	cm.HandleFunc("POST /portal/reservations/{id}/revoke", c.need(enrollment.RoleUser, c.portalRevoke))
	cm.HandleFunc("POST /portal/devices/{id}/not-me", c.need(enrollment.RoleUser, c.portalNotMe))
	c.depRoutes(cm)
	protect(mux, cm, "/portal", "/portal/", "/auth/", "/dep/")
}

func (c *Portal) portal(w http.ResponseWriter, r *http.Request) {
	data := map[string]any{"OIDC": c.o.IdP != nil}
	cookie, err := r.Cookie(SessionCookie)
	var u enrollment.User
	if err == nil {
		_, u, err = c.o.Sessions.Check(r.Context(), cookie.Value)
	}
	if err != nil {
		c.renderPortal(w, r, enrollment.User{}, http.StatusOK, data)
		return
	}
	ctx := r.Context()
	devices, err := c.o.Enrollments.List(ctx, enrollment.EnrollmentFilter{UserID: u.ID})
	if err != nil {
		c.fail(w, r, u, http.StatusInternalServerError, "Error", userMessage(err))
		return
	}
	var waiting []enrollment.Enrollment
	for _, e := range devices {
		if e.State == enrollment.StatePending && !e.Suspicious {
			waiting = append(waiting, e)
		}
	}
	open, _ := c.o.Reservations.List(ctx, enrollment.ReservationFilter{UserID: u.ID, State: enrollment.ReservationOpen})
	data["Devices"], data["Waiting"], data["Open"] = devices, waiting, open
	c.renderPortal(w, r, u, http.StatusOK, data)
}

func (c *Portal) renderPortal(w http.ResponseWriter, r *http.Request, u enrollment.User, status int, data map[string]any, page ...string) {
	r = r.WithContext(context.WithValue(r.Context(), userKey{}, u))
	name := "portal"
	if len(page) > 0 {
		name = page[0]
	}
	// The portal has no console navigation: set only what the layout uses.
	c.render(w, r.WithContext(context.WithValue(r.Context(), portalKey{}, true)), status, name, "Enroll a device", "portal", data)
}

type portalKey struct{}

func (c *Portal) idpLogin(w http.ResponseWriter, r *http.Request) {
	if c.o.IdP == nil {
		c.fail(w, r, enrollment.User{}, http.StatusNotFound, "Not configured", "Company sign-in is not configured on this server.")
		return
	}
	authURL, state, err := c.o.IdP.Begin(r.Context(), safePortalNext(r.URL.Query().Get("next")))
	if err != nil {
		c.log.ErrorContext(r.Context(), "begin IdP sign-in", "err", err)
		c.fail(w, r, enrollment.User{}, http.StatusInternalServerError, "Sign-in failed", "Try again.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: stateCookie, Value: state, Path: "/auth/", MaxAge: 600, HttpOnly: true,
		Secure: c.o.SecureCookies, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, authURL, http.StatusFound)
}

// safePortalNext keeps the post-sign-in page on this site.
func safePortalNext(next string) string {
	if next == "" {
		return "/portal"
	}
	return safeNext(next)
}

func (c *Portal) idpCallback(w http.ResponseWriter, r *http.Request) {
	if c.o.IdP == nil {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		c.fail(w, r, enrollment.User{}, http.StatusUnauthorized, "Sign-in failed", "The identity provider said: "+oauthError(e))
		return
	}
	var cookieState string
	if ck, err := r.Cookie(stateCookie); err == nil {
		cookieState = ck.Value
	}
	http.SetCookie(w, &http.Cookie{Name: stateCookie, Value: "", Path: "/auth/", MaxAge: -1, HttpOnly: true, Secure: c.o.SecureCookies})
	u, next, err := c.o.IdP.Finish(r.Context(), q.Get("state"), cookieState, q.Get("code"), clientIP(r))
	if err != nil {
		status, title, msg := http.StatusUnauthorized, "Sign-in failed", "Start again from the portal."
		switch {
		case errors.Is(err, auth.ErrNotAllowed):
			status, title, msg = http.StatusForbidden, "Not allowed to enroll", "Your account is not allowed to enroll devices here. Ask your administrator to add you."
		case errors.Is(err, auth.ErrEmailUnverified):
			status, msg = http.StatusForbidden, "Your identity provider has not verified your e-mail address. Verify it there, then start again."
		case errors.Is(err, auth.ErrStateMismatch), errors.Is(err, auth.ErrLoginExpired):
			msg = err.Error()
		default:
			c.log.WarnContext(r.Context(), "IdP sign-in refused", "err", err)
		}
		c.fail(w, r, enrollment.User{}, status, title, msg)
		return
	}
	id, err := c.o.Sessions.Start(r.Context(), u, "oidc", clientIP(r), r.UserAgent())
	if err != nil {
		c.log.ErrorContext(r.Context(), "start session", "err", err)
		c.fail(w, r, enrollment.User{}, http.StatusInternalServerError, "Sign-in failed", "Try again.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: c.o.SecureCookies, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, safePortalNext(next), http.StatusSeeOther)
}

func portalBack(w http.ResponseWriter, r *http.Request, key, msg string) {
	setFlash(w, key, msg)
	http.Redirect(w, r, "/portal", http.StatusSeeOther)
}

func (c *Portal) portalEnroll(w http.ResponseWriter, r *http.Request) {
	u := me(r)
	res, sec, err := c.o.Portal.ReserveForSelfAs(r.Context(), actor(r), u, c.o.ReservationsPerHour, r.PostFormValue("identity"))
	if err != nil {
		if errors.Is(err, enrollment.ErrRateLimited) {
			w.Header().Set("Retry-After", "3600")
			c.fail(w, r, u, http.StatusTooManyRequests, "Too many profiles", "You downloaded several enrollment profiles in the last hour. Use one of them, wait an hour, or ask your administrator.")
			return
		}
		portalBack(w, r, "error", userMessage(err))
		return
	}
	body, err := c.o.Profiles.MakeProfile(r.Context(), res, sec)
	if err != nil {
		c.log.ErrorContext(r.Context(), "make profile", "err", err)
		portalBack(w, r, "error", "the profile could not be made; try again")
		return
	}
	WriteProfile(w, res.ID, body)
}

func (c *Portal) portalRevoke(w http.ResponseWriter, r *http.Request) {
	if err := c.o.Portal.RevokeOwn(r.Context(), actor(r), me(r).ID, r.PathValue("id")); err != nil {
		portalBack(w, r, "error", userMessage(err))
		return
	}
	portalBack(w, r, "flash", "Cancelled: that profile no longer works.")
}

func (c *Portal) portalNotMe(w http.ResponseWriter, r *http.Request) {
	e, err := c.o.Owner.NotMe(r.Context(), actor(r), me(r).ID, r.PathValue("id"))
	if err != nil {
		portalBack(w, r, "error", userMessage(err))
		return
	}
	msg := "Reported. Your administrators will look at it."
	if e.State == enrollment.StateDenied {
		msg = "Reported and refused: the device gets nothing. Your administrators will look at it."
	}
	portalBack(w, r, "flash", msg)
}

// oauthError names an error the IdP sent back by its code, and only when it
// is one RFC 6749 or OpenID Connect defines: the callback's URL is anyone's
// to write, and its words must not reach the page.
func oauthError(code string) string {
	switch code {
	case "access_denied", "invalid_request", "unauthorized_client", "unsupported_response_type", "invalid_scope",
		"server_error", "temporarily_unavailable", "interaction_required", "login_required", "account_selection_required",
		"consent_required", "invalid_request_uri", "invalid_request_object", "request_not_supported":
		return code
	}
	return "an error it did not name"
}
