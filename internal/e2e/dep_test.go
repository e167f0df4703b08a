package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	depclient "github.com/micromdm/nanodep/client"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/depsync/deptest"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

func newDEPEnv(t testing.TB, dialect string) (*env, *deptest.Server) {
	t.Helper()
	dep := deptest.Start(t)
	e := newEnv(t, dialect, func(c *config.Config) {
		c.DEP.Enabled, c.DEP.ServerURL = true, dep.URL
	})
	if err := e.app.DEP.SetTokens(e.ctx, &depclient.OAuth1Tokens{ConsumerKey: dep.ConsumerKey, ConsumerSecret: "cs",
		AccessToken: dep.AccessToken, AccessSecret: "as", AccessTokenExpiry: time.Now().Add(365 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	return e, dep
}

func inventory(n, from int) []deptest.Device {
	out := make([]deptest.Device, n)
	for i := range out {
		out[i] = deptest.Device{Serial: fmt.Sprintf("DEP%07d", from+i), Model: "MacBook Pro", Description: "MBP 14", Color: "space gray", Family: "Mac", OS: "OSX"}
	}
	return out
}

func TestDEPSync(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		e, dep := newDEPEnv(t, dialect)
		dep.Add(inventory(2500, 0)...)
		dep.SessionLife = 2 // sessions expire after two calls: the client must re-authenticate
		st, ran, err := e.app.DEP.Syncer.Run(e.ctx)
		if err != nil || !ran {
			t.Fatalf("initial fetch: %v %v", ran, err)
		}
		if st.Added != 2500 || st.Pages < 3 {
			t.Fatalf("initial fetch: %+v", st)
		}
		if dep.Sessions < 2 {
			t.Errorf("the client never re-authenticated: %d sessions", dep.Sessions)
		}
		dep.Add(inventory(2, 9000)...)
		dep.Modify("DEP0000001", "renamed")
		dep.Delete("DEP0000002")
		dep.Throttle(1) // the next call gets 429 and is retried
		st, _, err = e.app.DEP.Syncer.Run(e.ctx)
		if err != nil || st.Added != 2 || st.Modified != 1 || st.Deleted != 1 {
			t.Fatalf("incremental sync: %+v %v", st, err)
		}
		if _, in, _ := e.app.Store.DEPFacts(e.ctx, "DEP0000002"); in {
			t.Error("a deleted device is still in the inventory")
		}
		if d, in, _ := e.app.Store.DEPFacts(e.ctx, "DEP0000001"); !in || d.Description != "renamed" {
			t.Errorf("modified device: %+v %v", d, in)
		}
		if _, in, _ := e.app.Store.DEPFacts(e.ctx, "DEP0009001"); !in {
			t.Error("an added device is missing")
		}
		srv, _ := e.app.Store.DEPServer(e.ctx, "abm")
		if srv.Devices != 2501 || srv.LastSyncAt == nil || srv.LastError != "" {
			t.Errorf("server record: %+v", srv)
		}
	})
}

// TestInventoryIsNotAPass is the central rule: a device whose serial is in
// the organisation's inventory still needs a profile made for it, its own
// certificate, and an approval.
func TestInventoryIsNotAPass(t *testing.T) {
	e, dep := newDEPEnv(t, "sqlite")
	dep.Add(deptest.Device{Serial: "C02INVENTORY", Model: "MacBook Air"})
	if _, _, err := e.app.DEP.Syncer.Run(e.ctx); err != nil {
		t.Fatal(err)
	}
	// An attacker's device claims the serial, without a profile or certificate.
	intruder := devicesim.New(http.DefaultClient, "C02INVENTORY")
	_, p := e.profile("alice@example.com")
	if err := intruder.Install(p); err != nil {
		t.Fatal(err)
	}
	code, err := intruder.Authenticate(e.ctx)
	e.expect("Authenticate without a certificate", code, err, 401)

	// The real device goes through the ceremony and waits like any other.
	d, r := e.enrolledDevice("alice@example.com", "C02INVENTORY")
	code, err = d.Authenticate(e.ctx)
	e.expect("Authenticate", code, err, 200)
	if en, _ := e.app.Enrollments.Get(e.ctx, r.ID); en.State != enrollment.StatePending {
		t.Fatalf("an inventory device is %s, not pending", en.State)
	}
	onlyTheQuestion(t, e, d)
	// The approver sees the fact.
	admin := e.browser(enrollment.RoleApprover)
	_, body := do(t, admin, "GET", e.url+"/console/pending", nil, nil)
	if !strings.Contains(body, "serial in ABM inventory") {
		t.Error("the queue does not show the inventory fact")
	}
	if code, body := do(t, admin, "GET", e.url+"/console/dep", nil, nil); code != 200 || !strings.Contains(body, "C02INVENTORY") ||
		!strings.Contains(body, "Devices in the inventory") {
		t.Errorf("the ABM page: %d", code)
	}
	other, _ := e.enrolledDevice("alice@example.com", "C02NOTINABM1")
	other.Authenticate(e.ctx)
	_, body = do(t, admin, "GET", e.url+"/console/pending", nil, nil)
	if !strings.Contains(body, "serial not in ABM inventory") {
		t.Error("the queue does not flag a serial outside the inventory")
	}
}

// TestDEPFetch100k measures a fetch of 100,000 devices (set
// VESTIBULE_TEST_DEP_100K=1); it asserts no timing.
func TestDEPFetch100k(t *testing.T) {
	if os.Getenv("VESTIBULE_TEST_DEP_100K") == "" {
		t.Skip("set VESTIBULE_TEST_DEP_100K=1 to measure a 100,000-device fetch")
	}
	e, dep := newDEPEnv(t, "sqlite")
	dep.Add(inventory(100_000, 0)...)
	var peak uint64
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		var m runtime.MemStats
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
				runtime.ReadMemStats(&m)
				mu.Lock()
				peak = max(peak, m.HeapInuse)
				mu.Unlock()
			}
		}
	}()
	start := time.Now()
	st, _, err := e.app.DEP.Syncer.Run(e.ctx)
	close(done)
	if err != nil || st.Added != 100_000 {
		t.Fatalf("%+v %v", st, err)
	}
	mu.Lock()
	t.Logf("fetched 100,000 devices in %v over %d pages; peak heap in use %d MiB (server and client in one process)", time.Since(start), st.Pages, peak>>20)
	mu.Unlock()
}

