package e2e

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/vestibule-mdm/vestibule/attest/attesttest"
	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
	"github.com/vestibule-mdm/vestibule/internal/testenv"
	"github.com/vestibule-mdm/vestibule/internal/testserver"
	"github.com/vestibule-mdm/vestibule/server"
	"github.com/vestibule-mdm/vestibule/store/storetest"
	"github.com/vestibule-mdm/vestibule/trust/ssf"
)

// trustedDevice enrolls, approves and gives a device its device-trust
// certificate the way serve's background issuer would.
func (e *env) trustedDevice(email, serial string) (*devicesim.Device, enrollment.Reservation) {
	e.t.Helper()
	d, r := e.enrolledDevice(email, serial)
	code, err := d.Authenticate(e.ctx)
	e.expect("Authenticate", code, err, 200)
	code, err = d.TokenUpdate(e.ctx)
	e.expect("TokenUpdate", code, err, 200)
	e.approveForTrust(d, r.ID, false)
	return d, r
}

// approveForTrust approves a pending device, lets the issuer queue its
// trust profile, and has the device answer everything; deferQuestion
// answers the attestation question NotNow, leaving it for a later session.
func (e *env) approveForTrust(d *devicesim.Device, id string, deferQuestion bool) {
	e.t.Helper()
	if n, err := e.app.Trust.Issuer.Scan(e.ctx, false); err != nil || n != 0 {
		e.t.Fatalf("a pending device was owed a trust profile: %d, %v", n, err)
	}
	if _, err := e.app.Enrollments.Approve(e.ctx, admin, id, "known laptop"); err != nil {
		e.t.Fatal(err)
	}
	if n, err := e.app.Trust.Issuer.Scan(e.ctx, true); err != nil || n != 1 {
		e.t.Fatalf("after approval: %d trust profiles queued, %v", n, err)
	}
	if n, _ := e.app.Trust.Issuer.Scan(e.ctx, false); n != 0 {
		e.t.Fatalf("a second scan queued %d more", n)
	}
	d.TrustCert = nil
	e.serveDevice(d, deferQuestion)
	if d.TrustCert == nil {
		e.t.Fatal("the approved device got no trust certificate")
	}
}

// serveDevice answers commands as a device until none is left, installing
// trust profiles.
func (e *env) serveDevice(d *devicesim.Device, deferQuestion bool) {
	e.t.Helper()
	code, cmd, err := d.Connect(e.ctx, "Idle", "")
	for range 20 {
		e.expect("Connect", code, err, 200)
		if cmd == nil {
			return
		}
		if deferQuestion && cmd.RequestType == "DeviceInformation" && bytes.Contains(cmd.Raw, []byte("DeviceAttestationNonce")) {
			code, cmd, err = d.Connect(e.ctx, "NotNow", cmd.UUID)
			continue
		}
		if cmd.RequestType == "InstallProfile" {
			err := d.InstallTrustProfile(e.ctx, cmd)
			switch {
			case errors.Is(err, devicesim.ErrNotTrustProfile):
			case err != nil:
				e.t.Fatal(err)
			default:
				// The trust profile's challenge is one-time.
				again := *d
				if err := again.InstallTrustProfile(e.ctx, cmd); err == nil {
					e.t.Fatal("a trust challenge was used twice")
				}
			}
		}
		code, cmd, err = d.Answer(e.ctx, cmd)
	}
	e.t.Fatal("the device keeps getting commands")
}

func (e *env) receiverToken(name string) string {
	e.t.Helper()
	_, secret, err := e.app.APITokens.Create(e.ctx, admin, name, enrollment.RoleReceiver)
	if err != nil {
		e.t.Fatal(err)
	}
	return secret
}

// stream creates an SSF stream and returns its configuration.
func (e *env) stream(token, body string) (id, endpoint string) {
	e.t.Helper()
	code, out := e.api(token, "POST", ssf.StreamsPath, body)
	var cfg struct {
		StreamID string `json:"stream_id"`
		Delivery struct {
			EndpointURL string `json:"endpoint_url"`
		} `json:"delivery"`
	}
	if code != 201 || json.Unmarshal([]byte(out), &cfg) != nil || cfg.StreamID == "" {
		e.t.Fatalf("create stream: %d %s", code, out)
	}
	return cfg.StreamID, cfg.Delivery.EndpointURL
}

func (e *env) work() {
	e.t.Helper()
	if err := e.app.Trust.Transmitter.Work(e.ctx); err != nil {
		e.t.Fatal(err)
	}
}

func TestDeviceTrust(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) { deviceTrust(t, newEnv(t, dialect)) })
}

