package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
	"github.com/vestibule-mdm/vestibule/internal/testenv"
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
	if n, err := e.app.Trust.Issuer.Scan(e.ctx, false); err != nil || n != 0 {
		e.t.Fatalf("a pending device was owed a trust profile: %d, %v", n, err)
	}
	if _, err := e.app.Enrollments.Approve(e.ctx, admin, r.ID, "known laptop"); err != nil {
		e.t.Fatal(err)
	}
	if _, err := d.DrainCommands(e.ctx, 10); err != nil {
		e.t.Fatal(err)
	}
	if n, err := e.app.Trust.Issuer.Scan(e.ctx, true); err != nil || n != 1 {
		e.t.Fatalf("after approval: %d trust profiles queued, %v", n, err)
	}
	if n, _ := e.app.Trust.Issuer.Scan(e.ctx, false); n != 0 {
		e.t.Fatalf("a second scan queued %d more", n)
	}
	code, cmd, err := d.Connect(e.ctx, "Idle", "")
	e.expect("Connect", code, err, 200)
	if cmd == nil || cmd.RequestType != "InstallProfile" {
		e.t.Fatalf("approved device got %+v, want the trust profile", cmd)
	}
	if err := d.InstallTrustProfile(e.ctx, cmd); err != nil {
		e.t.Fatal(err)
	}
	// The trust profile's challenge is one-time: installing it again fails.
	again := *d
	if err := again.InstallTrustProfile(e.ctx, cmd); err == nil {
		e.t.Fatal("a trust challenge was used twice")
	}
	if code, next, err := d.Answer(e.ctx, cmd); err != nil || code != 200 || next != nil {
		e.t.Fatalf("acknowledging the trust profile: %d %v %+v", code, err, next)
	}
	return d, r
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
