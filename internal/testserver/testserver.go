// Package testserver runs the real Vestibule server for tests: the App a
// --dev configuration builds, on a given database, served on a loopback
// port, closed at cleanup.
package testserver

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/server"
)

// Start builds and serves the App for a --dev configuration on dsn, with
// its data in dataDir (a temporary one when empty). mutate, when set, sees
// the configuration with its public URL already known, before the App is
// built.
func Start(t testing.TB, dsn, dataDir string, mutate func(*config.Config), opts ...server.Option) (string, *server.App) {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	ts := httptest.NewUnstartedServer(nil)
	public := "http://" + ts.Listener.Addr().String()
	cfg, err := config.Load(config.Overrides{Dev: true, DataDir: dataDir, DB: dsn, PublicURL: public}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(&cfg)
	}
	app, err := server.Build(context.Background(), cfg, nil, true, opts...)
	if err != nil {
		t.Fatal(err)
	}
	// Background work (push, device trust) is not started: tests drive it
	// step by step, as serve's loops would.
	t.Cleanup(func() { app.Close() })
	srv, err := server.New(app)
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = srv.Handler()
	ts.Start()
	t.Cleanup(ts.Close)
	return public, app
}