func deviceTrust(t *testing.T, e *env) {
	if e.app.Trust == nil {
		t.Fatal("--dev has no device trust")
	}
	openssl := testenv.LookPath(t, "openssl", "openssl", "apt-get install openssl")
	rcv := newSSFReceiver(t, e.url, "okta")    // push
	poller := newSSFReceiver(t, e.url, "okta") // poll
	tok := e.receiverToken("okta")

	// Discovery names every endpoint.
	resp, err := http.Get(e.url + "/.well-known/ssf-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&meta)
	resp.Body.Close()
	if meta["issuer"] != e.url || meta["jwks_uri"] != e.url+ssf.JWKSPath || meta["configuration_endpoint"] != e.url+ssf.StreamsPath {
		t.Fatalf("discovery: %v", meta)
	}

	pushID, _ := e.stream(tok, `{"delivery":{"method":"`+ssf.DeliveryPush+`","endpoint_url":"`+rcv.srv.URL+`","authorization_header":"`+rcv.secret+`"},
		"events_requested":["`+ssf.EventCompliance+`"],"description":"Okta push"}`)
	pollID, pollURL := e.stream(tok, `{"events_requested":["`+ssf.EventCompliance+`"],"description":"Okta poll"}`)
	if pollURL != e.url+ssf.PollPath+pollID {
		t.Fatalf("poll endpoint %q", pollURL)
	}
	// Verification reaches the push receiver with its state.
	if code, out := e.api(tok, "POST", ssf.VerifyPath, `{"stream_id":"`+pushID+`","state":"s-1"}`); code != 204 {
		t.Fatalf("verify: %d %s", code, out)
	}
	e.work()
	if got := rcv.received(); len(got) != 1 || got[0].Type != ssf.EventVerification || got[0].State != "s-1" {
		st, _ := e.app.Store.Streams(e.ctx, "")
		t.Fatalf("verification: %+v (streams %+v)", got, st)
	}

	d, r := e.trustedDevice("alice@example.com", "C02TRUST0001")
	c := d.TrustCert
	if c.Subject.CommonName != r.ID || len(c.EmailAddresses) != 1 || c.EmailAddresses[0] != "alice@example.com" ||
		len(c.URIs) != 1 || c.URIs[0].String() != "urn:vestibule:device:"+r.ID ||
		len(c.CRLDistributionPoints) != 1 || c.CRLDistributionPoints[0] != e.url+"/trust/crl" ||
		len(c.OCSPServer) != 1 || c.OCSPServer[0] != e.url+"/trust/ocsp" {
		t.Fatalf("trust certificate: CN %s, e-mail %v, URIs %v, CRL %v, OCSP %v", c.Subject.CommonName, c.EmailAddresses, c.URIs,
			c.CRLDistributionPoints, c.OCSPServer)
	}
	if days := c.NotAfter.Sub(c.NotBefore).Hours() / 24; days < 29 || days > 31 {
		t.Fatalf("trust certificate lasts %.1f days, want 30", days)
	}
	if err := c.CheckSignatureFrom(e.app.Trust.CA.Cert); err != nil {
		t.Fatalf("not issued by the trust CA: %v", err)
	}
	if c.CheckSignatureFrom(e.app.CA.Cert) == nil {
		t.Fatal("issued by the SCEP identity CA")
	}
	dir := t.TempDir()
	certFile := filepath.Join(dir, "device.pem")
	writePEM(t, certFile, c.Raw)
	caFile := e.app.Config.Trust.CACertFile
	if got := ocspStatus(t, openssl, e.url, caFile, certFile); got != "good" {
		t.Fatalf("OCSP before revocation: %s", got)
	}

	// The receivers learn the device became compliant.
	e.work()
	sum := sha256.Sum256(c.Raw)
	fp := hex.EncodeToString(sum[:])
	got := rcv.received()
	if len(got) != 2 || got[1].Type != ssf.EventCompliance || got[1].Device != r.ID || got[1].User != "alice@example.com" ||
		got[1].Previous != "not-compliant" || got[1].Current != "compliant" {
		t.Fatalf("push after approval: %+v", got)
	}
	polled, ack := poller.poll(pollURL, tok, nil)
	if len(polled) != 1 || polled[0].Current != "compliant" || polled[0].Device != r.ID {
		t.Fatalf("poll after approval: %+v", polled)
	}
	// Unacknowledged SETs come again; acknowledged ones do not.
	if again, _ := poller.poll(pollURL, tok, nil); len(again) != 1 {
		t.Fatalf("unacknowledged SET not polled again: %+v", again)
	}
	if after, _ := poller.poll(pollURL, tok, ack); len(after) != 0 {
		t.Fatalf("acknowledged SET polled again: %+v", after)
	}
	// The pull API agrees.
	code, out := e.api(tok, "GET", "/api/v1/trust?cert_sha256="+strings.ToUpper(fp), "")
	if code != 200 || !strings.Contains(out, `"trusted":true`) || !strings.Contains(out, `"certificate_valid":true`) {
		t.Fatalf("pull API before revocation: %d %s", code, out)
	}

	// Revocation reaches the CRL, OCSP, both streams and the pull API.
	if _, err := e.app.Enrollments.Deny(e.ctx, admin, r.ID, "laptop reported stolen"); err != nil {
		t.Fatal(err)
	}
	if got := ocspStatus(t, openssl, e.url, caFile, certFile); got != "revoked" {
		t.Fatalf("OCSP after revocation: %s", got)
	}
	if !crlLists(t, openssl, e.url, caFile, c.SerialNumber.Text(16)) {
		t.Fatal("the CRL does not list the revoked certificate")
	}
	e.work()
	got = rcv.received()
	if len(got) != 3 || got[2].Current != "not-compliant" || got[2].Previous != "compliant" || !strings.Contains(got[2].Reason, "laptop reported stolen") {
		t.Fatalf("push after revocation: %+v", got)
	}
	polled, ack = poller.poll(pollURL, tok, nil)
	if len(polled) != 1 || polled[0].Current != "not-compliant" {
		t.Fatalf("poll after revocation: %+v", polled)
	}
	poller.poll(pollURL, tok, ack)
	code, out = e.api(tok, "GET", "/api/v1/trust/devices/"+r.ID, "")
	if code != 200 || !strings.Contains(out, `"trusted":false`) || !strings.Contains(out, `"certificate_valid":false`) ||
		!strings.Contains(out, `"revoked_at"`) {
		t.Fatalf("pull API after revocation: %d %s", code, out)
	}
	// A revoked device is owed no new trust profile, and cannot renew.
	if n, _ := e.app.Trust.Issuer.Scan(e.ctx, false); n != 0 {
		t.Fatalf("a denied device was sent %d trust profiles", n)
	}

	resp, err = http.Get(e.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`vestibule_ssf_pushes_total{outcome="delivered"} 3`, `vestibule_ssf_poll_acks_total 2`, `vestibule_ssf_sets_queued_total 5`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// Each stream is its receiver's own.
	other := e.receiverToken("other-idp")
	for _, tc := range []struct {
		name, token, method, path, body string
		want                            int
	}{
		{"another receiver reads", other, "GET", ssf.StreamsPath + "?stream_id=" + pushID, "", 404},
		{"another receiver deletes", other, "DELETE", ssf.StreamsPath + "?stream_id=" + pushID, "", 404},
		{"another receiver polls", other, "POST", ssf.PollPath + pollID, `{}`, 404},
		{"another receiver pauses", other, "POST", ssf.StatusPath, `{"stream_id":"` + pushID + `","status":"paused"}`, 404},
		{"an admin token", e.token(enrollment.RoleAdmin), "GET", ssf.StreamsPath, "", 401},
		{"a receiver on the admin API", tok, "GET", "/api/v1/enrollments", "", 403},
		{"no token", "", "GET", "/api/v1/trust/devices/" + r.ID, "", 401},
		{"malformed stream", tok, "POST", ssf.StreamsPath, `{"delivery":{"method":"carrier-pigeon"}}`, 400},
		{"push to a non-URL", tok, "POST", ssf.StreamsPath, `{"delivery":{"method":"` + ssf.DeliveryPush + `","endpoint_url":"file:///etc/passwd"}}`, 400},
		{"not JSON", tok, "POST", ssf.StreamsPath, `{"events_requested":`, 400},
		{"oversized", tok, "POST", ssf.StreamsPath, `{"description":"` + strings.Repeat("x", 70<<10) + `"}`, 413},
		{"unknown subject format", tok, "POST", ssf.AddSubjectPath, `{"stream_id":"` + pushID + `","subject":{"format":"phone_number","phone_number":"+1"}}`, 400},
		{"unknown stream", tok, "GET", ssf.StatusPath + "?stream_id=nope", "", 404},
		{"bad fingerprint", tok, "GET", "/api/v1/trust?cert_sha256=xyz", "", 400},
		{"unknown fingerprint", tok, "GET", "/api/v1/trust?cert_sha256=" + strings.Repeat("0", 64), "", 404},
	} {
		if code, out := e.api(tc.token, tc.method, tc.path, tc.body); code != tc.want {
			t.Errorf("%s: HTTP %d, want %d: %s", tc.name, code, tc.want, out)
		}
	}
	if code, _ := e.api(tok, "GET", ssf.StatusPath+"?stream_id="+pushID, ""); code != 200 {
		t.Fatal("the owner lost its stream to the cross-account attempts")
	}
}

func writePEM(t testing.TB, name string, der []byte) {
	t.Helper()
	if err := os.WriteFile(name, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// ocspStatus asks the responder with openssl, as a relying party would.
func ocspStatus(t testing.TB, openssl, base, caFile, certFile string) string {
	t.Helper()
	out, err := exec.Command(openssl, "ocsp", "-issuer", caFile, "-CAfile", caFile, "-cert", certFile, "-url", base+"/trust/ocsp",
		"-no_nonce").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl ocsp: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Response verify OK") {
		t.Fatalf("openssl ocsp did not verify the response:\n%s", out)
	}
	for _, s := range []string{"revoked", "good", "unknown"} {
		if strings.Contains(string(out), ": "+s) {
			return s
		}
	}
	t.Fatalf("openssl ocsp:\n%s", out)
	return ""
}

// crlLists fetches the CRL and checks, with openssl, that it verifies
// against the trust CA and lists serial (hex).
func crlLists(t testing.TB, openssl, base, caFile, serial string) bool {
	t.Helper()
	resp, err := http.Get(base + "/trust/crl")
	if err != nil {
		t.Fatal(err)
	}
	der, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("CRL: HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	name := filepath.Join(t.TempDir(), "trust.crl")
	if err := os.WriteFile(name, der, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "crl", "-inform", "DER", "-in", name, "-CAfile", caFile, "-noout", "-text").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("verify OK")) {
		t.Fatalf("openssl crl: %v\n%s", err, out)
	}
	want := strings.TrimLeft(strings.ToUpper(serial), "0")
	for _, line := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "Serial Number: "); ok && strings.TrimLeft(s, "0") == want {
			return true
		}
	}
	return false
}

// TestTrustEndsWithTheApproval takes a trusted device through each way an
// approval ends, or is put in doubt, and checks that its trust certificate
// is revoked at once (CRL and OCSP) and receivers hear not-compliant.
func TestTrustEndsWithTheApproval(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		now := time.Now()
		roots, err := attesttest.NewCA("Test", now)
		if err != nil {
			t.Fatal(err)
		}
		e := newEnvWith(t, dialect, []server.Option{server.WithAttestationRoots(roots.Pool())})
		tok := e.receiverToken("idp")
		_, pollURL := e.stream(tok, `{"events_requested":["`+ssf.EventCompliance+`"]}`)
		poller := newSSFReceiver(t, e.url, "idp")
		alice, err := e.app.Store.UserByEmail(e.ctx, "alice@example.com")
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name    string
			serial  string
			end     func(e *env, d *devicesim.Device, id string)
			code    int // CRL reason
			reason  string
			restore func(e *env, id string) // gives trust back, when it can come back
		}{
			{"revoked by an admin", "C02END00001", func(e *env, _ *devicesim.Device, id string) {
				if _, err := e.app.Enrollments.Deny(e.ctx, admin, id, "left the company"); err != nil {
					e.t.Fatal(err)
				}
			}, 9, "left the company", nil},
			{"retired", "C02END00002", func(e *env, _ *devicesim.Device, id string) {
				if _, err := e.app.Enrollments.Retire(e.ctx, admin, id, "sold"); err != nil {
					e.t.Fatal(err)
				}
			}, 3, "retired", nil},
			{"superseded by a re-enrollment", "C02END00003", func(e *env, d *devicesim.Device, id string) {
				again, r := e.enrolledDevice("alice@example.com", d.Serial)
				again.UDID = d.UDID
				code, err := again.Authenticate(e.ctx)
				e.expect("re-enrollment", code, err, 200)
				if _, err := e.app.Enrollments.Approve(e.ctx, admin, r.ID, "same laptop, reinstalled"); err != nil {
					e.t.Fatal(err)
				}
				// The new enrollment gets its own trust certificate.
				if n, _ := e.app.Trust.Issuer.Scan(e.ctx, true); n != 1 {
					e.t.Fatalf("the re-enrollment was sent %d trust profiles", n)
				}
				e.serveDevice(again, false)
			}, 4, "superseded", nil},
			{"the owner says it was not them", "C02END00004", func(e *env, _ *devicesim.Device, id string) {
				owner := enrollment.Actor{Name: "user:alice@example.com", Email: "alice@example.com"}
				if _, err := e.app.Enrollments.NotMe(e.ctx, owner, alice.ID, id); err != nil {
					e.t.Fatal(err)
				}
			}, 1, "not them", nil},
			{"the device checked out", "C02END00005", func(e *env, d *devicesim.Device, _ string) {
				code, err := d.CheckOut(e.ctx)
				e.expect("CheckOut", code, err, 200)
			}, 5, "removed its enrollment", nil},
			{"the owner disabled", "C02END00006", func(e *env, _ *devicesim.Device, _ string) {
				if _, err := e.app.Users.SetDisabled(e.ctx, admin, alice.ID, true); err != nil {
					e.t.Fatal(err)
				}
			}, 9, "owner disabled", func(e *env, id string) {
				if _, err := e.app.Users.SetDisabled(e.ctx, admin, alice.ID, false); err != nil {
					e.t.Fatal(err)
				}
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := e.on(t)
				d, r := e.trustedDevice("alice@example.com", tc.serial)
				e.work()
				poller.drain(pollURL, tok)
				tc.end(e, d, r.ID)
				e.expectDistrusted(t, d, r.ID, tc.code, tc.reason, pollURL, tok, poller)
				if tc.restore == nil {
					return
				}
				tc.restore(e, r.ID)
				e.work()
				if got := about(poller.drain(pollURL, tok), r.ID); len(got) != 1 || got[0].Current != "compliant" {
					t.Fatalf("after trust came back: %+v", got)
				}
				// (Every device of the owner gets one; this one at least.)
				if n, _ := e.app.Trust.Issuer.Scan(e.ctx, true); n < 1 {
					t.Fatalf("trust came back but %d trust profiles were queued", n)
				}
				e.serveDevice(d, false)
				if d.TrustCert.RawSubject == nil || d.TrustCert.NotAfter.Before(time.Now()) {
					t.Fatal("no new trust certificate")
				}
			})
		}

		t.Run("attestation contradicts the device after approval", func(t *testing.T) {
			e := e.on(t)
			d, r := e.enrolledDevice("alice@example.com", "C02END00007")
			d.Attest = func(nonce []byte) ([][]byte, error) {
				return roots.Chain(attesttest.Leaf{Serial: "C02SOMEONEELSE", UDID: d.UDID, Nonce: nonce}, now)
			}
			code, err := d.Authenticate(e.ctx)
			e.expect("Authenticate", code, err, 200)
			// Approved before the device answered the question.
			e.approveForTrust(d, r.ID, true)
			e.work()
			poller.drain(pollURL, tok)
			e.serveDevice(d, false) // a new session: the question again, answered
			if a := e.enrollment(r.ID).Attestation; a.Status != enrollment.AttestMismatch {
				t.Fatalf("attestation %s", a.Status)
			}
			e.expectDistrusted(t, d, r.ID, 9, "attestation mismatch", pollURL, tok, poller)
		})
	})
}

