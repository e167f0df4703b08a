package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/testenv"
)

// chromium finds Debian's chromium, or skips.
func chromium(t *testing.T) string {
	for _, p := range []string{os.Getenv("VESTIBULE_TEST_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	testenv.Missing(t, "browser", "apt-get install chromium chromium-driver")
	return ""
}

// screenshotDir is where the browser tests leave their screenshots for a
// person to look at.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("VESTIBULE_TEST_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	ctx, cancel3 := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancel3)
	return ctx
}

func shot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

func textOf(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// TestConsoleInABrowser signs in through the real page, approves one
// pending device and denies another, as an admin would.
func TestConsoleInABrowser(t *testing.T) {
	ctx := newBrowser(t)
	dir := screenshotDir(t)
	e := newEnv(t, "sqlite")
	e.passwordUser(enrollment.UserInput{Email: "approver@example.com", Name: "Ann Approver", Role: enrollment.RoleApprover})

	good, goodRes := e.enrolledDevice("alice@example.com", "C02GOODMAC01")
	good.DeviceName = "Alice's MacBook Pro"
	bad, badRes := e.enrolledDevice("bob@example.com", "C02UNKNOWN99")
	bad.DeviceName = "<b>not mine</b>"
	for _, d := range []interface {
		Authenticate(context.Context) (int, error)
	}{good, bad} {
		if code, err := d.Authenticate(e.ctx); err != nil || code != 200 {
			t.Fatal(code, err)
		}
	}
	// A re-enrollment, so the queue shows its flag.
	again, _ := e.enrolledDevice("alice@example.com", "C02GOODMAC01")
	again.UDID, again.DeviceName = good.UDID, "Alice's MacBook Pro"

	err := signIn(ctx, e.url+"/console/pending", "approver@example.com")
	text := textOf(t, ctx, `main`)
	if err != nil {
		t.Fatalf("sign in: %v", err)
	}
	if !strings.Contains(text, "C02GOODMAC01") || !strings.Contains(text, "<b>not mine</b>") {
		t.Fatalf("the queue does not show both devices (markup as text):\n%s", text)
	}
	shot(t, ctx, dir, "console-pending.png")

	err = chromedp.Do(ctx,
		chromedp.SendKeys(`form[action="/console/enrollments/`+goodRes.ID+`/approve"] input[name=note]`, "Alice's laptop, checked with her"),
		chromedp.Click(`form[action="/console/enrollments/`+goodRes.ID+`/approve"] button`),
		chromedp.WaitVisible(`.flash`),
	)
	text = textOf(t, ctx, `.flash`)
	if err != nil || !strings.Contains(text, "Approved") {
		t.Fatalf("approve: %v %q", err, text)
	}
	// Start from a page without a message, so the wait below is for the
	// answer to the denial.
	err = chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/console/pending"),
		chromedp.WaitVisible(`table`),
		chromedp.SendKeys(`form[action="/console/enrollments/`+badRes.ID+`/deny"] input[name=reason]`, "nobody asked for this device"),
		chromedp.Click(`form[action="/console/enrollments/`+badRes.ID+`/deny"] button`),
		chromedp.WaitVisible(`.flash`),
	)
	text = textOf(t, ctx, `.flash`)
	if err != nil || !strings.Contains(text, "Denied") {
		t.Fatalf("deny: %v %q", err, text)
	}
	if code, _ := again.Authenticate(e.ctx); code != 200 {
		t.Fatalf("re-enrollment Authenticate: %d", code)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(e.url+"/console/pending"), chromedp.WaitVisible(`table`)); err != nil {
		t.Fatal(err)
	}
	shot(t, ctx, dir, "console-pending-reenrollment.png")

	err = chromedp.Do(ctx, chromedp.Navigate(e.url+"/console/devices"), chromedp.WaitVisible(`table`))
	text = textOf(t, ctx, `main`)
	if err != nil || !strings.Contains(text, "approved") || !strings.Contains(text, "denied") {
		t.Fatalf("devices: %v\n%s", err, text)
	}
	shot(t, ctx, dir, "console-devices.png")
	if err := chromedp.Do(ctx, chromedp.Navigate(e.url+"/console/devices/"+goodRes.ID), chromedp.WaitVisible(`dl.facts`)); err != nil {
		t.Fatal(err)
	}
	shot(t, ctx, dir, "console-device.png")

	if en, _ := e.app.Enrollments.Get(e.ctx, goodRes.ID); en.State != enrollment.StateApproved || en.DecidedBy != "user:approver@example.com" {
		t.Errorf("approved device: %s by %s", en.State, en.DecidedBy)
	}
	if en, _ := e.app.Enrollments.Get(e.ctx, badRes.ID); en.State != enrollment.StateDenied {
		t.Errorf("denied device: %s", en.State)
	}

	// Bulk approval: every device waiting (the re-enrollment and two
	// more), with a note of the approver's own, after the page's
	// confirmation.
	var waiting []string
	for _, serial := range []string{"C02BOBMAC001", "C02BOBMAC002"} {
		d, res := e.enrolledDevice("bob@example.com", serial)
		if code, err := d.Authenticate(e.ctx); err != nil || code != 200 {
			t.Fatal(code, err)
		}
		waiting = append(waiting, res.ID)
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			go func() {
				_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
			}()
		}
	}); err != nil {
		t.Fatal(err)
	}
	err = chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/console/pending"),
		chromedp.WaitVisible(`table`),
		chromedp.Click(`#select-all`),
		chromedp.SendKeys(`input[name=note][form=bulk]`, "batch checked in person"),
	)
	if err != nil {
		t.Fatal(err)
	}
	shot(t, ctx, dir, "console-pending-bulk.png")
	err = chromedp.Do(ctx, chromedp.Click(`button[form=bulk]`), chromedp.WaitVisible(`.flash`))
	text = textOf(t, ctx, `.flash`)
	if err != nil || !strings.Contains(text, "Approved 3 device(s).") {
		t.Fatalf("bulk approval: %v %q", err, text)
	}
	shot(t, ctx, dir, "console-pending-bulk-done.png")
	for _, id := range waiting {
		if en, _ := e.app.Enrollments.Get(e.ctx, id); en.State != enrollment.StateApproved || en.DecisionNote != "bulk approval: batch checked in person" {
			t.Errorf("bulk-approved device: %s, note %q", en.State, en.DecisionNote)
		}
	}
	if en, _ := e.app.Enrollments.Get(e.ctx, goodRes.ID); en.State != enrollment.StateSuperseded {
		t.Errorf("the device approved before its re-enrollment was: %s, want superseded", en.State)
	}
	t.Logf("screenshots in %s", dir)
}

