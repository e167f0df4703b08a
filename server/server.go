package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vestibule-mdm/vestibule/checkin"
	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/depsync"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/clientaddr"
	"github.com/vestibule-mdm/vestibule/mdm"
	"github.com/vestibule-mdm/vestibule/store"
	"github.com/vestibule-mdm/vestibule/web"
)

var errPendingMigrations = errors.New("database migrations pending: run `vestibule migrate`")

// Server is a configured Vestibule HTTP server.
type Server struct {
	cfg      config.Config
	log      *slog.Logger
	store    *store.Store
	registry *prometheus.Registry
	handler  http.Handler
	metrics  http.Handler
}

// New wires the routes over what Build made.
func New(app *App) (*Server, error) {
	if app == nil || app.Store == nil {
		return nil, errors.New("server: an app with a store is required")
	}
	if app.Config.PublicURL == "" {
		return nil, errors.New("server: the public URL is not set")
	}
	s := &Server{cfg: app.Config, log: app.Log, store: app.Store, registry: app.Registry}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := newHTTPMetrics(s.registry)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", handleHealthz)
	mux.Handle("GET /readyz", handleReadyz(s.readinessChecks(app.Ready)))
	metricsHandler, err := protectMetrics(promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}), app.Config.Metrics.TokenFile)
	if err != nil {
		return nil, err
	}
	if app.Config.Metrics.Listen == "" {
		mux.Handle("GET /metrics", metricsHandler)
	} else {
		m := http.NewServeMux()
		m.Handle("GET /metrics", metricsHandler)
		s.metrics = m
	}
	api, err := web.NewAPI(web.APIOptions{Reservations: app.Reservations, Enrollments: app.Enrollments, Commands: app.Commands,
		Builder: commandBuilder{}, Audit: app.Store, Waker: waker(app), Profiles: app.Profiles, Tokens: app.APITokens,
		PublicURL: app.Config.PublicURL, Logger: app.Log})
	if err != nil {
		return nil, err
	}
	api.Routes(mux)
	var passwords web.PasswordChecker
	if app.Passwords != nil {
		passwords = app.Passwords
	}
	secure := strings.HasPrefix(app.Config.PublicURL, "https://")
	console, err := web.NewConsole(web.ConsoleOptions{Sessions: app.Sessions, Passwords: passwords, Users: app.Users,
		Reservations: app.Reservations, Enrollments: app.Enrollments, Commands: app.Commands, Builder: commandBuilder{},
		PostApproval: app.PostApproval, Profiles: app.Profiles, Tokens: app.APITokens, Audit: app.Store, Certificates: app.Store, Queue: app.Store,
		DEP: depFacts(app), Trust: newConsoleTrust(app.Trust, app.Store, app.Config.PublicURL), CompanySignIn: app.OIDC != nil, OrgName: app.Config.Org.Name, PushEnabled: app.Pusher != nil,
		SecureCookies: secure, Logger: app.Log})
	if err != nil {
		return nil, err
	}
	console.Routes(mux)
	portal, err := web.NewPortal(web.PortalOptions{Sessions: app.Sessions, IdP: idp(app), Portal: app.Reservations, Owner: app.Enrollments,
		Enrollments: app.Enrollments, Reservations: app.Reservations, Profiles: app.Profiles,
		ReservationsPerHour: app.Config.Portal.ReservationsPerHour, OrgName: app.Config.Org.Name, SecureCookies: secure, Logger: app.Log})
	if err != nil {
		return nil, err
	}
	portal.Routes(mux)
	if f := app.Config.Portal.SCIMTokenFile; f != "" {
		tok, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("portal.scim_token_file: %w", err)
		}
		scim, err := web.NewSCIM(app.Users, strings.TrimSpace(string(tok)), app.Log)
		if err != nil {
			return nil, err
		}
		scim.Routes(mux)
	}
	app.SCEP.Routes(mux)
	app.ACME.Routes(mux)
	app.Checkin.Routes(mux)
	if app.Trust != nil {
		app.Trust.Routes(mux)
	}

	var h http.Handler = mux
	h = recoverPanics(s.log)(h)
	h = observe(s.log, metrics, map[string]bool{checkin.RouteCheckin: true, checkin.RouteConnect: true})(h)
	h = limitBody(func(path string) int64 {
		if path == "/mdm/connect" {
			return mdm.MaxReportBody
		}
		return s.cfg.HTTP.MaxBodyBytes
	})(h)
	if app.Config.TLS.CertFile != "" {
		h = strictTransport(h)
	}
	h = clientaddr.Middleware(trustedProxies(app.Config))(h)
	h = requestID(h)
	s.handler = h
	return s, nil
}

