package web

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/depsync"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/scep"
	"github.com/vestibule-mdm/vestibule/trust/ssf"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// SessionCookie names the console's session cookie.
const SessionCookie = "vestibule_session"

// SessionService starts, checks and ends sign-in sessions.
type SessionService interface {
	Start(ctx context.Context, u enrollment.User, method, ip, userAgent string) (string, error)
	Check(ctx context.Context, id string) (auth.Session, enrollment.User, error)
	End(ctx context.Context, id string) error
}

// PasswordChecker signs local accounts in.
type PasswordChecker interface {
	Login(ctx context.Context, email, password, ip string) (enrollment.User, error)
}

// UserService manages users.
type UserService interface {
	Add(ctx context.Context, actor enrollment.Actor, in enrollment.UserInput) (enrollment.User, error)
	Import(ctx context.Context, actor enrollment.Actor, r io.Reader) (int, int, error)
	SetDisabled(ctx context.Context, actor enrollment.Actor, id string, disabled bool) (enrollment.User, error)
	List(ctx context.Context) ([]enrollment.User, error)
}

// TokenService manages API tokens.
type TokenService interface {
	Create(ctx context.Context, actor enrollment.Actor, name string, role enrollment.Role) (auth.APIToken, string, error)
	List(ctx context.Context) ([]auth.APIToken, error)
	Revoke(ctx context.Context, actor enrollment.Actor, name string) error
}

// CertificateLister lists a device's certificates.
type CertificateLister interface {
	ListCertificates(ctx context.Context, reservationID string) ([]scep.Certificate, error)
}

// TrustFacts is device trust as the console shows it.
type TrustFacts interface {
	TrustCertificates(ctx context.Context, enrollmentID string) ([]scep.Certificate, error)
	LastEvents(ctx context.Context, enrollmentID string) ([]ssf.LastEvent, error)
	Streams(ctx context.Context, tokenID string) ([]ssf.Stream, error)
	// DeleteStream removes a stream with its undelivered events.
	DeleteStream(ctx context.Context, id string, ev enrollment.AuditEvent) error
	// TrustSummary names the trust CA and where relying parties find it.
	TrustSummary() TrustSummary
}

// TrustSummary is what an admin needs to set up a relying party.
type TrustSummary struct {
	CASubject   string
	CASHA256    string
	CAExpires   time.Time
	CAURL       string
	CRLURL      string
	OCSPURL     string
	SSFMetadata string
}

// DEPFacts looks a serial up in the Apple Business Manager inventory and
// reports the sync's state.
type DEPFacts interface {
	DEPFacts(ctx context.Context, serial string) (depsync.Device, bool, error)
	DEPStatus(ctx context.Context) (DEPStatus, error)
	ListDEPDevices(ctx context.Context, limit int) ([]depsync.Device, error)
}

// DEPStatus is the state of the ABM sync.
type DEPStatus struct {
	TokenExpiry *time.Time
	LastSyncAt  *time.Time
	LastError   string
	Devices     int
}

// QueueFacts fetches what the pending queue shows about many enrollments
// at once.
type QueueFacts interface {
	ReservationsByID(ctx context.Context, ids []string) (map[string]enrollment.Reservation, error)
	EnrollmentsByID(ctx context.Context, ids []string) (map[string]enrollment.Enrollment, error)
	// ApprovedCounts counts each user's approved enrollments, up to atMost.
	ApprovedCounts(ctx context.Context, userIDs []string, atMost int) (map[string]int, error)
	// UserNames returns the display names of these users, by ID.
	UserNames(ctx context.Context, userIDs []string) (map[string]string, error)
}

// PostApprovalSender re-queues the post-approval commands of a device.
type PostApprovalSender interface {
	Commands(e enrollment.Enrollment) ([]enrollment.NewCommand, error)
}

// ConsoleOptions are the console's dependencies.
type ConsoleOptions struct {
	Sessions     SessionService
	Passwords    PasswordChecker
	Users        UserService
	Reservations ReservationService
	Enrollments  EnrollmentService
	Commands     CommandService
	Builder      CommandBuilder
	PostApproval PostApprovalSender
	Profiles     ProfileMaker
	Tokens       TokenService
	Audit        AuditReader
	Certificates CertificateLister
	Queue        QueueFacts
	OrgName      string
	// DEP is nil when the ABM sync is off.
	DEP DEPFacts
	// Trust is nil when device trust is off (no trust CA).
	Trust TrustFacts
	// CompanySignIn offers the IdP sign-in on the login page.
	CompanySignIn bool
	// PushEnabled says whether devices can be woken, for the device page.
	PushEnabled bool
	// SecureCookies marks cookies Secure: true whenever the public URL is
	// https.
	SecureCookies bool
	Logger        *slog.Logger
	Now           func() time.Time
}

