package checkin

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/micromdm/plist"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/mdm"
)

// now is the real time: the Mdm-Signature carries the signing time.
var now = time.Now().UTC().Truncate(time.Second)

// pki is a CA and the device certificates it issued, recorded as the
// store would.
type pki struct {
	ca      *x509.Certificate
	caKey   *ecdsa.PrivateKey
	records map[string]CertRecord
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return &pki{ca: ca, caKey: key, records: map[string]CertRecord{}}
}

type device struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// issue makes a device certificate for reservation resID, signed by the
// CA (or by itself when selfSigned), recorded unless unrecorded.
func (p *pki) issue(t testing.TB, resID string, selfSigned, unrecorded bool) device {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: resID}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(12 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	parent, signer := p.ca, any(p.caKey)
	if selfSigned {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	if !unrecorded {
		sum := sha256.Sum256(der)
		p.records[hex.EncodeToString(sum[:])] = CertRecord{ReservationID: resID, NotAfter: cert.NotAfter}
	}
	return device{cert: cert, key: key}
}

func (p *pki) record(d device) *CertRecord {
	sum := sha256.Sum256(d.cert.Raw)
	r := p.records[hex.EncodeToString(sum[:])]
	return &r
}

func (p *pki) set(d device, r CertRecord) {
	sum := sha256.Sum256(d.cert.Raw)
	p.records[hex.EncodeToString(sum[:])] = r
}

func (p *pki) CertificateBySHA256(_ context.Context, fp string) (CertRecord, error) {
	r, ok := p.records[fp]
	if !ok {
		return CertRecord{}, enrollment.ErrNotFound
	}
	return r, nil
}

// signedRequest is a device request with an Mdm-Signature over body.
func signedRequest(t testing.TB, d device, path, contentType string, body []byte) *http.Request {
	t.Helper()
	r := httptest.NewRequest("PUT", path, bytes.NewReader(body))
	r.Header.Set("Content-Type", contentType)
	if d.cert != nil {
		sig, err := mdm.Sign(body, d.cert, d.key)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set(mdm.SignatureHeader, sig)
	}
	return r
}

func TestIdentify(t *testing.T) {
	p := newPKI(t)
	good := p.issue(t, "res-1", false, false)
	body := []byte("<plist/>")
	proxy := TrustedProxy{Header: "Client-Cert", Networks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	id := NewIdentifier(p.ca, p, proxy, func() time.Time { return now })
	fromProxy := func(value, peer string) *http.Request {
		r := httptest.NewRequest("PUT", "/mdm/checkin", nil)
		r.RemoteAddr = peer + ":4711"
		r.Header.Set("Client-Cert", value)
		return r
	}
	rfc9440 := ":" + base64.StdEncoding.EncodeToString(good.cert.Raw) + ":"
	escapedPEM := url.QueryEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: good.cert.Raw})))
	for _, tc := range []struct {
		name    string
		req     func() *http.Request
		body    []byte
		arrange func()
		ok      bool
	}{
		{"ok/Mdm-Signature", func() *http.Request { return signedRequest(t, good, "/", "", body) }, body, nil, true},
		{"error/signature over another body", func() *http.Request { return signedRequest(t, good, "/", "", []byte("<other/>")) }, body, nil, false},
		{"error/no signature, no certificate", func() *http.Request { return httptest.NewRequest("PUT", "/", nil) }, body, nil, false},
		{"error/self-signed", func() *http.Request { return signedRequest(t, p.issue(t, "res-1", true, false), "/", "", body) }, body, nil, false},
		{"error/not on record", func() *http.Request { return signedRequest(t, p.issue(t, "res-1", false, true), "/", "", body) }, body, nil, false},
		{"error/revoked", func() *http.Request {
			d := p.issue(t, "res-2", false, false)
			r := *p.record(d)
			revoked := now.Add(-time.Minute)
			r.RevokedAt = &revoked
			p.set(d, r)
			return signedRequest(t, d, "/", "", body)
		}, body, nil, false},
		{"error/expired record", func() *http.Request {
			d := p.issue(t, "res-3", false, false)
			r := *p.record(d)
			r.NotAfter = now.Add(-time.Second)
			p.set(d, r)
			return signedRequest(t, d, "/", "", body)
		}, body, nil, false},
		{"ok/TLS client certificate", func() *http.Request {
			r := httptest.NewRequest("PUT", "/", nil)
			r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{good.cert}}
			return r
		}, body, nil, true},
		{"ok/RFC 9440 Client-Cert from a trusted proxy", func() *http.Request { return fromProxy(rfc9440, "10.1.2.3") }, body, nil, true},
		{"ok/URL-escaped PEM from a trusted proxy", func() *http.Request { return fromProxy(escapedPEM, "10.1.2.3") }, body, nil, true},
		{"error/Client-Cert from an untrusted address", func() *http.Request { return fromProxy(rfc9440, "192.0.2.9") }, body, nil, false},
		{"ok/unpadded RFC 9440 Client-Cert", func() *http.Request {
			return fromProxy(":"+base64.RawStdEncoding.EncodeToString(good.cert.Raw)+":", "10.1.2.3")
		}, body, nil, true},
		{"error/two Client-Cert headers (one the client's)", func() *http.Request {
			r := fromProxy(rfc9440, "10.1.2.3")
			r.Header.Add("Client-Cert", rfc9440)
			return r
		}, body, nil, false},
		{"error/Client-Cert not base64", func() *http.Request { return fromProxy(":%%%:", "10.1.2.3") }, body, nil, false},
		{"error/Client-Cert not a certificate", func() *http.Request { return fromProxy(":aGVsbG8=:", "10.1.2.3") }, body, nil, false},
		{"error/oversized Client-Cert", func() *http.Request { return fromProxy(":"+strings.Repeat("A", 20<<10)+":", "10.1.2.3") }, body, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := id.Identify(context.Background(), tc.req(), tc.body)
			if tc.ok && (err != nil || got.Record.ReservationID != "res-1") {
				t.Fatalf("Identify: %v %+v", err, got.Record)
			}
			if !tc.ok && !errors.Is(err, ErrNoIdentity) {
				t.Fatalf("Identify = %v, want ErrNoIdentity", err)
			}
		})
	}
}

