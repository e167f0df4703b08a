package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/trust/ssf"
)

// TestDeviceTrustInTheConsole shows an admin, in a real browser, a trusted
// device's certificate and the events sent about it, then the streams and
// their delivery health, one of them failing.
func TestDeviceTrustInTheConsole(t *testing.T) {
	ctx := newBrowser(t)
	dir := screenshotDir(t)
	e := newEnv(t, "sqlite")
	e.passwordUser(enrollment.UserInput{Email: "viewer@example.com", Name: "Vera Viewer", Role: enrollment.RoleViewer})
	good := newSSFReceiver(t, e.url, "okta")
	down := newSSFReceiver(t, e.url, "proxy")
	down.setFail(http.StatusServiceUnavailable)
	okta, proxy := e.receiverToken("okta"), e.receiverToken("proxy")
	e.stream(okta, `{"delivery":{"method":"`+ssf.DeliveryPush+`","endpoint_url":"`+good.srv.URL+`","authorization_header":"`+good.secret+`"},
		"events_requested":["`+ssf.EventCompliance+`"],"description":"Okta Identity Threat Protection"}`)
	e.stream(proxy, `{"delivery":{"method":"`+ssf.DeliveryPush+`","endpoint_url":"`+down.srv.URL+`"},
		"events_requested":["`+ssf.EventCompliance+`"],"description":"Access proxy (down)"}`)
	e.stream(okta, `{"events_requested":["`+ssf.EventCompliance+`"],"description":"Okta poll"}`)

	_, r := e.trustedDevice("alice@example.com", "C02BROWSER01")
	e.work()

	if err := signIn(ctx, e.url+"/console/devices/"+r.ID, "viewer@example.com"); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	text := textOf(t, ctx, `main`)
	for _, want := range []string{"Device trust", "trusted", "valid", "Okta Identity Threat Protection", "compliant", "Access proxy (down)", "waiting", "HTTP 503"} {
		if !strings.Contains(text, want) {
			t.Errorf("the device page lacks %q:\n%s", want, text)
		}
	}
	shot(t, ctx, dir, "console-device-trust.png")

	if _, err := e.app.Enrollments.Deny(e.ctx, admin, r.ID, "laptop reported stolen"); err != nil {
		t.Fatal(err)
	}
	e.work()
	if err := chromedp.Do(ctx, chromedp.Navigate(e.url+"/console/devices/"+r.ID), chromedp.WaitVisible(`dl.facts`)); err != nil {
		t.Fatal(err)
	}
	text = textOf(t, ctx, `main`)
	for _, want := range []string{"not trusted", "revoked", "laptop reported stolen", "not-compliant"} {
		if !strings.Contains(text, want) {
			t.Errorf("the revoked device's page lacks %q:\n%s", want, text)
		}
	}
	shot(t, ctx, dir, "console-device-trust-revoked.png")

	if err := chromedp.Do(ctx, chromedp.Navigate(e.url+"/console/trust"), chromedp.WaitVisible(`table`)); err != nil {
		t.Fatal(err)
	}
	text = textOf(t, ctx, `main`)
	for _, want := range []string{"Device Trust CA", "trust-ca.pem", "/trust/crl", "/.well-known/ssf-configuration", "okta", "proxy", "poll", "503"} {
		if !strings.Contains(text, want) {
			t.Errorf("the trust page lacks %q:\n%s", want, text)
		}
	}
	shot(t, ctx, dir, "console-trust.png")
}
