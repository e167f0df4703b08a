package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// rawACME signs ACME requests by hand, to send what a correct client
// never would.
type rawACME struct {
	t    *testing.T
	base string
	key  *ecdsa.PrivateKey
	kid  string
}

func (c *rawACME) nonce() string {
	c.t.Helper()
	resp, err := http.Head(c.base + "/acme/new-nonce")
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("Replay-Nonce")
}

// post signs payload for url (the request goes to path) with the nonce
// given, or a fresh one when empty.
func (c *rawACME) post(path, url, nonce string, payload []byte, embedJWK bool) (int, string, http.Header) {
	c.t.Helper()
	if nonce == "" {
		nonce = c.nonce()
	}
	opts := &jose.SignerOptions{ExtraHeaders: map[jose.HeaderKey]any{"nonce": nonce, "url": url}}
	if embedJWK {
		opts.EmbedJWK = true
	} else {
		opts.ExtraHeaders["kid"] = c.kid
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: c.key}, opts)
	if err != nil {
		c.t.Fatal(err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		c.t.Fatal(err)
	}
	// POST-as-GET carries "payload":"", which the serializer leaves out.
	var msg map[string]any
	_ = json.Unmarshal([]byte(obj.FullSerialize()), &msg)
	if _, ok := msg["payload"]; !ok {
		msg["payload"] = ""
	}
	body, _ := json.Marshal(msg)
	return c.send(path, body, "application/jose+json")
}