// fakeGate is the approval gate with enrollments in a map.
type fakeGate struct {
	enrollments map[string]enrollment.Enrollment
	authErr     error
	claims      []enrollment.Claim
	pushes      []enrollment.PushInfo
	seen        int
	answers     []enrollment.AttestationAnswer
	attested    []enrollment.Enrollment
	checkedOut  []enrollment.Enrollment
}

func (g *fakeGate) Authenticate(_ context.Context, c enrollment.Claim) (enrollment.Enrollment, error) {
	g.claims = append(g.claims, c)
	return g.enrollments[c.CertReservationID], g.authErr
}
func (g *fakeGate) Get(_ context.Context, id string) (enrollment.Enrollment, error) {
	if strings.HasPrefix(id, "broken") {
		return enrollment.Enrollment{}, errors.New("database unreachable")
	}
	e, ok := g.enrollments[id]
	if !ok {
		return e, enrollment.ErrNotFound
	}
	return e, nil
}
func (g *fakeGate) TokenUpdate(_ context.Context, id string, p enrollment.PushInfo) error {
	g.pushes = append(g.pushes, p)
	return nil
}
func (g *fakeGate) CheckOut(_ context.Context, e enrollment.Enrollment, _ string) error {
	g.checkedOut = append(g.checkedOut, e)
	return nil
}
func (g *fakeGate) Seen(context.Context, string, *time.Time) error { g.seen++; return nil }
func (g *fakeGate) Attest(_ context.Context, e enrollment.Enrollment, a enrollment.AttestationAnswer) (enrollment.Enrollment, error) {
	g.answers = append(g.answers, a)
	g.attested = append(g.attested, e)
	return e, nil
}

type fakeQueue struct {
	next    []byte
	err     error
	reports []enrollment.Report
	states  []enrollment.State
}

