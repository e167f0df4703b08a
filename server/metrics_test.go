package server

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMetricLabelsAreBounded sends 200 requests with made-up 30 KB
// methods, as the security review did (it grew /metrics from 176 KB to
// 102 MB), and checks that /metrics stays the size it was.
func TestMetricLabelsAreBounded(t *testing.T) {
	srv, err := New(testApp(t, testConfig(t)))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	_, before := fetch(t, ts.URL+"/metrics")
	for i := range 200 {
		method := strings.Repeat(string(rune('A'+i%26)), 30<<10) + strings.Repeat("Z", i)
		req, err := http.NewRequest(method, ts.URL+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	_, after := fetch(t, ts.URL+"/metrics")
	if len(after) > len(before)+8<<10 {
		t.Fatalf("/metrics grew from %d to %d bytes", len(before), len(after))
	}
	if !strings.Contains(after, `method="other"`) {
		t.Fatalf("made-up methods are not labelled other:\n%s", after)
	}
}

func TestMetricsToken(t *testing.T) {
	cfg := testConfig(t)
	cfg.Metrics.TokenFile = filepath.Join(t.TempDir(), "metrics-token")
	if err := os.WriteFile(cfg.Metrics.TokenFile, []byte("s3cret-metrics-token-0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := New(testApp(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	for _, tc := range []struct {
		name, auth string
		want       int
	}{
		{"no token", "", 401},
		{"wrong token", "Bearer wrong-metrics-token-0123", 401},
		{"token without scheme", "s3cret-metrics-token-0123", 401},
		{"right token", "Bearer s3cret-metrics-token-0123", 200},
	} {
		req, _ := http.NewRequest("GET", ts.URL+"/metrics", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: HTTP %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
	cfg.Metrics.TokenFile = filepath.Join(t.TempDir(), "missing")
	if _, err := New(testApp(t, cfg)); err == nil || !strings.Contains(err.Error(), "metrics.token_file") {
		t.Errorf("a missing token file: %v", err)
	}
}

func TestMetricsOnTheirOwnListener(t *testing.T) {
	cfg := testConfig(t)
	cfg.Metrics.Listen = "127.0.0.1:0"
	srv, err := New(testApp(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	if code, _ := fetch(t, ts.URL+"/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics on the main listener: HTTP %d, want 404", code)
	}
	ln, err := net.Listen("tcp", cfg.Metrics.Listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeMetrics(ctx, ln) }()
	code, body := fetch(t, "http://"+ln.Addr().String()+"/metrics")
	if code != 200 || !strings.Contains(body, "vestibule_http_requests_total") {
		t.Errorf("metrics listener: HTTP %d", code)
	}
	// The server runs on SQLite here: its checkpointer is watched.
	if !strings.Contains(body, "vestibule_sqlite_checkpoints_total") || !strings.Contains(body, "vestibule_sqlite_wal_pages") {
		t.Errorf("no SQLite checkpoint metrics on the metrics listener")
	}
	if code, _ := fetch(t, "http://"+ln.Addr().String()+"/readyz"); code != http.StatusNotFound {
		t.Errorf("the metrics listener serves /readyz: %d", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestHSTSWhenServingTLS: Strict-Transport-Security is sent when Vestibule
// terminates TLS itself, and not on plain HTTP (behind a proxy, or --dev).
func TestHSTSWhenServingTLS(t *testing.T) {
	for _, tls := range []bool{false, true} {
		cfg := testConfig(t)
		if tls {
			cfg.TLS.CertFile, cfg.TLS.KeyFile = "/nonexistent/cert.pem", "/nonexistent/key.pem"
		}
		srv, err := New(testApp(t, cfg))
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/healthz", "/login", "/api/v1/enrollments"} {
			rec := httptest.NewRecorder()
			srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
			got := rec.Header().Get("Strict-Transport-Security")
			if tls && !strings.Contains(got, "max-age=31536000") || !tls && got != "" {
				t.Errorf("TLS %v, %s: Strict-Transport-Security %q", tls, path, got)
			}
		}
	}
}

// TestStaticServesFilesOnly: the embedded assets are served, their folder
// is not listed.
func TestStaticServesFilesOnly(t *testing.T) {
	srv, err := New(testApp(t, testConfig(t)))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{"/static/style.css": 200, "/static/console.js": 200, "/static/": 404,
		"/static/missing.css": 404} {
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want || strings.Contains(rec.Body.String(), "console.js</a>") {
			t.Errorf("%s: HTTP %d, want %d", path, rec.Code, want)
		}
	}
}