// Console is the admin console: server-rendered pages behind a session.
type Console struct {
	*pages
	o ConsoleOptions
}

// NewConsole checks the console's dependencies and parses its pages.
func NewConsole(o ConsoleOptions) (*Console, error) {
	if o.Sessions == nil || o.Users == nil || o.Reservations == nil || o.Enrollments == nil || o.Commands == nil || o.Builder == nil ||
		o.Profiles == nil || o.Tokens == nil || o.Audit == nil || o.Certificates == nil || o.Queue == nil || o.PostApproval == nil {
		return nil, errors.New("console: a dependency is missing")
	}
	pending := func(ctx context.Context) (int, error) {
		p, err := o.Enrollments.List(ctx, enrollment.EnrollmentFilter{State: enrollment.StatePending, Limit: 1000})
		return len(p), err
	}
	pg, err := newPages(o.OrgName, o.Sessions, pending, o.DEP != nil, o.Now, o.Logger)
	if err != nil {
		return nil, err
	}
	pg.trustOn = o.Trust != nil
	return &Console{pages: pg, o: o}, nil
}

// roleRank orders console roles; a plain user has no console access.
func rank(r enrollment.Role) int { return roleRank[r] }

// Routes mounts the console, behind cross-origin protection for every
// state-changing request and the security headers of every page.
func (c *Console) Routes(mux *http.ServeMux) {
	cm := http.NewServeMux()
	viewer, approver, admin := enrollment.RoleViewer, enrollment.RoleApprover, enrollment.RoleAdmin
	cm.HandleFunc("GET /login", c.loginPage)
	cm.HandleFunc("POST /login", c.login)
	cm.HandleFunc("POST /logout", c.logout)
	cm.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/pending", http.StatusSeeOther)
	})
	cm.HandleFunc("GET /console/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/pending", http.StatusSeeOther)
	})
	cm.HandleFunc("GET /console/pending", c.need(viewer, c.pending))
	cm.HandleFunc("POST /console/enrollments/{id}/approve", c.need(approver, c.approve))
	cm.HandleFunc("POST /console/enrollments/{id}/deny", c.need(approver, c.deny))
	cm.HandleFunc("POST /console/enrollments/bulk-approve", c.need(approver, c.bulkApprove))
	cm.HandleFunc("POST /console/enrollments/{id}/retire", c.need(approver, c.retire))
	cm.HandleFunc("GET /console/devices", c.need(viewer, c.devices))
	cm.HandleFunc("GET /console/devices/{id}", c.need(viewer, c.device))
	cm.HandleFunc("POST /console/devices/{id}/commands", c.need(approver, c.enqueue))
	cm.HandleFunc("POST /console/devices/{id}/resend", c.need(approver, c.resend))
	cm.HandleFunc("GET /console/reservations", c.need(viewer, c.reservations))
	cm.HandleFunc("POST /console/reservations", c.need(admin, c.reserve))
	cm.HandleFunc("POST /console/reservations/{id}/revoke", c.need(admin, c.revokeReservation))
	cm.HandleFunc("POST /console/reservations/{id}/download", c.need(admin, c.downloadReservation))
	cm.HandleFunc("GET /console/users", c.need(admin, c.users))
	cm.HandleFunc("POST /console/users", c.need(admin, c.addUser))
	cm.HandleFunc("POST /console/users/import", c.need(admin, c.importUsers))
	cm.HandleFunc("POST /console/users/{id}/disable", c.need(admin, c.setDisabled(true)))
	cm.HandleFunc("POST /console/users/{id}/enable", c.need(admin, c.setDisabled(false)))
	cm.HandleFunc("GET /console/audit", c.need(viewer, c.audit))
	cm.HandleFunc("GET /console/dep", c.need(viewer, c.depStatus))
	cm.HandleFunc("GET /console/trust", c.need(viewer, c.trustStatus))
	cm.HandleFunc("POST /console/trust/streams/{id}/delete", c.need(admin, c.deleteStream))
	cm.HandleFunc("GET /console/audit.csv", c.need(viewer, c.auditCSV))
	cm.HandleFunc("GET /console/tokens", c.need(admin, c.tokens))
	cm.HandleFunc("POST /console/tokens", c.need(admin, c.createToken))
	cm.HandleFunc("POST /console/tokens/{name}/revoke", c.need(admin, c.revokeToken))
	static, _ := fs.Sub(staticFS, "static")
	cm.Handle("GET /static/", http.StripPrefix("/static/", filesOnly(static)))
	protect(mux, cm, "GET /{$}", "/login", "/logout", "/console/", "/static/")
}

