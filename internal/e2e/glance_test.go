package e2e

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// TestConsoleAtAGlance renders every console page an approver reads, at a
// desktop and a phone width, and checks what the eye needs: times that do
// not wrap and say how long ago, "not reported" where a device said
// nothing, the owner's name, no empty action box, audit targets that are
// links, reservations that link to their devices and download again, and
// an admin's way from the portal to the console.
func TestConsoleAtAGlance(t *testing.T) {
	ctx := newBrowser(t)
	dir := screenshotDir(t)
	e := newEnv(t, "sqlite")
	e.passwordUser(enrollment.UserInput{Email: "ann@example.com", Name: "Ann Admin", Role: enrollment.RoleAdmin})
	if _, err := e.app.Users.Add(e.ctx, admin, enrollment.UserInput{Email: "carol@example.com", Name: "Carol Example"}); err != nil {
		t.Fatal(err)
	}
	quiet, qr := e.enrolledDevice("carol@example.com", "C02QUIET0001")
	quiet.Model, quiet.OSVersion, quiet.DeviceName = "", "", ""
	quiet.ModelName = ""
	if code, err := quiet.Authenticate(e.ctx); err != nil || code != 200 {
		t.Fatal(code, err)
	}
	denied, dr := e.enrolledDevice("alice@example.com", "C02DENIED001")
	if code, err := denied.Authenticate(e.ctx); err != nil || code != 200 {
		t.Fatal(code, err)
	}
	if _, err := e.app.Enrollments.Deny(e.ctx, admin, dr.ID, "not ours"); err != nil {
		t.Fatal(err)
	}
	e.profile("bob@example.com") // an open reservation

	if err := signIn(ctx, e.url+"/console/pending", "ann@example.com"); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	type page struct {
		name, path string
		wants      []string
	}
	pages := []page{
		{"pending", "/console/pending", []string{"Carol Example", "model not reported", "OS not reported", "just now"}},
		{"device-pending", "/console/devices/" + qr.ID, []string{"issued by test:admin", "not reported"}},
		{"device-denied", "/console/devices/" + dr.ID, []string{"denied", "not ours"}},
		{"audit", "/console/audit", []string{"enrollment.deny"}},
		{"reservations", "/console/reservations", []string{"Download again", "bob@example.com"}},
	}
	for _, width := range []struct {
		name string
		w, h int64
	}{{"desktop", 1280, 900}, {"phone", 390, 844}} {
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(width.w, width.h)); err != nil {
			t.Fatal(err)
		}
		for _, p := range pages {
			if err := chromedp.Do(ctx, chromedp.Navigate(e.url+p.path), chromedp.WaitVisible(`main`)); err != nil {
				t.Fatal(err)
			}
			text := textOf(t, ctx, `main`)
			for _, want := range p.wants {
				if !strings.Contains(text, want) {
					t.Errorf("%s (%s) lacks %q", p.name, width.name, want)
				}
			}
			empty, err := chromedp.Run(ctx, chromedp.Evaluate[int](`[...document.querySelectorAll('main .card')].filter(c => c.innerText.trim() === '').length`))
			if err != nil {
				t.Fatal(err)
			}
			if empty > 0 {
				t.Errorf("%s (%s) shows %d empty boxes", p.name, width.name, empty)
			}
			wrapped, err := chromedp.Run(ctx, chromedp.Evaluate[int](`[...document.querySelectorAll('main time')].filter(t => t.getClientRects().length > 1).length`))
			if err != nil {
				t.Fatal(err)
			}
			if wrapped > 0 {
				t.Errorf("%s (%s): %d dates break across lines", p.name, width.name, wrapped)
			}
			shot(t, ctx, dir, "glance-"+p.name+"-"+width.name+".png")
		}
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(e.url+"/console/audit"), chromedp.WaitVisible(`main`)); err != nil {
		t.Fatal(err)
	}
	links, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('main td a[href^="/console/devices/"]').length`))
	if err != nil {
		t.Fatal(err)
	}
	if links == 0 {
		t.Error("audit targets are not links")
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(e.url+"/portal"), chromedp.WaitVisible(`a[href="/console/pending"]`)); err != nil {
		t.Fatalf("no way from the portal back to the console: %v", err)
	}
	shot(t, ctx, dir, "glance-portal-admin.png")
	t.Logf("screenshots in %s", dir)
}
