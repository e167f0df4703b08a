package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/store"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

func testConfig(t *testing.T) config.Config {
	t.Helper()
	cfg, err := config.Load(config.Overrides{Dev: true, DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestReadyzNeedsCurrentMigrations(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		cfg := testConfig(t)
		cfg.Database.DSN = storetest.DSN(t, dialect)
		app, err := Build(ctx, cfg, nil, false)
		if err == nil || !strings.Contains(err.Error(), "run `vestibule migrate` first") {
			t.Fatalf("building on an empty database: %v", err)
		}
		st, err := store.Open(ctx, cfg.Database.DSN, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		app = testApp(t, cfg)
		app.Store = st
		srv, err := New(app)
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewServer(srv.Handler())
		defer ts.Close()

		code, body := fetch(t, ts.URL+"/readyz")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "migrations pending") {
			t.Fatalf("before migrate: %d %s", code, body)
		}
		if _, err := st.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if code, body := fetch(t, ts.URL+"/readyz"); code != http.StatusOK {
			t.Fatalf("after migrate: %d %s", code, body)
		}
		st.Close()
		if code, body := fetch(t, ts.URL+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, `"database"`) {
			t.Fatalf("database closed: %d %s", code, body)
		}
	})
}

func TestRequestBasics(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTP.MaxBodyBytes = 2048
	srv, err := New(testApp(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()

	resp, err := http.Get(ts.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(resp.Header.Get(RequestIDHeader)) != 16 {
		t.Errorf("no request ID header: %v", resp.Header)
	}
	resp, err = http.Post(ts.URL+"/healthz", "text/plain", strings.NewReader(strings.Repeat("x", 4096)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d", resp.StatusCode)
	}
}

func TestPanicsBecome500(t *testing.T) {
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	h := recoverPanics(log)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if rec.Code != 500 || !strings.Contains(logs.String(), "boom") {
		t.Fatalf("got %d, log %q", rec.Code, logs.String())
	}
}

func TestQueryStringsAreNotLogged(t *testing.T) {
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	m := newHTTPMetrics(prometheus.NewRegistry())
	h := observe(log, m, nil)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) }))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("PUT", "/mdm/checkin?t=SECRET-TOKEN", nil))
	if strings.Contains(logs.String(), "SECRET-TOKEN") || !strings.Contains(logs.String(), "path=/mdm/checkin") {
		t.Fatalf("log line: %s", logs.String())
	}
}

// TestQuietRoutes: devices' successful check-ins are logged at debug;
// their refusals, and every other route, at info.
func TestQuietRoutes(t *testing.T) {
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /quiet", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("refuse") != "" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	})
	mux.HandleFunc("GET /loud", func(http.ResponseWriter, *http.Request) {})
	h := observe(log, newHTTPMetrics(prometheus.NewRegistry()), map[string]bool{"PUT /quiet": true})(mux)
	for _, tc := range []struct {
		method, target string
		logged         bool
	}{
		{"PUT", "/quiet", false},
		{"PUT", "/quiet?refuse=1", true},
		{"GET", "/loud", true},
		{"GET", "/nowhere", true},
	} {
		logs.Reset()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tc.method, tc.target, nil))
		if got := strings.Contains(logs.String(), "http request"); got != tc.logged {
			t.Errorf("%s %s: logged %v, want %v: %q", tc.method, tc.target, got, tc.logged, logs.String())
		}
	}
}

// testApp builds the App of a dev configuration on a migrated SQLite
// store in a temporary data dir.
func testApp(t *testing.T, cfg config.Config) *App {
	t.Helper()
	mig := cfg
	mig.Database.DSN = "sqlite:" + t.TempDir() + "/v.db"
	app, err := Build(context.Background(), mig, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	return app
}

func fetch(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
