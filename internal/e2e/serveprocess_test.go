package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/server"
)

// serveProcess is a real `vestibule serve --dev` process on a data dir
// and port of its own, for tests that kill it and start it again.
type serveProcess struct {
	bin, dataDir, url string
	port              int
}

// buildServe builds the binary and picks the data dir and port.
func buildServe(t *testing.T) *serveProcess {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	bin := filepath.Join(t.TempDir(), "vestibule")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "../../cmd/vestibule").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	port := freePort(t)
	return &serveProcess{bin: bin, dataDir: t.TempDir(), url: fmt.Sprintf("http://127.0.0.1:%d", port), port: port}
}

// start runs serve, logging to serve.log in the data dir, and waits until
// it is ready.
func (p *serveProcess) start(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(p.bin, "serve", "--dev", "--listen", fmt.Sprintf("127.0.0.1:%d", p.port), "--data-dir", p.dataDir)
	logFile, err := os.OpenFile(filepath.Join(p.dataDir, "serve.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); logFile.Close() })
	waitFor(t, "serve to answer", func() bool {
		resp, err := http.Get(p.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return cmd
}

// admin opens the same data dir as the CLI beside a server does, with the
// user alice@example.com added.
func (p *serveProcess) admin(ctx context.Context, t *testing.T) *env {
	t.Helper()
	cfg, err := config.Load(config.Overrides{Dev: true, DataDir: p.dataDir, PublicURL: p.url}, nil)
	if err != nil {
		t.Fatal(err)
	}
	app, err := server.Build(ctx, cfg, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	if _, err := app.Users.Add(ctx, admin, enrollment.UserInput{Email: "alice@example.com"}); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, url: p.url, app: app, ctx: ctx}
}