func (c *rawACME) send(path string, body []byte, contentType string) (int, string, http.Header) {
	c.t.Helper()
	resp, err := http.Post(c.base+path, contentType, strings.NewReader(string(body)))
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func newRawACME(t *testing.T, base string) *rawACME {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := &rawACME{t: t, base: base, key: key}
	code, body, h := c.post("/acme/new-account", base+"/acme/new-account", "", []byte(`{"termsOfServiceAgreed":true}`), true)
	if code != 201 {
		t.Fatalf("new account: %d %s", code, body)
	}
	c.kid = h.Get("Location")
	return c
}

// TestACMEProtocolAttacks sends the ACME server what a correct client
// never would: each gets the RFC 8555 error and changes nothing.
func TestACMEProtocolAttacks(t *testing.T) {
	e := newEnv(t, "sqlite")
	alice := newRawACME(t, e.url)
	mallory := newRawACME(t, e.url)

	// The same key again is the same account.
	code, _, h := alice.post("/acme/new-account", e.url+"/acme/new-account", "", []byte(`{"onlyReturnExisting":true}`), true)
	if code != 200 || h.Get("Location") != alice.kid {
		t.Fatalf("existing account: %d %s", code, h.Get("Location"))
	}
	// An order for a real ACME reservation.
	r, sec, err := e.app.Reservations.ReserveAs(e.ctx, admin, "alice@example.com", enrollment.IdentityACME)
	if err != nil {
		t.Fatal(err)
	}
	code, body, h := alice.post("/acme/new-order", e.url+"/acme/new-order", "",
		[]byte(`{"identifiers":[{"type":"permanent-identifier","value":"`+sec.Challenge+`"}]}`), false)
	if code != 201 {
		t.Fatalf("new order: %d %s", code, body)
	}
	order := strings.TrimPrefix(h.Get("Location"), e.url)

	used := alice.nonce()
	if code, body, _ := alice.post(order, e.url+order, used, nil, false); code != 200 {
		t.Fatalf("POST-as-GET order: %d %s", code, body)
	}
	for _, tc := range []struct {
		name string
		do   func() (int, string, http.Header)
		want int
		typ  string
	}{
		{"a replayed nonce", func() (int, string, http.Header) { return alice.post(order, e.url+order, used, nil, false) }, 400, "badNonce"},
		{"an invented nonce", func() (int, string, http.Header) { return alice.post(order, e.url+order, "invented", nil, false) }, 400, "badNonce"},
		{"a signed url of another endpoint", func() (int, string, http.Header) {
			return alice.post(order, e.url+"/acme/new-order", "", nil, false)
		}, 401, "unauthorized"},
		{"another account's order", func() (int, string, http.Header) { return mallory.post(order, e.url+order, "", nil, false) }, 404, "malformed"},
		{"another account finalizing it", func() (int, string, http.Header) {
			return mallory.post(order+"/finalize", e.url+order+"/finalize", "", []byte(`{"csr":"AA"}`), false)
		}, 404, "malformed"},
		{"finalize before the challenge", func() (int, string, http.Header) {
			return alice.post(order+"/finalize", e.url+order+"/finalize", "", []byte(`{"csr":"AA"}`), false)
		}, 403, "orderNotReady"},
		{"a kid on new-account", func() (int, string, http.Header) {
			return alice.post("/acme/new-account", e.url+"/acme/new-account", "", []byte(`{}`), false)
		}, 400, "malformed"},
		{"a jwk on new-order", func() (int, string, http.Header) {
			return alice.post("/acme/new-order", e.url+"/acme/new-order", "", []byte(`{}`), true)
		}, 400, "malformed"},
		{"an unknown account", func() (int, string, http.Header) {
			ghost := *alice
			ghost.kid = e.url + "/acme/account/" + enrollment.NewID()
			return ghost.post("/acme/new-order", e.url+"/acme/new-order", "", []byte(`{}`), false)
		}, 400, "accountDoesNotExist"},
		{"a dns identifier", func() (int, string, http.Header) {
			return alice.post("/acme/new-order", e.url+"/acme/new-order", "", []byte(`{"identifiers":[{"type":"dns","value":"example.com"}]}`), false)
		}, 400, "unsupportedIdentifier"},
		{"two identifiers", func() (int, string, http.Header) {
			return alice.post("/acme/new-order", e.url+"/acme/new-order", "",
				[]byte(`{"identifiers":[{"type":"permanent-identifier","value":"a"},{"type":"permanent-identifier","value":"b"}]}`), false)
		}, 400, "unsupportedIdentifier"},
		{"an unknown ClientIdentifier", func() (int, string, http.Header) {
			return alice.post("/acme/new-order", e.url+"/acme/new-order", "",
				[]byte(`{"identifiers":[{"type":"permanent-identifier","value":"guessed"}]}`), false)
		}, 403, "rejectedIdentifier"},
		{"the wrong content type", func() (int, string, http.Header) {
			return alice.send("/acme/new-order", []byte(`{}`), "application/json")
		},
			415, "malformed"},
		{"not a JWS", func() (int, string, http.Header) {
			return alice.send("/acme/new-order", []byte(`{"protected":1}`), "application/jose+json")
		}, 400, "malformed"},
		{"an oversized body", func() (int, string, http.Header) {
			return alice.send("/acme/new-order", []byte(strings.Repeat("x", 70<<10)), "application/jose+json")
		}, 413, "malformed"},
	} {
		code, body, h := tc.do()
		var p struct{ Type string }
		_ = json.Unmarshal([]byte(body), &p)
		if code != tc.want || p.Type != "urn:ietf:params:acme:error:"+tc.typ {
			t.Errorf("%s: %d %s, want %d %s", tc.name, code, body, tc.want, tc.typ)
		}
		if h.Get("Replay-Nonce") == "" {
			t.Errorf("%s: no Replay-Nonce", tc.name)
		}
	}
	res, _ := e.app.Reservations.Get(e.ctx, r.ID)
	if res.ChallengeUsedAt != nil {
		t.Fatal("the attacks used the ClientIdentifier")
	}
	// Every refusal is on record (aggregated, so flush first).
	if err := e.app.Refusals.Flush(e.ctx, true); err != nil {
		t.Fatal(err)
	}
	// The aggregator writes the first refusals from one source one by one,
	// then a row counting the rest.
	events, _ := e.app.Store.ListAudit(e.ctx, enrollment.AuditFilter{Action: "acme.refuse"})
	counted := 0
	for _, ev := range events {
		var more int
		if _, err := fmt.Sscanf(ev.Detail, "aggregated: %d more", &more); err == nil {
			counted += more
		} else {
			counted++
		}
	}
	if counted < 15 {
		t.Errorf("%d refusals on record for 15 refused requests: %+v", counted, events)
	}
}