func (q *fakeQueue) Next(_ context.Context, _ string, state enrollment.State, r enrollment.Report) (enrollment.Command, error) {
	q.reports = append(q.reports, r)
	q.states = append(q.states, state)
	if q.err != nil {
		return enrollment.Command{}, q.err
	}
	if q.next == nil {
		return enrollment.Command{}, enrollment.ErrNotFound
	}
	return enrollment.Command{Body: q.next}, nil
}

type auditLog struct{ events []enrollment.AuditEvent }

func (a *auditLog) AppendAudit(_ context.Context, ev enrollment.AuditEvent) error {
	a.events = append(a.events, ev)
	return nil
}

func plistBody(t testing.TB, v map[string]any) []byte {
	t.Helper()
	b, err := plist.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEndpoints(t *testing.T) {
	p := newPKI(t)
	pendingDev, approvedDev, deniedDev := p.issue(t, "pending", false, false), p.issue(t, "approved", false, false), p.issue(t, "denied", false, false)
	askedDev := p.issue(t, "asked", false, false)
	enrollments := map[string]enrollment.Enrollment{
		"pending":      {ID: "pending", State: enrollment.StatePending, Facts: enrollment.DeviceFacts{UDID: "UDID-P"}},
		"approved":     {ID: "approved", State: enrollment.StateApproved, Facts: enrollment.DeviceFacts{UDID: "UDID-A", Serial: "SER-A"}},
		"denied-since": {ID: "denied-since", State: enrollment.StateDenied, Facts: enrollment.DeviceFacts{UDID: "UDID-S"}},
		"asked-denied-since": {ID: "asked-denied-since", State: enrollment.StateDenied, Facts: enrollment.DeviceFacts{UDID: "UDID-R"},
			Attestation: enrollment.Attestation{Status: enrollment.AttestAsked}, AttestCommand: "Q2"},
		"denied": {ID: "denied", State: enrollment.StateDenied, Facts: enrollment.DeviceFacts{UDID: "UDID-D"}},
		"asked": {ID: "asked", State: enrollment.StatePending, Facts: enrollment.DeviceFacts{UDID: "UDID-Q"},
			Attestation: enrollment.Attestation{Status: enrollment.AttestAsked}, AttestCommand: "Q1", AttestNonce: "N1"},
	}
	// Devices whose records carry their enrollment's state, read with the
	// certificate as the store does: the rare paths read the whole
	// enrollment, and judge it again.
	withState := func(d device, st enrollment.CheckinView, noCommands bool) device {
		r := *p.record(d)
		r.Enrollment, r.NoCommands = &st, noCommands
		p.set(d, r)
		return d
	}
	leanIdle := withState(p.issue(t, "approved", false, false), enrollments["approved"].CheckinView(), true)
	leanBusy := withState(p.issue(t, "approved", false, false), enrollments["approved"].CheckinView(), false)
	leanAsked := withState(p.issue(t, "asked", false, false), enrollments["asked"].CheckinView(), false)
	leanStale := withState(p.issue(t, "denied-since", false, false),
		enrollment.CheckinView{ID: "denied-since", State: enrollment.StateApproved, UDID: "UDID-S"}, true)
	leanStaleAsked := withState(p.issue(t, "asked-denied-since", false, false), enrollment.CheckinView{ID: "asked-denied-since",
		State: enrollment.StatePending, UDID: "UDID-R", AttestStatus: enrollment.AttestAsked, AttestCommand: "Q2"}, false)
	leanGone := withState(p.issue(t, "gone", false, false), enrollment.CheckinView{ID: "gone", State: enrollment.StateApproved, UDID: "UDID-G"}, true)
	leanBroken := withState(p.issue(t, "broken", false, false), enrollment.CheckinView{ID: "broken", State: enrollment.StateApproved, UDID: "UDID-B"}, true)
	notYet, brokenDev := p.issue(t, "not-yet", false, false), p.issue(t, "broken-read", false, false)
	auth := func(udid string) []byte {
		return plistBody(t, map[string]any{"MessageType": "Authenticate", "UDID": udid, "Topic": "t", "SerialNumber": "S"})
	}
	tokenUpdate := func(udid string) []byte {
		return plistBody(t, map[string]any{"MessageType": "TokenUpdate", "UDID": udid, "Topic": "t", "Token": []byte{1, 2}, "PushMagic": "m"})
	}
	report := func(udid, status string) []byte { return plistBody(t, map[string]any{"UDID": udid, "Status": status}) }
	const ct, rt = CheckinContentType, "application/x-apple-aspen-mdm"
	for _, tc := range []struct {
		name    string
		req     func() *http.Request
		authErr error
		next    []byte
		status  int
		check   func(t *testing.T, g *fakeGate, q *fakeQueue, a *auditLog, body string)
	}{
		{"ok/Authenticate passes the token and the certificate's reservation", func() *http.Request {
			return signedRequest(t, pendingDev, "/mdm/checkin?t=TOKEN", ct, auth("UDID-P"))
		}, nil, nil, 200, func(t *testing.T, g *fakeGate, _ *fakeQueue, _ *auditLog, _ string) {
			if len(g.claims) != 1 || g.claims[0].Token != "TOKEN" || g.claims[0].CertReservationID != "pending" || g.claims[0].Facts.UDID != "UDID-P" {
				t.Fatalf("%+v", g.claims)
			}
		}},
		{"error/a refused claim is 401, audited by the gate only", func() *http.Request {
			return signedRequest(t, pendingDev, "/mdm/checkin?t=x", ct, auth("UDID-P"))
		}, enrollment.ErrForbidden, nil, 401, func(t *testing.T, _ *fakeGate, _ *fakeQueue, a *auditLog, _ string) {
			if len(a.events) != 0 {
				t.Fatalf("audited twice: %+v", a.events)
			}
		}},
		{"error/token signer down is 503", func() *http.Request {
			return signedRequest(t, pendingDev, "/mdm/checkin?t=x", ct, auth("UDID-P"))
		}, enrollment.ErrSignerUnavailable, nil, 503, nil},
		{"error/wrong content type, audited with a bounded detail", func() *http.Request {
			return signedRequest(t, pendingDev, "/mdm/checkin", "text/"+strings.Repeat("x", 5000), auth("UDID-P"))
		}, nil, nil, 415, func(t *testing.T, g *fakeGate, _ *fakeQueue, a *auditLog, _ string) {
			if len(g.claims) != 0 || len(a.events) != 1 || len(a.events[0].Detail) > 200 {
				t.Fatalf("claims %d, audit %+v", len(g.claims), a.events)
			}
		}},
		{"error/oversized body", func() *http.Request {
			return signedRequest(t, pendingDev, "/mdm/checkin", ct, bytes.Repeat([]byte("A"), mdm.MaxCheckinBody+1))
		}, nil, nil, 413, nil},
		{"error/unsigned", func() *http.Request {
			return signedRequest(t, device{}, "/mdm/checkin", ct, auth("UDID-P"))
		}, nil, nil, 401, func(t *testing.T, g *fakeGate, _ *fakeQueue, _ *auditLog, _ string) {
			if len(g.claims) != 0 {
				t.Fatal("an unsigned body reached the gate")
			}
		}},
		{"error/malformed plist", func() *http.Request {
			return signedRequest(t, pendingDev, "/mdm/checkin", ct, []byte("bplist00garbage"))
		}, nil, nil, 400, nil},
		{"ok/TokenUpdate of a pending device", func() *http.Request {
			return signedRequest(t, pendingDev, "/mdm/checkin", ct, tokenUpdate("UDID-P"))
		}, nil, nil, 200, func(t *testing.T, g *fakeGate, _ *fakeQueue, _ *auditLog, _ string) {
			if len(g.pushes) != 1 || g.pushes[0].Token != "0102" {
				t.Fatalf("%+v", g.pushes)
			}
		}},
		{"error/the body speaks for another device", func() *http.Request {
			return signedRequest(t, pendingDev, "/mdm/checkin", ct, tokenUpdate("UDID-A"))
		}, nil, nil, 401, nil},
		{"error/a denied device", func() *http.Request {
			return signedRequest(t, deniedDev, "/mdm/checkin", ct, tokenUpdate("UDID-D"))
		}, nil, nil, 401, nil},
		{"error/user channel", func() *http.Request {
			return signedRequest(t, pendingDev, "/mdm/checkin", ct, plistBody(t, map[string]any{"MessageType": "UserAuthenticate", "UDID": "UDID-P", "UserID": "u"}))
		}, nil, nil, 410, nil},
		{"ok/a pending device asks the queue as pending (which gives it only the question)", func() *http.Request {
			return signedRequest(t, pendingDev, "/mdm/connect", rt, report("UDID-P", "Idle"))
		}, nil, []byte("<plist>question</plist>"), 200, func(t *testing.T, g *fakeGate, q *fakeQueue, _ *auditLog, body string) {
			if len(q.states) != 1 || q.states[0] != enrollment.StatePending || g.seen != 1 || len(g.answers) != 0 {
				t.Fatalf("queue asked for %v, seen %d, answers %d", q.states, g.seen, len(g.answers))
			}
		}},
		{"ok/the answer to the attestation question reaches the gate", func() *http.Request {
			return signedRequest(t, askedDev, "/mdm/connect", rt, plistBody(t, map[string]any{"UDID": "UDID-Q", "Status": "Acknowledged",
				"CommandUUID": "Q1", "QueryResponses": map[string]any{"DevicePropertiesAttestation": []any{[]byte{0x30, 0x03}, []byte{0x30, 0x04}}}}))
		}, nil, nil, 200, func(t *testing.T, g *fakeGate, _ *fakeQueue, _ *auditLog, _ string) {
			if len(g.answers) != 1 || !g.answers[0].Answered || len(g.answers[0].Chain) != 2 || g.answers[0].Status != "Acknowledged" {
				t.Fatalf("%+v", g.answers)
			}
		}},
		{"ok/a pending device's answer without attestation is unsupported", func() *http.Request {
			return signedRequest(t, askedDev, "/mdm/connect", rt, plistBody(t, map[string]any{"UDID": "UDID-Q", "Status": "Acknowledged",
				"CommandUUID": "Q1", "QueryResponses": map[string]any{"SerialNumber": "S"}}))
		}, nil, nil, 200, func(t *testing.T, g *fakeGate, _ *fakeQueue, _ *auditLog, _ string) {
			if len(g.answers) != 1 || g.answers[0].Answered {
				t.Fatalf("%+v", g.answers)
			}
		}},
		{"ok/a report for another command is no answer", func() *http.Request {
			return signedRequest(t, askedDev, "/mdm/connect", rt, plistBody(t, map[string]any{"UDID": "UDID-Q", "Status": "Acknowledged",
				"CommandUUID": "OTHER", "QueryResponses": map[string]any{"DevicePropertiesAttestation": []any{[]byte{0x30, 0x03}}}}))
		}, nil, nil, 200, func(t *testing.T, g *fakeGate, _ *fakeQueue, _ *auditLog, _ string) {
			if len(g.answers) != 0 {
				t.Fatalf("%+v", g.answers)
			}
		}},
		{"ok/an idle report is no answer", func() *http.Request {
			return signedRequest(t, askedDev, "/mdm/connect", rt, report("UDID-Q", "Idle"))
		}, nil, nil, 200, func(t *testing.T, g *fakeGate, _ *fakeQueue, _ *auditLog, _ string) {
			if len(g.answers) != 0 {
				t.Fatalf("%+v", g.answers)
			}
		}},
		{"ok/an approved device gets its next command", func() *http.Request {
			return signedRequest(t, approvedDev, "/mdm/connect", rt, report("UDID-A", "Idle"))
		}, nil, []byte("<plist>command</plist>"), 200, func(t *testing.T, _ *fakeGate, q *fakeQueue, _ *auditLog, body string) {
			if body != "<plist>command</plist>" || len(q.reports) != 1 || q.reports[0].Status != "Idle" {
				t.Fatalf("body %q, reports %+v", body, q.reports)
			}
		}},
		{"ok/a user channel's report gets no device command and records nothing", func() *http.Request {
			return signedRequest(t, approvedDev, "/mdm/connect", rt, plistBody(t, map[string]any{"UDID": "UDID-A", "UserID": "u", "Status": "Acknowledged",
				"CommandUUID": "C1"}))
		}, nil, []byte("<plist>command</plist>"), 200, func(t *testing.T, g *fakeGate, q *fakeQueue, _ *auditLog, body string) {
			if body != "" || len(q.reports) != 0 || g.seen != 0 {
				t.Fatalf("body %q, reports %+v, seen %d", body, q.reports, g.seen)
			}
		}},
		{"ok/an approved device with nothing queued", func() *http.Request {
			return signedRequest(t, approvedDev, "/mdm/connect", rt, report("UDID-A", "Idle"))
		}, nil, nil, 200, nil},
		{"ok/lean/an idle device with nothing waiting is not asked about its queue", func() *http.Request {
			return signedRequest(t, leanIdle, "/mdm/connect", rt, report("UDID-A", "Idle"))
		}, nil, []byte("<plist>command</plist>"), 200, func(t *testing.T, g *fakeGate, q *fakeQueue, _ *auditLog, body string) {
			if body != "" || len(q.reports) != 0 || g.seen != 1 {
				t.Fatalf("body %q, reports %+v, seen %d", body, q.reports, g.seen)
			}
		}},
		{"ok/lean/an idle device with commands waiting gets the next", func() *http.Request {
			return signedRequest(t, leanBusy, "/mdm/connect", rt, report("UDID-A", "Idle"))
		}, nil, []byte("<plist>command</plist>"), 200, func(t *testing.T, _ *fakeGate, q *fakeQueue, _ *auditLog, body string) {
			if body != "<plist>command</plist>" || len(q.states) != 1 || q.states[0] != enrollment.StateApproved {
				t.Fatalf("body %q, states %+v", body, q.states)
			}
		}},
		{"error/lean/the body speaks for another device", func() *http.Request {
			return signedRequest(t, leanIdle, "/mdm/connect", rt, report("UDID-P", "Idle"))
		}, nil, nil, 401, nil},
		{"ok/lean/a check-out is handed the whole enrollment", func() *http.Request {
			return signedRequest(t, leanIdle, "/mdm/checkin", ct, plistBody(t, map[string]any{"MessageType": "CheckOut", "UDID": "UDID-A", "Topic": "t"}))
		}, nil, nil, 200, func(t *testing.T, g *fakeGate, _ *fakeQueue, _ *auditLog, _ string) {
			if len(g.checkedOut) != 1 || g.checkedOut[0].Facts.Serial != "SER-A" {
				t.Fatalf("%+v", g.checkedOut)
			}
		}},
		{"error/lean/a check-out of an enrollment denied since the record was read", func() *http.Request {
			return signedRequest(t, leanStale, "/mdm/checkin", ct, plistBody(t, map[string]any{"MessageType": "CheckOut", "UDID": "UDID-S", "Topic": "t"}))
		}, nil, nil, 401, func(t *testing.T, g *fakeGate, _ *fakeQueue, _ *auditLog, _ string) {
			if len(g.checkedOut) != 0 {
				t.Fatalf("%+v", g.checkedOut)
			}
		}},
		{"ok/lean/the attestation answer is handed the whole enrollment", func() *http.Request {
			return signedRequest(t, leanAsked, "/mdm/connect", rt, plistBody(t, map[string]any{"UDID": "UDID-Q", "Status": "Acknowledged",
				"CommandUUID": "Q1", "QueryResponses": map[string]any{"DevicePropertiesAttestation": []any{[]byte{0x30, 0x03}}}}))
		}, nil, nil, 200, func(t *testing.T, g *fakeGate, _ *fakeQueue, _ *auditLog, _ string) {
			if len(g.attested) != 1 || g.attested[0].AttestNonce != "N1" || len(g.answers) != 1 {
				t.Fatalf("%+v", g.attested)
			}
		}},
		{"error/lean/an attestation answer of an enrollment denied since the record was read", func() *http.Request {
			return signedRequest(t, leanStaleAsked, "/mdm/connect", rt, plistBody(t, map[string]any{"UDID": "UDID-R", "Status": "Acknowledged",
				"CommandUUID": "Q2", "QueryResponses": map[string]any{"DevicePropertiesAttestation": []any{[]byte{0x30, 0x03}}}}))
		}, nil, nil, 401, func(t *testing.T, g *fakeGate, _ *fakeQueue, _ *auditLog, _ string) {
			if len(g.attested) != 0 {
				t.Fatalf("%+v", g.attested)
			}
		}},
		{"error/lean/a check-out of an enrollment gone since the record was read", func() *http.Request {
			return signedRequest(t, leanGone, "/mdm/checkin", ct, plistBody(t, map[string]any{"MessageType": "CheckOut", "UDID": "UDID-G", "Topic": "t"}))
		}, nil, nil, 401, nil},
		{"error/lean/a check-out whose enrollment cannot be read is 500", func() *http.Request {
			return signedRequest(t, leanBroken, "/mdm/checkin", ct, plistBody(t, map[string]any{"MessageType": "CheckOut", "UDID": "UDID-B", "Topic": "t"}))
		}, nil, nil, 500, nil},
		{"error/a certificate whose reservation has no enrollment yet", func() *http.Request {
			return signedRequest(t, notYet, "/mdm/checkin", ct, tokenUpdate("UDID-N"))
		}, nil, nil, 401, nil},
		{"error/an enrollment that cannot be read is 500", func() *http.Request {
			return signedRequest(t, brokenDev, "/mdm/connect", rt, report("UDID-B", "Idle"))
		}, nil, nil, 500, nil},
		{"error/a report without a status", func() *http.Request {
			return signedRequest(t, approvedDev, "/mdm/connect", rt, plistBody(t, map[string]any{"UDID": "UDID-A"}))
		}, nil, nil, 400, nil},
		{"error/a denied device's report", func() *http.Request {
			return signedRequest(t, deniedDev, "/mdm/connect", rt, report("UDID-D", "Idle"))
		}, nil, []byte("<plist/>"), 401, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &fakeGate{enrollments: enrollments, authErr: tc.authErr}
			q := &fakeQueue{next: tc.next}
			a := &auditLog{}
			h, err := New(Options{Gate: g, Queue: q, Certs: p, Audit: a, CA: p.ca, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			mux := http.NewServeMux()
			h.Routes(mux)
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, tc.req())
			if rec.Code != tc.status {
				t.Fatalf("HTTP %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.status == 503 && rec.Header().Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
			if tc.check != nil {
				tc.check(t, g, q, a, rec.Body.String())
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	p := newPKI(t)
	full := Options{Gate: &fakeGate{}, Queue: &fakeQueue{}, Certs: p, Audit: &auditLog{}, CA: p.ca}
	for name, o := range map[string]Options{
		"no gate": {Queue: full.Queue, Certs: p, Audit: full.Audit, CA: p.ca}, "no queue": {Gate: full.Gate, Certs: p, Audit: full.Audit, CA: p.ca},
		"no certs": {Gate: full.Gate, Queue: full.Queue, Audit: full.Audit, CA: p.ca}, "no audit": {Gate: full.Gate, Queue: full.Queue, Certs: p, CA: p.ca},
		"no CA": {Gate: full.Gate, Queue: full.Queue, Certs: p, Audit: full.Audit},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(full); err != nil {
		t.Fatal(err)
	}
}

// TestVerifiedCachesKeepTheWindow: a chain or a signature verified once is
// not verified again, but only inside the window in which the verification
// holds; what failed is never remembered; a remembered signature answers
// only for the very bytes it was verified over.
func TestVerifiedCachesKeepTheWindow(t *testing.T) {
	p := newPKI(t)
	d := p.issue(t, "res-1", false, false)
	r := *p.record(d)
	r.NotAfter = now.Add(365 * 24 * time.Hour) // the record alone would not stop it
	p.set(d, r)
	clock := now
	id := NewIdentifier(p.ca, p, TrustedProxy{}, func() time.Time { return clock })
	body := []byte("<plist/>")
	req := signedRequest(t, d, "/", "", body)
	for range 2 {
		got, err := id.Identify(context.Background(), req, body)
		if err != nil || got.Record.ReservationID != "res-1" {
			t.Fatalf("Identify: %v %+v", err, got)
		}
	}
	sum := sha256.Sum256(d.cert.Raw)
	if !id.verified.chainHolds(sum, clock) || id.verified.signatures.len() != 1 {
		t.Fatal("the verified chain and signature were not remembered")
	}
	key, _ := signatureKeyOf(req, body)
	if fp, ok := id.verified.signatures.get(key); !ok || fp != sum || !id.verified.chainHolds(fp, clock) {
		t.Fatal("the second identical request was not answered from the signature cache")
	}

	// The same signature over other bytes is verified, and refused.
	for _, other := range [][]byte{[]byte("<plist/> "), []byte("<plist>"), nil} {
		if _, err := id.Identify(context.Background(), req, other); !errors.Is(err, ErrNoIdentity) {
			t.Errorf("signature over %q accepted for %q: %v", body, other, err)
		}
	}
	// Outside the window, neither cache answers.
	for name, at := range map[string]time.Time{
		"after the certificate expired": d.cert.NotAfter.Add(time.Second),
		"before it is valid":            d.cert.NotBefore.Add(-time.Second),
	} {
		clock = at
		if _, err := id.Identify(context.Background(), signedRequest(t, d, "/", "", body), body); !errors.Is(err, ErrNoIdentity) {
			t.Errorf("%s: %v", name, err)
		}
	}
	clock = now
	// Revocation is read every time, cached or not.
	revoked := now.Add(-time.Minute)
	r.RevokedAt = &revoked
	p.set(d, r)
	if _, err := id.Identify(context.Background(), req, body); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("revoked after being cached: %v", err)
	}

	// A certificate refused for its record (revoked, never recorded) is
	// not remembered either: it cannot push real devices out.
	gone := p.issue(t, "res-9", false, false)
	gr := *p.record(gone)
	gr.RevokedAt = &revoked
	p.set(gone, gr)
	unrecorded := p.issue(t, "res-8", false, true)
	for _, x := range []device{gone, unrecorded} {
		if _, err := id.Identify(context.Background(), signedRequest(t, x, "/", "", body), body); !errors.Is(err, ErrNoIdentity) {
			t.Fatalf("refused certificate accepted: %v", err)
		}
		if id.verified.chainHolds(sha256.Sum256(x.cert.Raw), now) {
			t.Fatal("a refused certificate's chain was remembered")
		}
	}
	if id.verified.signatures.len() != 1 {
		t.Fatalf("%d signatures remembered, want 1", id.verified.signatures.len())
	}

	forged := p.issue(t, "res-1", true, false)
	for range 2 {
		if _, err := id.Identify(context.Background(), signedRequest(t, forged, "/", "", body), body); !errors.Is(err, ErrNoIdentity) {
			t.Fatalf("self-signed: %v", err)
		}
	}
	if id.verified.chainHolds(sha256.Sum256(forged.cert.Raw), now) || id.verified.signatures.len() != 1 {
		t.Fatal("a certificate that failed was remembered")
	}

	// Bounded: a cache never holds more than its maximum.
	c := newBounded[window](3)
	for i := range 10 {
		c.put([32]byte{byte(i)}, window{})
	}
	if c.len() != 3 {
		t.Fatalf("%d entries, max 3", c.len())
	}
	if signatureKey("ab", []byte("c")) == signatureKey("a", []byte("bc")) {
		t.Fatal("the signature key is ambiguous")
	}
}

// TestLogReasonIsCut: a refusal quoting megabytes of a device's value is
// logged in a few hundred bytes, and still valid UTF-8 where it is cut.
func TestLogReasonIsCut(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason string
		want   int
	}{
		{"short", "plist refused: nesting deeper than 16", len("plist refused: nesting deeper than 16")},
		{"a huge value", "cannot unmarshal " + strings.Repeat("é", 3<<20), 512 + len("… (cut)")},
	} {
		got := logReason(errors.New(tc.reason))
		if len(got) > tc.want || !utf8.ValidString(got) || !strings.HasPrefix(tc.reason, strings.TrimSuffix(got, "… (cut)")) {
			t.Errorf("%s: %d bytes, valid %v", tc.name, len(got), utf8.ValidString(got))
		}
	}
}
