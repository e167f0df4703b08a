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
	"sync"
	"syscall"
	"testing"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/server"
)

// TestSQLiteKeepsEveryCommittedDecision approves devices through the API of
// a real `serve --dev` process on SQLite and kills it with SIGKILL in the
// middle. After a restart every approval the server answered 200 to is
// there, with its audit row and its commands: WAL recovery keeps what was
// committed, and nothing is half done.
func TestSQLiteKeepsEveryCommittedDecision(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	ctx := context.Background()
	bin := filepath.Join(t.TempDir(), "vestibule")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "../../cmd/vestibule").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dataDir := t.TempDir()
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	serve := func() *exec.Cmd {
		cmd := exec.Command(bin, "serve", "--dev", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", dataDir)
		log, _ := os.OpenFile(filepath.Join(dataDir, "serve.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); log.Close() })
		waitFor(t, "serve", func() bool {
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
	var ids []string
	for i := range 40 {
		d, r := e.enrolledDevice("alice@example.com", fmt.Sprintf("C02KILLSQL%02d", i))
		code, err := d.Authenticate(ctx)
		e.expect("Authenticate", code, err, 200)
		ids = append(ids, r.ID)
	}
	tok := e.token(enrollment.RoleApprover)

	// Approve all at once through the server; kill it when half answered.
	var mu sync.Mutex
	answered := map[string]bool{}
	var wg sync.WaitGroup
	killed := make(chan struct{})
	var once sync.Once
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", url+"/api/v1/enrollments/"+id+"/approve", strings.NewReader(`{"note":"load"}`))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return // the server died under it: unknown outcome
			}
			resp.Body.Close()
			mu.Lock()
			if resp.StatusCode == 200 {
				answered[id] = true
			}
			n := len(answered)
			mu.Unlock()
			if n >= len(ids)/2 {
				once.Do(func() {
					_ = srv.Process.Signal(syscall.SIGKILL)
					close(killed)
				})
			}
		}()
	}
	wg.Wait()
	<-killed
	_ = srv.Wait()
	serve()

	mu.Lock()
	defer mu.Unlock()
	if len(answered) < len(ids)/2 {
		t.Fatalf("only %d approvals answered before the kill", len(answered))
	}
	for _, id := range ids {
		en, err := app.Enrollments.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if answered[id] && en.State != enrollment.StateApproved {
			t.Errorf("%s was answered approved but is %s after the crash", id, en.State)
		}
		if en.State != enrollment.StateApproved {
			continue
		}
		// An approval is whole: its audit row and its commands with it.
		events, _ := app.Store.ListAudit(ctx, enrollment.AuditFilter{Action: "enrollment.approve", TargetID: id})
		cmds, _ := app.Commands.List(ctx, id)
		if len(events) != 1 || len(cmds) < 2 || en.DecidedAt == nil {
			t.Errorf("%s approved with %d audit rows and %d commands", id, len(events), len(cmds))
		}
	}
	t.Logf("%d of %d approvals answered before SIGKILL; all kept", len(answered), len(ids))
}