func (s *Server) readinessChecks(extra map[string]func(context.Context) error) []readinessCheck {
	checks := []readinessCheck{
		{name: "database", check: s.store.Ping},
		{name: "migrations", check: migrationsCheck(func(ctx context.Context) (bool, error) {
			st, err := s.store.Migrations(ctx)
			return st.Pending(), err
		})},
	}
	for name, c := range extra {
		checks = append(checks, readinessCheck{name: name, check: c})
	}
	return checks
}

// waker is the pusher as the API sees it; a nil pusher is no waker at all
// (not a typed nil).
func waker(app *App) web.Waker {
	if app.Pusher == nil {
		return nil
	}
	return app.Pusher
}

func depFacts(app *App) web.DEPFacts {
	if app.DEP == nil {
		return nil
	}
	return depView{app}
}

// depView is the ABM sync as the console sees it.
type depView struct{ app *App }

func (v depView) DEPFacts(ctx context.Context, serial string) (depsync.Device, bool, error) {
	return v.app.Store.DEPFacts(ctx, serial)
}

func (v depView) ListDEPDevices(ctx context.Context, limit int) ([]depsync.Device, error) {
	return v.app.Store.ListDEPDevices(ctx, limit)
}

func (v depView) DEPStatus(ctx context.Context) (web.DEPStatus, error) {
	s, err := v.app.Store.DEPServer(ctx, v.app.Config.DEP.Name)
	if errors.Is(err, enrollment.ErrNotFound) {
		return web.DEPStatus{}, nil
	}
	return web.DEPStatus{TokenExpiry: s.TokenExpiry, LastSyncAt: s.LastSyncAt, LastError: s.LastError, Devices: s.Devices}, err
}

func idp(app *App) web.IdP {
	if app.OIDC == nil {
		return nil
	}
	return app.OIDC
}

// Handler is the whole HTTP surface, for tests and embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// MetricsHandler serves /metrics alone when metrics.listen is set, and is
// nil otherwise (then /metrics is on Handler).
func (s *Server) MetricsHandler() http.Handler { return s.metrics }

// ServeMetrics answers /metrics on ln until ctx is done. It is for
// metrics.listen; the main listener is Serve's.
func (s *Server) ServeMetrics(ctx context.Context, ln net.Listener) error {
	if s.metrics == nil {
		return errors.New("serve metrics: metrics.listen is not set")
	}
	srv := &http.Server{Handler: s.metrics, ReadHeaderTimeout: s.cfg.HTTP.ReadHeaderTimeout.D(),
		WriteTimeout: s.cfg.HTTP.WriteTimeout.D(), MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve metrics: %w", err)
	}
	return nil
}

// strictTransport tells browsers to use HTTPS only, for a year: sent when
// Vestibule terminates TLS itself (behind a proxy, the proxy sends it).
func strictTransport(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		next.ServeHTTP(w, r)
	})
}

// protectMetrics requires the bearer token in tokenFile, when one is set.
func protectMetrics(h http.Handler, tokenFile string) (http.Handler, error) {
	if tokenFile == "" {
		return h, nil
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("metrics.token_file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if len(token) < 16 {
		return nil, fmt.Errorf("metrics.token_file: the token must be at least 16 characters")
	}
	want := sha256.Sum256([]byte("Bearer " + token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			http.Error(w, "metrics need a bearer token", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}), nil
}

// Serve answers on ln until ctx is done, then stops taking new connections
// and lets requests in flight finish within the shutdown timeout.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	h := s.cfg.HTTP
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: h.ReadHeaderTimeout.D(),
		ReadTimeout:       h.ReadTimeout.D(),
		WriteTimeout:      h.WriteTimeout.D(),
		IdleTimeout:       h.IdleTimeout.D(),
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() {
		if s.cfg.TLS.CertFile != "" {
			errc <- srv.ServeTLS(ln, s.cfg.TLS.CertFile, s.cfg.TLS.KeyFile)
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "timeout", h.ShutdownTimeout.D().String())
	sctx, cancel := context.WithTimeout(context.Background(), h.ShutdownTimeout.D())
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