// protect mounts h on mux at patterns, behind cross-origin protection for
// every state-changing request and the security headers of every page.
func protect(mux *http.ServeMux, h http.Handler, patterns ...string) {
	p := securityHeaders(http.NewCrossOriginProtection().Handler(h))
	for _, pattern := range patterns {
		mux.Handle(pattern, p)
	}
}

// filesOnly serves the embedded assets and nothing else: no directory
// listing, not even of the root.
func filesOnly(fsys fs.FS) http.Handler {
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/")
		if fi, err := fs.Stat(fsys, name); name == "" || err != nil || fi.IsDir() {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})
}

// securityHeaders forbids inline script, framing and sniffing on every
// console response.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

func me(r *http.Request) enrollment.User {
	u, _ := r.Context().Value(userKey{}).(enrollment.User)
	return u
}

func actor(r *http.Request) enrollment.Actor {
	u := me(r)
	return enrollment.Actor{Name: "user:" + u.Email, RemoteIP: clientIP(r), Email: u.Email, Admin: u.Role == enrollment.RoleAdmin}
}

// back redirects to a console page with a message; only local paths. The
// message travels in a short-lived cookie that only the server sets, never
// in the URL: a link cannot put words of its own into a banner.
func back(w http.ResponseWriter, r *http.Request, path, key, msg string) {
	if !strings.HasPrefix(path, "/console/") {
		path = "/console/pending"
	}
	setFlash(w, key, msg)
	http.Redirect(w, r, path, http.StatusSeeOther)
}

// fromPage is where a form came from, if it is a console page.
func fromPage(r *http.Request, fallback string) string {
	if ref, err := url.Parse(r.Referer()); err == nil && strings.HasPrefix(ref.Path, "/console/") {
		return ref.Path
	}
	return fallback
}

// userMessage is what a person is told of an error: the domain's own text
// for their mistakes, nothing internal.
func userMessage(err error) string {
	switch {
	case errors.Is(err, enrollment.ErrNotFound), errors.Is(err, enrollment.ErrInvalid), errors.Is(err, enrollment.ErrConflict),
		errors.Is(err, enrollment.ErrForbidden):
		return enrollment.Explain(err)
	case errors.Is(err, enrollment.ErrSignerUnavailable):
		return "the token signer is unavailable; try again shortly"
	}
	return "something failed; the server log has the details"
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if cookie, err := r.Cookie(SessionCookie); err == nil {
		if _, _, err := c.o.Sessions.Check(r.Context(), cookie.Value); err == nil {
			http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
			return
		}
	}
	c.render(w, r, http.StatusOK, "login", "Sign in", "", map[string]any{"Next": safeNext(r.URL.Query().Get("next")), "OIDC": c.o.CompanySignIn})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if c.o.Passwords == nil {
		c.fail(w, r, enrollment.User{}, http.StatusForbidden, "Local sign-in is off", "Sign in with your company account.")
		return
	}
	email, password := r.PostFormValue("email"), r.PostFormValue("password")
	u, err := c.o.Passwords.Login(r.Context(), email, password, clientIP(r))
	if err == nil && rank(u.Role) == 0 {
		err = fmt.Errorf("%w: the console is for administrators", enrollment.ErrForbidden)
	}
	if err != nil {
		msg := "Wrong e-mail or password."
		switch {
		case errors.Is(err, auth.ErrThrottled):
			msg = "Too many failed attempts. Wait a few minutes."
		case errors.Is(err, enrollment.ErrForbidden):
			msg = "The console is for administrators, approvers and viewers."
		case !errors.Is(err, auth.ErrBadCredentials):
			c.log.ErrorContext(r.Context(), "login", "err", err)
			msg = "Sign-in failed; try again."
		}
		r2 := withMessage(r, "error", msg)
		c.render(w, r2, http.StatusUnauthorized, "login", "Sign in", "", map[string]any{"Next": safeNext(r.PostFormValue("next")), "Email": email, "OIDC": c.o.CompanySignIn})
		return
	}
	id, err := c.o.Sessions.Start(r.Context(), u, "password", clientIP(r), r.UserAgent())
	if err != nil {
		c.log.ErrorContext(r.Context(), "start session", "err", err)
		c.fail(w, r, enrollment.User{}, http.StatusInternalServerError, "Sign-in failed", "Try again.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: c.o.SecureCookies, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if cookie, err := r.Cookie(SessionCookie); err == nil {
		if err := c.o.Sessions.End(r.Context(), cookie.Value); err != nil {
			c.log.ErrorContext(r.Context(), "end session", "err", err)
		}
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: c.o.SecureCookies, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
