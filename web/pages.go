package web

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/enrollment"
)

// pages renders the server's HTML pages, whose layout the console and the
// portal share, and admits signed-in users to them.
type pages struct {
	tmpl     map[string]*template.Template
	org      string
	sessions SessionService
	// pending counts the enrollments waiting, for the console's menu; nil
	// where no page shows it.
	pending func(ctx context.Context) (int, error)
	depOn   bool
	trustOn bool
	now     func() time.Time
	log     *slog.Logger
}

// newPages parses the templates once.
func newPages(org string, sessions SessionService, pending func(context.Context) (int, error), depOn bool,
	now func() time.Time, log *slog.Logger) (*pages, error) {
	if sessions == nil {
		return nil, errors.New("pages: sessions are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	if pending == nil {
		pending = func(context.Context) (int, error) { return 0, nil }
	}
	funcs := template.FuncMap{
		"fmtTime": func(t any) string {
			if at, ok := asTime(t); ok {
				return at.Local().Format(timeLayout)
			}
			return ""
		},
		// when is a time that never wraps, with how long ago it was.
		"when": func(t any) template.HTML {
			at, ok := asTime(t)
			if !ok {
				return ""
			}
			return template.HTML(`<time class="nowrap" datetime="` + at.UTC().Format(time.RFC3339) + `">` +
				template.HTMLEscapeString(at.Local().Format(timeLayout)) + `</time> <span class="muted nowrap">` +
				template.HTMLEscapeString(ago(now().Sub(at))) + `</span>`)
		},
		"short": func(id string) string {
			if len(id) > 8 {
				return id[:8]
			}
			return id
		},
	}
	p := &pages{tmpl: map[string]*template.Template{}, org: org, sessions: sessions, pending: pending, depOn: depOn, now: now, log: log}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("page template %s: %w", n, err)
		}
		p.tmpl[base] = t
	}
	return p, nil
}

type userKey struct{}

// need admits a signed-in user whose role is at least min.
func (c *pages) need(min enrollment.Role, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cookie, err := r.Cookie(SessionCookie)
		var u enrollment.User
		if err == nil {
			_, u, err = c.sessions.Check(r.Context(), cookie.Value)
		}
		if err != nil {
			if !errors.Is(err, auth.ErrNoSession) && !errors.Is(err, http.ErrNoCookie) {
				c.log.ErrorContext(r.Context(), "session check", "err", err)
			}
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.fail(w, r, enrollment.User{}, http.StatusUnauthorized, "Signed out", "Your session ended; sign in again.")
			return
		}
		if min != enrollment.RoleUser && rank(u.Role) < rank(min) {
			c.fail(w, r, u, http.StatusForbidden, "Not allowed", "Your role ("+string(u.Role)+") may not do this.")
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), userKey{}, u)))
	}
}

// pageData is what every page gets.
type pageData struct {
	Title    string
	Nav      string
	Org      string
	Me       enrollment.User
	InPortal bool
	DEPOn    bool
	TrustOn  bool
	IsAdmin  bool
	// ConsoleAccess: the person may use the console (viewer or above).
	ConsoleAccess bool
	CanDecide     bool
	Flash         string
	Error         string
	PendingCount  int
	Now           time.Time
	Data          any
}

func (c *pages) render(w http.ResponseWriter, r *http.Request, status int, page, title, nav string, data any) {
	u := me(r)
	inPortal, _ := r.Context().Value(portalKey{}).(bool)
	d := pageData{Title: title, Nav: nav, Org: c.org, Me: u, InPortal: inPortal || rank(u.Role) == 0, DEPOn: c.depOn, TrustOn: c.trustOn, ConsoleAccess: rank(u.Role) > 0, IsAdmin: u.Role == enrollment.RoleAdmin,
		CanDecide: rank(u.Role) >= rank(enrollment.RoleApprover), Now: c.now(), Data: data}
	d.Flash, d.Error = takeFlash(w, r)
	if u.ID != "" && !d.InPortal {
		if n, err := c.pending(r.Context()); err == nil {
			d.PendingCount = n
		}
	}
	t := c.tmpl[page]
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := t.ExecuteTemplate(w, "layout", d); err != nil {
		c.log.ErrorContext(r.Context(), "render", "page", page, "err", err)
	}
}

func (c *pages) fail(w http.ResponseWriter, r *http.Request, u enrollment.User, status int, title, msg string) {
	if u.ID != "" {
		r = r.WithContext(context.WithValue(r.Context(), userKey{}, u))
	}
	c.render(w, r, status, "error", title, "", msg)
}

// ago says how long ago a duration was, as a person would.
func ago(d time.Duration) string {
	if d < -time.Minute {
		return "in " + strings.TrimSuffix(ago(-d), " ago")
	}
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}

// timeLayout is how pages show a time.
const timeLayout = "2006-01-02 15:04"

// asTime reads what templates pass as a time: a time.Time, or a *time.Time
// that is not nil.
func asTime(t any) (time.Time, bool) {
	switch v := t.(type) {
	case time.Time:
		return v, true
	case *time.Time:
		if v != nil {
			return *v, true
		}
	}
	return time.Time{}, false
}
