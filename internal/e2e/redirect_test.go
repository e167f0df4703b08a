package e2e

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// TestSignInRedirectStaysOnSite signs in through the real login page with
// the known bypass spellings of an open redirect in ?next=, and asks the
// browser where it ended up: always this site. The foreign host is another
// loopback address, so a regression sends no traffic off the machine.
func TestSignInRedirectStaysOnSite(t *testing.T) {
	ctx := newBrowser(t)
	e := newEnv(t, "sqlite")
	e.passwordUser(enrollment.UserInput{Email: "viewer@example.com", Role: enrollment.RoleViewer})
	site, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	const evil = "127.0.0.2"
	payloads := []string{
		"/\t/" + evil + "/",
		"/\\" + evil + "/",
		"/\\/" + evil + "/",
		"//" + evil + "/",
		"/\n/" + evil + "/",
		"/%2F/" + evil + "/",
		"/%5C" + evil + "/",
		"http://" + evil + "/",
		" //" + evil + "/",
	}
	// landing waits for the browser to leave the login page, wherever it
	// goes, and checks where that is.
	landing := func(t *testing.T) {
		t.Helper()
		var loc string
		for range 50 {
			l, err := chromedp.Run(ctx, chromedp.Location())
			if err != nil {
				t.Fatal(err)
			}
			if loc = l; !strings.Contains(loc, "/login") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		got, err := url.Parse(loc)
		if err != nil || got.Host != site.Host {
			t.Fatalf("the browser went to %q, off this site (%s)", loc, site.Host)
		}
	}
	for _, p := range payloads {
		t.Run("next "+url.QueryEscape(p), func(t *testing.T) {
			// Signed out: the login form carries next through POST /login.
			if _, err := chromedp.Call(ctx, network.ClearBrowserCookies, cdp.Empty{}); err != nil {
				t.Fatal(err)
			}
			err := chromedp.Do(ctx,
				chromedp.Navigate(e.url+"/login?next="+url.QueryEscape(p)),
				chromedp.WaitVisible(`input[name=email]`),
				chromedp.SendKeys(`input[name=email]`, "viewer@example.com"),
				chromedp.SendKeys(`input[name=password]`, testPassword),
				chromedp.Click(`button[type=submit]`),
			)
			if err != nil {
				t.Fatalf("sign in: %v", err)
			}
			landing(t)
			// Signed in: GET /login redirects at once.
			err = chromedp.Do(ctx, chromedp.Navigate(e.url+"/login?next="+url.QueryEscape(p)))
			if err != nil && !strings.Contains(err.Error(), "net::ERR") {
				t.Fatal(err)
			}
			landing(t)
		})
	}
}
