package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"golang.org/x/crypto/acme"

	"github.com/vestibule-mdm/vestibule/attest/attesttest"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/server"
)

// TestACMEConformance drives the protocol with a maintained ACME client
// library, golang.org/x/crypto/acme, step by step through its public API:
// discovery, account (and looking it up again), order, authorization,
// challenge (device-attest-01, which the library supports with a
// payload), waiting, finalize, certificate download, and order state.
func TestACMEConformance(t *testing.T) {
	now := time.Now()
	ca, _ := attesttest.NewCA("Test", now)
	e := newEnvWith(t, "sqlite", []server.Option{server.WithAttestationRoots(ca.Pool())})
	r, sec, err := e.app.Reservations.ReserveAs(e.ctx, admin, "alice@example.com", enrollment.IdentityACME)
	if err != nil {
		t.Fatal(err)
	}
	accountKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := &acme.Client{Key: accountKey, DirectoryURL: e.url + "/acme/directory", HTTPClient: http.DefaultClient}
	dir, err := c.Discover(e.ctx)
	if err != nil || dir.OrderURL != e.url+"/acme/new-order" || dir.NonceURL == "" {
		t.Fatalf("directory: %+v %v", dir, err)
	}
	acct, err := c.Register(e.ctx, &acme.Account{}, acme.AcceptTOS)
	if err != nil || acct.Status != acme.StatusValid {
		t.Fatalf("register: %+v %v", acct, err)
	}
	again, err := c.GetReg(e.ctx, "")
	if err != nil || again.URI != acct.URI {
		t.Fatalf("look the account up by its key: %+v %v", again, err)
	}
	order, err := c.AuthorizeOrder(e.ctx, []acme.AuthzID{{Type: "permanent-identifier", Value: sec.Challenge}})
	if err != nil || order.Status != acme.StatusPending || len(order.AuthzURLs) != 1 {
		t.Fatalf("order: %+v %v", order, err)
	}
	authz, err := c.GetAuthorization(e.ctx, order.AuthzURLs[0])
	if err != nil || len(authz.Challenges) != 1 || authz.Challenges[0].Type != "device-attest-01" {
		t.Fatalf("authorization: %+v %v", authz, err)
	}
	chal, err := c.GetChallenge(e.ctx, authz.Challenges[0].URI)
	if err != nil || chal.Token == "" {
		t.Fatalf("challenge: %+v %v", chal, err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	chain, err := ca.Chain(attesttest.Leaf{Serial: "C02CONFORM01", UDID: "UDID-CONFORM", Nonce: []byte(chal.Token), Key: key.Public()}, now)
	if err != nil {
		t.Fatal(err)
	}
	att, _ := cbor.Marshal(map[string]any{"fmt": "apple", "attStmt": map[string]any{"x5c": chain}})
	chal.Payload, _ = json.Marshal(map[string]string{"attObj": base64.RawURLEncoding.EncodeToString(att)})
	if _, err := c.Accept(e.ctx, chal); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitAuthorization(e.ctx, authz.URI); err != nil {
		t.Fatal(err)
	}
	ready, err := c.WaitOrder(e.ctx, order.URI)
	if err != nil || ready.Status != acme.StatusReady {
		t.Fatalf("order after the challenge: %+v %v", ready, err)
	}
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: r.ID}}, key)
	ders, certURL, err := c.CreateOrderCert(e.ctx, ready.FinalizeURL, csr, true)
	if err != nil || len(ders) != 2 {
		t.Fatalf("finalize: %d certificates, %v", len(ders), err)
	}
	fetched, err := c.FetchCert(e.ctx, certURL, true)
	if err != nil || len(fetched) != 2 || string(fetched[0]) != string(ders[0]) {
		t.Fatalf("download: %v", err)
	}
	final, err := c.GetOrder(e.ctx, order.URI)
	if err != nil || final.Status != acme.StatusValid || final.CertURL != certURL {
		t.Fatalf("order at the end: %+v %v", final, err)
	}
	leaf, _ := x509.ParseCertificate(ders[0])
	if leaf.Subject.CommonName != r.ID || leaf.CheckSignatureFrom(e.app.CA.Cert) != nil {
		t.Fatalf("certificate: CN %s", leaf.Subject.CommonName)
	}
}