// TestPortalInABrowser signs in through the OpenID Provider's own login
// page and downloads a profile from the portal.
func TestPortalInABrowser(t *testing.T) {
	ctx := newBrowser(t)
	dir := screenshotDir(t)
	e, _ := newPortalEnv(t, portalUsers...)
	err := chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/portal"),
		chromedp.WaitVisible(`a[href^="/auth/login"]`),
	)
	if err != nil {
		t.Fatal(err)
	}
	shot(t, ctx, dir, "portal-signed-out.png")
	err = chromedp.Do(ctx,
		chromedp.Click(`a[href^="/auth/login"] button`),
		chromedp.WaitVisible(`#username`),
		chromedp.SendKeys(`#username`, "alice"),
		chromedp.SendKeys(`#password`, "alice-pass"),
		chromedp.Submit(`#password`),
		chromedp.WaitVisible(`form[action="/portal/enroll"]`),
	)
	if err != nil {
		t.Fatalf("sign in at the IdP: %v", err)
	}
	shot(t, ctx, dir, "portal-signed-in.png")
	// A recent device: the Secure Enclave (ACME) profile.
	if err := chromedp.Do(ctx, chromedp.Click(`form[action="/portal/enroll"] input[value="acme"] ~ button`)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		alice, _ := e.app.Store.UserByEmail(e.ctx, "alice@example.com")
		list, _ := e.app.Reservations.List(e.ctx, enrollment.ReservationFilter{UserID: alice.ID})
		if len(list) == 1 && list[0].CreatedBy == "user:alice@example.com" && list[0].Identity == enrollment.IdentityACME {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reservation after the download click: %+v", list)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// passwordUser adds a user with the test password, for the sign-in page.
func (e *env) passwordUser(in enrollment.UserInput) enrollment.User {
	e.t.Helper()
	u, err := e.app.Users.Add(e.ctx, admin, in)
	if err != nil {
		e.t.Fatal(err)
	}
	hash, err := auth.HashPassword(testPassword)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.app.Store.SetUserPassword(e.ctx, u.ID, hash, enrollment.AuditEvent{At: u.CreatedAt, Actor: "test", Action: "user.password"}); err != nil {
		e.t.Fatal(err)
	}
	return u
}

// signIn opens page, signs in on the login page it redirects to, and waits
// for the page's table.
func signIn(ctx context.Context, page, email string) error {
	return chromedp.Do(ctx,
		chromedp.Navigate(page),
		chromedp.WaitVisible(`input[name=email]`),
		chromedp.SendKeys(`input[name=email]`, email),
		chromedp.SendKeys(`input[name=password]`, testPassword),
		chromedp.Click(`button[type=submit]`),
		chromedp.WaitVisible(`table`),
	)
}
