package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// TestSQLiteKeepsEveryCommittedDecision approves devices through the API of
// a real `serve --dev` process on SQLite and kills it with SIGKILL in the
// middle. After a restart every approval the server answered 200 to is
// there, with its audit row and its commands: WAL recovery keeps what was
// committed, and nothing is half done.
func TestSQLiteKeepsEveryCommittedDecision(t *testing.T) {
	ctx := context.Background()
	proc := buildServe(t)
	srv := proc.start(t)
	url, e := proc.url, proc.admin(ctx, t)
	app := e.app
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
	proc.start(t)

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
