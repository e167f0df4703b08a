package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
	"github.com/vestibule-mdm/vestibule/server"
	"github.com/vestibule-mdm/vestibule/trust/ssf"
)

// TestTrustEventsSurviveKill9 kills the transmitter with SIGKILL between a
// device's approval and the delivery of its compliance event (the
// receiver is down meanwhile), starts it again, and checks the receiver
// then gets the event: it was written with the approval, not held in
// memory.
func TestTrustEventsSurviveKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	ctx := context.Background()
	bin := filepath.Join(t.TempDir(), "vestibule")
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(goCmd, "build", "-o", bin, "../../cmd/vestibule").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dataDir := t.TempDir()
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	serve := func() *exec.Cmd {
		cmd := exec.Command(bin, "serve", "--dev", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", dataDir)
		logFile, err := os.OpenFile(filepath.Join(dataDir, "serve.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logFile, logFile
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); logFile.Close() })
		waitFor(t, "serve to answer", func() bool {
			resp, err := http.Get(url + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
		return cmd
	}
	srv := serve()

	// The test administers the same data dir, as the CLI beside a server does.
	cfg, err := config.Load(config.Overrides{Dev: true, DataDir: dataDir, PublicURL: url}, nil)
	if err != nil {
		t.Fatal(err)
	}
	app, err := server.Build(ctx, cfg, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	e := &env{t: t, url: url, app: app, ctx: ctx}
	if _, err := app.Users.Add(ctx, admin, enrollment.UserInput{Email: "alice@example.com"}); err != nil {
		t.Fatal(err)
	}
	rcv := newSSFReceiver(t, url, "okta")
	rcv.setFail(http.StatusServiceUnavailable) // the receiver is down
	tok := e.receiverToken("okta")
	e.stream(tok, `{"delivery":{"method":"`+ssf.DeliveryPush+`","endpoint_url":"`+rcv.srv.URL+`","authorization_header":"`+rcv.secret+`"},
		"events_requested":["`+ssf.EventCompliance+`"]}`)

	r, p := e.profile("alice@example.com")
	d := devicesim.New(http.DefaultClient, "C02KILL00001")
	if err := d.Install(p); err != nil {
		t.Fatal(err)
	}
	if err := d.Enroll(ctx); err != nil {
		t.Fatal(err)
	}
	code, err := d.Authenticate(ctx)
	e.expect("Authenticate", code, err, 200)
	if _, err := app.Enrollments.Approve(ctx, admin, r.ID, "known laptop"); err != nil {
		t.Fatal(err)
	}
	// Let the transmitter try (and fail) once, then kill it mid-retry.
	waitFor(t, "a failed push", func() bool {
		st, _ := app.Store.Streams(ctx, "")
		return len(st) == 1 && strings.Contains(st[0].LastError, "503")
	})
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = srv.Wait()
	if len(rcv.received()) != 0 {
		t.Fatal("the receiver got an event while it was down")
	}

	rcv.setFail(0)
	serve()
	waitFor(t, "the compliance event after the restart", func() bool { return len(rcv.received()) > 0 })
	got := rcv.received()
	if len(got) != 1 || got[0].Device != r.ID || got[0].Current != "compliant" {
		t.Fatalf("after the restart the receiver got %+v", got)
	}
	// Delivered once: a later round sends it no more.
	time.Sleep(2 * time.Second)
	if n := len(rcv.received()); n != 1 {
		t.Fatalf("the event was delivered %d times", n)
	}
}
