package e2e

import (
	"context"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/internal/devicesim"
	"github.com/vestibule-mdm/vestibule/trust/ssf"
)

// TestTrustEventsSurviveKill9 kills the transmitter with SIGKILL between a
// device's approval and the delivery of its compliance event (the
// receiver is down meanwhile), starts it again, and checks the receiver
// then gets the event: it was written with the approval, not held in
// memory.
func TestTrustEventsSurviveKill9(t *testing.T) {
	ctx := context.Background()
	proc := buildServe(t)
	srv := proc.start(t)
	url, e := proc.url, proc.admin(ctx, t)
	app := e.app
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
	proc.start(t)
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