func TestDEPProfileAndSetupAssistant(t *testing.T) {
	e, dep := newDEPEnv(t, "sqlite")
	dep.Add(inventory(3, 500)...)
	if _, _, err := e.app.DEP.Syncer.Run(e.ctx); err != nil {
		t.Fatal(err)
	}
	uuid, results, err := e.app.DEP.ApplyProfile(e.ctx)
	if err != nil || len(results) != 3 || results["DEP0000500"] != "SUCCESS" {
		t.Fatalf("apply: %v %v", results, err)
	}
	p := dep.Profiles[uuid]
	if p["configuration_web_url"] != e.url+"/dep/enroll" || p["is_mdm_removable"] != false || p["is_mandatory"] != true || p["await_device_configured"] != true {
		t.Fatalf("DEP profile: %v", p)
	}

	// Setup Assistant: no header, a bad one, a good one.
	plain := &http.Client{}
	for _, tc := range []struct {
		name, header string
		want         int
	}{
		{"missing", "", 400},
		{"malformed", "bm90IGEgY21z", 400},
		{"well-formed", deviceInfo(t, "DEP0000500", "UDID-DEP-500"), 200},
	} {
		req, _ := http.NewRequest("GET", e.url+"/dep/enroll", nil)
		if tc.header != "" {
			req.Header.Set("x-apple-aspen-deviceinfo", tc.header)
		}
		resp, err := plain.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Fatalf("%s: %d", tc.name, resp.StatusCode)
		}
		if tc.want == 200 && (!strings.Contains(string(body), "DEP0000500") || !strings.Contains(string(body), "/auth/login?next=")) {
			t.Fatalf("%s: the page does not lead to the IdP sign-in: %s", tc.name, body)
		}
	}
	// Signed in, the person continues and gets the profile, recorded with
	// the claims; the device then waits like any other.
	user := e.browser(enrollment.RoleApprover)
	req, _ := http.NewRequest("POST", e.url+"/dep/profile", strings.NewReader("serial=DEP0000500&udid=UDID-DEP-500"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := user.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	profile, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("DEP profile download: %d", resp.StatusCode)
	}
	d := devicesim.New(http.DefaultClient, "DEP0000500")
	d.UDID = "UDID-DEP-500"
	if err := d.Install(profile); err != nil {
		t.Fatal(err)
	}
	if err := d.Enroll(e.ctx); err != nil {
		t.Fatal(err)
	}
	if code, err := d.Authenticate(e.ctx); err != nil || code != 200 {
		t.Fatalf("Authenticate: %d %v", code, err)
	}
	res, _ := e.app.Reservations.Get(e.ctx, d.Profile.CN)
	if res.DEPSerial != "DEP0000500" || res.DEPUDID != "UDID-DEP-500" {
		t.Errorf("claims not recorded: %+v", res)
	}
	_, body := do(t, user, "GET", e.url+"/console/pending", nil, nil)
	if !strings.Contains(body, "DEP device") || !strings.Contains(body, "serial in ABM inventory") {
		t.Error("the queue does not show the DEP facts")
	}
	if en, _ := e.app.Enrollments.Get(e.ctx, d.Profile.CN); en.State != enrollment.StatePending {
		t.Fatalf("a DEP device is %s", en.State)
	}
}