// expectDistrusted checks that a device's trust certificate is revoked in
// the CRL and over OCSP, and that receivers heard not-compliant.
func (e *env) expectDistrusted(t *testing.T, d *devicesim.Device, id string, code int, reason, pollURL, tok string, poller *ssfReceiver) {
	t.Helper()
	der, err := e.app.Trust.Revocation.CurrentCRL(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(e.app.Trust.CA.Cert); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, rc := range crl.RevokedCertificateEntries {
		if rc.SerialNumber.Cmp(d.TrustCert.SerialNumber) == 0 {
			found = true
			if rc.ReasonCode != code {
				t.Errorf("CRL reason %d, want %d", rc.ReasonCode, code)
			}
		}
	}
	if !found {
		t.Fatal("the CRL does not list the trust certificate")
	}
	req, err := ocsp.CreateRequest(d.TrustCert, e.app.Trust.CA.Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := e.app.Trust.Revocation.Respond(e.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ocsp.ParseResponseForCert(raw, d.TrustCert, e.app.Trust.CA.Cert)
	if err != nil || resp.Status != ocsp.Revoked {
		t.Fatalf("OCSP: %+v %v", resp, err)
	}
	e.work()
	got := about(poller.drain(pollURL, tok), id)
	if len(got) != 1 || got[0].Current != "not-compliant" || !strings.Contains(got[0].Reason, reason) {
		t.Fatalf("receivers heard %+v, want one not-compliant about %s (%s)", got, id, reason)
	}
	if n, _ := e.app.Trust.Issuer.Scan(e.ctx, false); n != 0 {
		t.Fatalf("a distrusted device was sent %d trust profiles", n)
	}
	// It cannot renew its way back either.
	if err := d.RenewTrust(e.ctx); err == nil {
		t.Fatal("a revoked trust certificate renewed")
	}
}

// on is the environment reporting to t (a subtest).
func (e *env) on(t testing.TB) *env {
	c := *e
	c.t = t
	return &c
}

// about keeps the events about one device.
func about(events []receivedSET, id string) []receivedSET {
	var out []receivedSET
	for _, ev := range events {
		if ev.Device == id {
			out = append(out, ev)
		}
	}
	return out
}

// TestTrustRenewal renews a trusted device's certificate over SCEP, and
// checks the issuer owes a new profile only near expiry.
func TestTrustRenewal(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		d, r := e.trustedDevice("alice@example.com", "C02RENEW0001")
		cfg := e.app.Config.Trust
		due := func(at time.Time) bool {
			list, err := e.app.Store.TrustProfilesDue(e.ctx, at, cfg.RenewBefore.D(), cfg.ChallengeTTL.D(), false, 10)
			if err != nil {
				t.Fatal(err)
			}
			return len(list) == 1 && list[0].ID == r.ID
		}
		if due(time.Now()) {
			t.Fatal("a fresh trust certificate is due for renewal")
		}
		if !due(time.Now().Add(cfg.CertValidity.D() - cfg.RenewBefore.D() + time.Hour)) {
			t.Fatal("a trust certificate near expiry is not due for renewal")
		}
		old := d.TrustCert
		if err := d.RenewTrust(e.ctx); err != nil {
			t.Fatal(err)
		}
		if d.TrustCert.SerialNumber.Cmp(old.SerialNumber) == 0 || d.TrustCert.Subject.CommonName != r.ID {
			t.Fatal("renewal did not issue a new certificate for the device")
		}
		for _, tc := range []struct {
			c    *x509.Certificate
			want int
		}{{old, ocsp.Revoked}, {d.TrustCert, ocsp.Good}} {
			req, _ := ocsp.CreateRequest(tc.c, e.app.Trust.CA.Cert, nil)
			raw, err := e.app.Trust.Revocation.Respond(e.ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := ocsp.ParseResponseForCert(raw, tc.c, e.app.Trust.CA.Cert)
			if err != nil || resp.Status != tc.want {
				t.Fatalf("OCSP for %s: %+v %v, want %d", tc.c.SerialNumber, resp, err, tc.want)
			}
			if tc.want == ocsp.Revoked && resp.RevocationReason != ocsp.Superseded {
				t.Fatalf("the replaced certificate's reason is %d, not superseded", resp.RevocationReason)
			}
		}
		// The device's MDM identity cannot renew at the trust CA, nor the
		// trust certificate at the identity CA.
		cross := *d
		cross.TrustCert, cross.TrustKey = d.Cert, d.Key
		if err := cross.RenewTrust(e.ctx); err == nil {
			t.Fatal("the MDM identity renewed at the trust CA")
		}
	})
}

// TestPausedStreamHoldsEvents: a paused stream gets nothing and keeps its
// events; enabled again, it gets them. A disabled one gets no new events.
func TestPausedStreamHoldsEvents(t *testing.T) {
	e := newEnv(t, "sqlite")
	rcv := newSSFReceiver(t, e.url, "idp")
	tok := e.receiverToken("idp")
	id, _ := e.stream(tok, `{"delivery":{"method":"`+ssf.DeliveryPush+`","endpoint_url":"`+rcv.srv.URL+`","authorization_header":"`+rcv.secret+`"},
		"events_requested":["`+ssf.EventCompliance+`"]}`)
	status := func(s string) {
		t.Helper()
		if code, out := e.api(tok, "POST", ssf.StatusPath, `{"stream_id":"`+id+`","status":"`+s+`","reason":"maintenance"}`); code != 200 {
			t.Fatalf("status %s: %d %s", s, code, out)
		}
	}
	status("paused")
	_, r := e.trustedDevice("alice@example.com", "C02PAUSE0001")
	e.work()
	if got := rcv.received(); len(got) != 0 {
		t.Fatalf("a paused stream got %+v", got)
	}
	status("enabled")
	e.work()
	if got := about(rcv.received(), r.ID); len(got) != 1 || got[0].Current != "compliant" {
		t.Fatalf("after enabling: %+v", got)
	}
	status("disabled")
	if _, err := e.app.Enrollments.Deny(e.ctx, admin, r.ID, "gone"); err != nil {
		t.Fatal(err)
	}
	e.work()
	status("enabled")
	e.work()
	if got := about(rcv.received(), r.ID); len(got) != 1 {
		t.Fatalf("a disabled stream got events made while it was disabled: %+v", got)
	}
	if code, out := e.api(tok, "GET", ssf.StatusPath+"?stream_id="+id, ""); code != 200 || !strings.Contains(out, `"enabled"`) {
		t.Fatalf("status: %d %s", code, out)
	}
	if code, _ := e.api(tok, "POST", ssf.StatusPath, `{"stream_id":"`+id+`","status":"sleeping"}`); code != 400 {
		t.Fatal("an unknown status was accepted")
	}
	// PATCH sets what it names, even to empty, and keeps the rest.
	if code, out := e.api(tok, "PATCH", ssf.StreamsPath, `{"stream_id":"`+id+`","description":"IdP push"}`); code != 200 ||
		!strings.Contains(out, `"IdP push"`) || !strings.Contains(out, rcv.srv.URL) {
		t.Fatalf("PATCH description: %d %s", code, out)
	}
	if code, out := e.api(tok, "PATCH", ssf.StreamsPath, `{"stream_id":"`+id+`","description":""}`); code != 200 ||
		strings.Contains(out, "IdP push") || !strings.Contains(out, ssf.EventCompliance) {
		t.Fatalf("PATCH clearing the description: %d %s", code, out)
	}
	if code, out := e.api(tok, "PUT", ssf.StreamsPath, `{"stream_id":"`+id+`"}`); code != 200 || strings.Contains(out, ssf.DeliveryPush) {
		t.Fatalf("PUT with nothing is a poll stream for nothing: %d %s", code, out)
	}
	if code, _ := e.api(tok, "DELETE", ssf.StreamsPath+"?stream_id="+id, ""); code != 204 {
		t.Fatal("delete")
	}
	if code, _ := e.api(tok, "GET", ssf.StreamsPath+"?stream_id="+id, ""); code != 404 {
		t.Fatal("a deleted stream is still there")
	}
}

// TestTrustOnTwoReplicas runs device trust on two servers sharing one
// PostgreSQL database and data dir, working at the same moments: one
// trust profile per device, one push per event and stream, one CRL.
func TestTrustOnTwoReplicas(t *testing.T) {
	dsn, dataDir := storetest.DSN(t, "postgres"), t.TempDir()
	e := newEnvOn(t, dsn, dataDir)
	_, other := testserver.Start(t, dsn, dataDir, func(c *config.Config) { c.PublicURL = e.url })
	replicas := []*server.App{e.app, other}
	rcv := newSSFReceiver(t, e.url, "idp")
	tok := e.receiverToken("idp")
	e.stream(tok, `{"delivery":{"method":"`+ssf.DeliveryPush+`","endpoint_url":"`+rcv.srv.URL+`","authorization_header":"`+rcv.secret+`"},
		"events_requested":["`+ssf.EventCompliance+`"]}`)
	together := func(f func(app *server.App)) {
		var wg sync.WaitGroup
		for _, app := range replicas {
			for range 3 {
				wg.Add(1)
				go func() { defer wg.Done(); f(app) }()
			}
		}
		wg.Wait()
	}

	var ids []string
	for i := range 5 {
		d, r := e.enrolledDevice("alice@example.com", fmt.Sprintf("C02REPLICA%02d", i))
		code, err := d.Authenticate(e.ctx)
		e.expect("Authenticate", code, err, 200)
		if _, err := e.app.Enrollments.Approve(e.ctx, admin, r.ID, "ok"); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	var queued atomic.Int64
	together(func(app *server.App) {
		n, err := app.Trust.Issuer.Scan(e.ctx, true)
		if err != nil {
			t.Error(err)
		}
		queued.Add(int64(n))
	})
	if queued.Load() != 5 {
		t.Fatalf("%d trust profiles queued for 5 devices", queued.Load())
	}
	together(func(app *server.App) {
		if err := app.Trust.Transmitter.Work(e.ctx); err != nil {
			t.Error(err)
		}
	})
	if n := rcv.pushes(); n != 5 || len(rcv.received()) != 5 {
		t.Fatalf("%d pushes, %d distinct SETs for 5 events", n, len(rcv.received()))
	}
	for _, id := range ids[:2] {
		if _, err := e.app.Enrollments.Deny(e.ctx, admin, id, "gone"); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	numbers := map[string]bool{}
	together(func(app *server.App) {
		der, err := app.Trust.Revocation.CurrentCRL(e.ctx)
		if err != nil {
			t.Error(err)
			return
		}
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		numbers[crl.Number.String()] = true
		mu.Unlock()
	})
	if len(numbers) != 1 {
		t.Fatalf("the replicas served CRLs numbered %v", numbers)
	}
	// Revoking while both replicas serve: a CRL number never goes back.
	var last int64
	for i, id := range ids[2:] {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.app.Enrollments.Deny(e.ctx, admin, id, "gone"); err != nil {
				t.Error(err)
			}
		}()
		for j := range 6 {
			der, err := replicas[(i+j)%2].Trust.Revocation.CurrentCRL(e.ctx)
			if err != nil {
				t.Fatal(err)
			}
			crl, _ := x509.ParseRevocationList(der)
			if n := crl.Number.Int64(); n < last {
				t.Fatalf("CRL number went back from %d to %d", last, n)
			} else {
				last = n
			}
		}
		wg.Wait()
	}
}

// TestPushIsNotRedirected: a push endpoint that redirects does not send
// the SET, or its Authorization header, anywhere else; the push is retried.
func TestPushIsNotRedirected(t *testing.T) {
	e := newEnv(t, "sqlite")
	elsewhere := newSSFReceiver(t, e.url, "idp")
	redirect := httptest.NewServer(http.RedirectHandler(elsewhere.srv.URL, http.StatusTemporaryRedirect))
	t.Cleanup(redirect.Close)
	tok := e.receiverToken("idp")
	e.stream(tok, `{"delivery":{"method":"`+ssf.DeliveryPush+`","endpoint_url":"`+redirect.URL+`","authorization_header":"`+elsewhere.secret+`"},
		"events_requested":["`+ssf.EventCompliance+`"]}`)
	e.trustedDevice("alice@example.com", "C02REDIRECT1")
	e.work()
	if n := elsewhere.pushes(); n != 0 {
		t.Fatalf("the redirect target got %d pushes", n)
	}
	st, _ := e.app.Store.Streams(e.ctx, "")
	if len(st) != 1 || st[0].Undelivered != 1 || !strings.Contains(st[0].LastError, "307") {
		t.Fatalf("stream after a redirect: %+v", st)
	}
}

// TestDenialDuringTrustIssuance denies a device while its trust
// certificate is being recorded (PostgreSQL, with the insert slowed down
// by a trigger): the certificate must end up revoked, or never issued.
func TestDenialDuringTrustIssuance(t *testing.T) {
	e := newEnv(t, "postgres")
	if _, err := e.app.Store.DB().ExecContext(e.ctx, `CREATE FUNCTION slow_insert() RETURNS trigger AS $$
		BEGIN PERFORM pg_sleep(1.5); RETURN NEW; END $$ LANGUAGE plpgsql;
		CREATE TRIGGER slow_trust_insert AFTER INSERT ON trust_certificates FOR EACH ROW EXECUTE FUNCTION slow_insert();`); err != nil {
		t.Fatal(err)
	}
	d, r := e.enrolledDevice("alice@example.com", "C02RACE00001")
	code, err := d.Authenticate(e.ctx)
	e.expect("Authenticate", code, err, 200)
	if _, err := e.app.Enrollments.Approve(e.ctx, admin, r.ID, "ok"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DrainCommands(e.ctx, 10); err != nil {
		t.Fatal(err)
	}
	if n, _ := e.app.Trust.Issuer.Scan(e.ctx, true); n != 1 {
		t.Fatal("no trust profile")
	}
	_, cmd, err := d.Connect(e.ctx, "Idle", "")
	if err != nil || cmd == nil {
		t.Fatal("no command", err)
	}
	done := make(chan error, 1)
	go func() { done <- d.InstallTrustProfile(e.ctx, cmd) }()
	time.Sleep(700 * time.Millisecond)
	if _, err := e.app.Enrollments.Deny(e.ctx, admin, r.ID, "stolen"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Logf("issuance refused: %v", err)
		return
	}
	req, _ := ocsp.CreateRequest(d.TrustCert, e.app.Trust.CA.Cert, nil)
	raw, err := e.app.Trust.Revocation.Respond(e.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ocsp.ParseResponseForCert(raw, d.TrustCert, e.app.Trust.CA.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != ocsp.Revoked {
		t.Fatalf("a certificate issued while the device was denied has OCSP status %d, not revoked", resp.Status)
	}
}

// TestStreamsStayFairAndOrdered: a receiver that hangs delays no other
// receiver; a receiver that failed gets its SETs again in the order they
// were made; a revoked receiver token's streams hear nothing more;
// verification is rate-limited; concurrent creations respect the limit.
func TestStreamsStayFairAndOrdered(t *testing.T) {
	storetest.ForEachDialect(t, streamsStayFairAndOrdered)
}

func streamsStayFairAndOrdered(t *testing.T, dialect string) {
	e := newEnv(t, dialect)
	release := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(hanging.Close)
	var once sync.Once
	unhang := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unhang)
	good, flaky, gone := newSSFReceiver(t, e.url, "good"), newSSFReceiver(t, e.url, "flaky"), newSSFReceiver(t, e.url, "gone")
	push := func(r *ssfReceiver) string {
		return `{"delivery":{"method":"` + ssf.DeliveryPush + `","endpoint_url":"` + r.srv.URL + `","authorization_header":"` + r.secret + `"},
			"events_requested":["` + ssf.EventCompliance + `"]}`
	}
	e.stream(e.receiverToken("good"), push(good))
	e.stream(e.receiverToken("flaky"), push(flaky))
	e.stream(e.receiverToken("gone"), push(gone))
	slowTok := e.receiverToken("slow")
	e.stream(slowTok, `{"delivery":{"method":"`+ssf.DeliveryPush+`","endpoint_url":"`+hanging.URL+`"},"events_requested":["`+ssf.EventCompliance+`"]}`)

	flaky.setFail(http.StatusServiceUnavailable)
	_, r := e.trustedDevice("alice@example.com", "C02FAIR00001")
	done := make(chan error, 1)
	go func() { done <- e.app.Trust.Transmitter.Work(e.ctx) }()
	waitFor(t, "the good receiver, while another hangs", func() bool { return len(good.received()) == 1 })
	unhang()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// The flaky receiver comes back after the device was revoked: it gets
	// compliant, then not-compliant, in that order.
	if err := e.app.APITokens.Revoke(e.ctx, admin, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.app.Enrollments.Deny(e.ctx, admin, r.ID, "stolen"); err != nil {
		t.Fatal(err)
	}
	flaky.setFail(0)
	waitFor(t, "the flaky receiver to catch up", func() bool {
		_ = e.app.Trust.Transmitter.Work(e.ctx)
		return len(flaky.received()) == 2
	})
	if got := flaky.received(); got[0].Current != "compliant" || got[1].Current != "not-compliant" {
		t.Fatalf("the flaky receiver got %s then %s", got[0].Current, got[1].Current)
	}
	if got := good.received(); len(got) != 2 || got[1].Current != "not-compliant" {
		t.Fatalf("the good receiver got %+v", got)
	}
	if got := gone.received(); len(got) != 1 {
		t.Fatalf("a revoked receiver token's stream got %d events, want only the one before revocation", len(got))
	}

	// Verification: once a minute per stream.
	tok := e.receiverToken("verifier")
	id, _ := e.stream(tok, `{}`)
	for i, want := range []int{204, 429} {
		if code, out := e.api(tok, "POST", ssf.VerifyPath, `{"stream_id":"`+id+`"}`); code != want {
			t.Fatalf("verification %d: %d %s", i, code, out)
		}
	}
	// Ten streams per receiver, however many ask at once.
	var created atomic.Int64
	var wg sync.WaitGroup
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, _ := e.api(tok, "POST", ssf.StreamsPath, `{}`); code == 201 {
				created.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := created.Load(); n != 9 {
		t.Fatalf("%d more streams created beside the first, want 9", n)
	}
}

// TestConsoleDeletesAStream: only an admin deletes a receiver's stream
// from the console, and it is gone with its undelivered events.
func TestConsoleDeletesAStream(t *testing.T) {
	e := newEnv(t, "sqlite")
	id, _ := e.stream(e.receiverToken("idp"), `{}`)
	viewer, adm := e.browser(enrollment.RoleViewer), e.browser(enrollment.RoleAdmin)
	if code, _ := do(t, viewer, "POST", e.url+"/console/trust/streams/"+id+"/delete", url.Values{}, nil); code != http.StatusForbidden {
		t.Fatalf("a viewer deleting a stream: %d", code)
	}
	if code, page := do(t, viewer, "GET", e.url+"/console/trust", nil, nil); code != 200 || strings.Contains(page, "/delete") {
		t.Fatalf("a viewer's trust page: %d, delete offered: %v", code, strings.Contains(page, "/delete"))
	}
	for _, bad := range []string{"not-an-id", enrollment.NewID()} {
		if code, _ := do(t, adm, "POST", e.url+"/console/trust/streams/"+bad+"/delete", url.Values{}, nil); code != http.StatusSeeOther {
			t.Fatalf("deleting %s: %d", bad, code)
		}
	}
	if st, _ := e.app.Store.Streams(e.ctx, ""); len(st) != 1 {
		t.Fatal("a bad delete removed a stream")
	}
	if code, _ := do(t, adm, "POST", e.url+"/console/trust/streams/"+id+"/delete", url.Values{}, nil); code != http.StatusSeeOther {
		t.Fatalf("an admin deleting a stream: %d", code)
	}
	if st, _ := e.app.Store.Streams(e.ctx, ""); len(st) != 0 {
		t.Fatal("the stream is still there")
	}
	events, _ := e.app.Store.ListAudit(e.ctx, enrollment.AuditFilter{Action: "ssf.stream.delete", TargetID: id})
	if len(events) != 1 {
		t.Fatalf("audit: %+v", events)
	}
}

// TestStreamLeaseIsOwned: a worker whose lease lapsed cannot end the
// lease another worker took since, and a failed push holds the stream
// even when new events arrive.
func TestStreamLeaseIsOwned(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		down := newSSFReceiver(t, e.url, "idp")
		down.setFail(http.StatusServiceUnavailable)
		tok := e.receiverToken("idp")
		id, _ := e.stream(tok, `{"delivery":{"method":"`+ssf.DeliveryPush+`","endpoint_url":"`+down.srv.URL+`"},"events_requested":["`+ssf.EventCompliance+`"]}`)
		if code, _ := e.api(tok, "POST", ssf.VerifyPath, `{"stream_id":"`+id+`"}`); code != 204 {
			t.Fatal("verify")
		}
		st := e.app.Store
		t0 := time.Now()
		a, err := st.ClaimStreams(e.ctx, 1, 10, t0, t0.Add(time.Minute))
		if err != nil || len(a) != 1 {
			t.Fatalf("A: %v %v", a, err)
		}
		b, _ := st.ClaimStreams(e.ctx, 1, 10, t0.Add(2*time.Minute), t0.Add(3*time.Minute))
		if len(b) != 1 {
			t.Fatal("B could not take a lapsed lease")
		}
		if err := st.ReleaseStream(e.ctx, id, a[0].LeaseUntil); err != nil {
			t.Fatal(err)
		}
		if c, _ := st.ClaimStreams(e.ctx, 1, 10, t0.Add(2*time.Minute+time.Second), t0.Add(4*time.Minute)); len(c) != 0 {
			t.Fatal("A's late release ended B's lease")
		}
		if err := st.ReleaseStream(e.ctx, id, b[0].LeaseUntil); err != nil {
			t.Fatal(err)
		}
		// The receiver is down: the push fails and holds the stream.
		e.work()
		if n := down.pushes(); n != 0 {
			t.Fatalf("%d pushes accepted by a receiver that is down", n)
		}
		_, r := e.trustedDevice("alice@example.com", "C02HOLD00001")
		e.work() // a new event does not cut the hold short
		if c, _ := st.ClaimStreams(e.ctx, 1, 10, time.Now(), time.Now().Add(time.Minute)); len(c) != 0 {
			t.Fatal("a new event made a held stream due")
		}
		if c, _ := st.ClaimStreams(e.ctx, 1, 10, time.Now().Add(time.Minute), time.Now().Add(2*time.Minute)); len(c) != 1 || len(c[0].SETs) != 2 ||
			c[0].SETs[1].EnrollmentID != r.ID {
			t.Fatalf("after the hold, the stream's SETs in order: %+v", c)
		}
	})
}
