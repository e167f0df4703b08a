package ssf

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

func TestSubjectKey(t *testing.T) {
	tr := &Transmitter{o: Options{Issuer: "https://mdm.example.com"}}
	for _, tc := range []struct {
		name, subject, key string
	}{
		{"email", `{"format":"email","email":" Alice@Example.com"}`, "email:alice@example.com"},
		{"device by iss_sub", `{"format":"iss_sub","iss":"https://mdm.example.com","sub":"dev-1"}`, "device:dev-1"},
		{"device by opaque", `{"format":"opaque","id":"dev-1"}`, "device:dev-1"},
		{"complex with a device", `{"format":"complex","device":{"format":"opaque","id":"dev-2"}}`, "device:dev-2"},
		{"complex with a user", `{"format":"complex","user":{"format":"email","email":"bob@example.com"}}`, "email:bob@example.com"},
		{"another issuer's device", `{"format":"iss_sub","iss":"https://evil.example","sub":"dev-1"}`, ""},
		{"complex in complex", `{"format":"complex","device":{"format":"complex","device":{"format":"opaque","id":"x"}}}`, ""},
		{"complex in complex, escaped", `{"format":"complex","device":{"format":"compl\u0065x","device":{"format":"opaque","id":"x"}}}`, ""},
		{"oversized", `{"format":"email","email":"` + strings.Repeat("a", 3000) + `@b"}`, ""},
		{"phone number", `{"format":"phone_number","phone_number":"+1"}`, ""},
		{"no format", `{"email":"a@b"}`, ""},
		{"not an object", `"alice@example.com"`, ""},
		{"empty", ``, ""},
		{"overlong id", `{"format":"opaque","id":"` + strings.Repeat("x", 200) + `"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := tr.subjectKey(json.RawMessage(tc.subject))
			if tc.key == "" {
				if err == nil {
					t.Fatalf("accepted as %q", key)
				}
				return
			}
			if err != nil || key != tc.key {
				t.Fatalf("got %q, %v; want %q", key, err, tc.key)
			}
		})
	}
}

// FuzzSubjectKey: no subject a receiver sends makes the parser fail other
// than with an error, or recurse.
func FuzzSubjectKey(f *testing.F) {
	for _, s := range []string{`{"format":"email","email":"a@b"}`, `{"format":"complex","user":{"format":"email","email":"a@b"}}`,
		`{"format":"complex","device":{"format":"complex"}}`, `[]`, `{"format":"iss_sub","iss":"https://i","sub":"d"}`} {
		f.Add([]byte(s))
	}
	tr := &Transmitter{o: Options{Issuer: "https://i"}}
	f.Fuzz(func(t *testing.T, b []byte) {
		key, err := tr.subjectKey(b)
		if err == nil && !strings.HasPrefix(key, "email:") && !strings.HasPrefix(key, "device:") {
			t.Fatalf("key %q", key)
		}
	})
}

func TestApplyStreamConfig(t *testing.T) {
	tr := &Transmitter{o: Options{Issuer: "https://mdm.example.com"}}
	for _, tc := range []struct {
		name string
		cfg  streamConfig
		ok   bool
	}{
		{"poll by default", streamConfig{}, true},
		{"https push", streamConfig{Delivery: deliveryConfig{Method: DeliveryPush, EndpointURL: "https://idp.example.com/push"}}, true},
		{"http push outside development", streamConfig{Delivery: deliveryConfig{Method: DeliveryPush, EndpointURL: "http://idp.example.com/push"}}, false},
		{"push with credentials in the URL", streamConfig{Delivery: deliveryConfig{Method: DeliveryPush, EndpointURL: "https://u:p@idp.example.com/"}}, false},
		{"push without a URL", streamConfig{Delivery: deliveryConfig{Method: DeliveryPush}}, false},
		{"header with a line break", streamConfig{Delivery: deliveryConfig{Method: DeliveryPush, EndpointURL: "https://idp.example.com/",
			AuthorizationHeader: "Bearer x\r\nX-Evil: 1"}}, false},
		{"unknown method", streamConfig{Delivery: deliveryConfig{Method: "urn:example:carrier-pigeon"}}, false},
		{"too many events", streamConfig{EventsRequested: make([]string, 21)}, false},
		{"overlong description", streamConfig{Description: strings.Repeat("x", 501)}, false},
	} {
		s := Stream{ID: "s1"}
		msg := tr.apply(&s, tc.cfg)
		if (msg == "") != tc.ok {
			t.Errorf("%s: %q", tc.name, msg)
		}
		if tc.ok && s.Method == DeliveryPoll && s.EndpointURL != "https://mdm.example.com/ssf/poll/s1" {
			t.Errorf("%s: poll endpoint %q", tc.name, s.EndpointURL)
		}
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second}
	for n, w := range want {
		if got := backoff(n); got != w {
			t.Errorf("backoff(%d) = %s, want %s", n, got, w)
		}
	}
	if got := backoff(1000); got != 10*time.Minute {
		t.Errorf("backoff(1000) = %s", got)
	}
}

// TestKeyringRotation: the newest key signs, a replaced key stays
// published for one rotation period, kids are RFC 7638 thumbprints, and
// replicas opening one folder at once end up with one key, not one each.
func TestKeyringRotation(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	clock := func() time.Time { return now }
	var wg sync.WaitGroup
	rings := make([]*Keyring, 3)
	for i := range rings {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := OpenKeyring(dir, 24*time.Hour, clock)
			if err != nil {
				t.Error(err)
			}
			rings[i] = k
		}()
	}
	wg.Wait()
	set, err := rings[0].JWKS()
	if err != nil || len(set.Keys) != 1 {
		t.Fatalf("three replicas starting at once made %d keys: %v", len(set.Keys), err)
	}
	first := set.Keys[0].KeyID
	tp, _ := (&jose.JSONWebKey{Key: set.Keys[0].Key}).Thumbprint(crypto.SHA256)
	if first != base64.RawURLEncoding.EncodeToString(tp) {
		t.Fatalf("kid %s is not the key's thumbprint", first)
	}
	verify := func(jws string, set jose.JSONWebKeySet) string {
		t.Helper()
		obj, err := jose.ParseSigned(jws, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		kid := obj.Signatures[0].Header.KeyID
		if typ := obj.Signatures[0].Header.ExtraHeaders[jose.HeaderType]; typ != "secevent+jwt" {
			t.Fatalf("typ %v", typ)
		}
		keys := set.Key(kid)
		if len(keys) != 1 {
			t.Fatalf("kid %s is not published", kid)
		}
		if _, err := obj.Verify(keys[0].Key); err != nil {
			t.Fatal(err)
		}
		return kid
	}
	before, err := rings[1].Sign([]byte(`{"jti":"1"}`))
	if err != nil {
		t.Fatal(err)
	}
	// A day later the key rotates: the new key is published at once but
	// signs only after the activation delay; what was signed before still
	// verifies.
	now = now.Add(25 * time.Hour)
	during, err := rings[2].Sign([]byte(`{"jti":"2"}`))
	if err != nil {
		t.Fatal(err)
	}
	set, _ = rings[0].JWKS()
	if len(set.Keys) != 2 {
		t.Fatalf("%d keys published after a rotation, want 2", len(set.Keys))
	}
	if verify(before, set) != verify(during, set) {
		t.Fatal("a key signed before every replica and receiver could know it")
	}
	now = now.Add(activation + time.Minute)
	after, err := rings[2].Sign([]byte(`{"jti":"3"}`))
	if err != nil {
		t.Fatal(err)
	}
	if verify(before, set) == verify(after, set) {
		t.Fatal("the rotation did not change the signing key")
	}
	// A file that is not a key is passed over.
	if err := os.WriteFile(filepath.Join(dir, "es256-1-bad.pem"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := rings[1].Rotate(); err != nil {
		t.Fatalf("a bad file stopped the keyring: %v", err)
	}
	if rings[1].Skipped != 1 {
		t.Fatalf("skipped %d files", rings[1].Skipped)
	}
	if set, _ = rings[0].JWKS(); len(set.Keys) != 3 || len(set.Key(first)) != 1 {
		t.Fatalf("right after two rotations %d keys are published, want all 3", len(set.Keys))
	}
	// One rotation period later, the first key is gone.
	now = now.Add(24*time.Hour + time.Minute)
	if set, _ = rings[0].JWKS(); len(set.Keys) > 2 || len(set.Key(first)) != 0 {
		t.Fatalf("a day after it was replaced the first key is still published: %d keys", len(set.Keys))
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.pem"))
	for _, f := range files {
		if fi, _ := os.Stat(f); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", f, fi.Mode().Perm())
		}
	}
}

func TestPushEndpointsArePublic(t *testing.T) {
	for addr, public := range map[string]bool{"8.8.8.8": true, "2001:4860:4860::8888": true, "127.0.0.1": false, "10.1.2.3": false,
		"192.168.1.1": false, "172.16.0.1": false, "169.254.169.254": false, "100.64.0.1": false, "::1": false, "fe80::1": false,
		"0.0.0.0": false, "::ffff:127.0.0.1": false, "fd00::1": false, "224.0.0.1": false, "64:ff9b::a00:1": false, "2002:a00:1::": false,
		"198.18.0.1": false, "240.0.0.1": false, "0.1.2.3": false, "192.0.0.8": false} {
		if got := publicAddr(netip.MustParseAddr(addr)); got != public {
			t.Errorf("%s: public %v, want %v", addr, got, public)
		}
	}
	tr := &Transmitter{o: Options{Issuer: "https://mdm.example.com"}}
	for _, u := range []string{"https://127.0.0.1/push", "https://[::1]/push", "https://169.254.169.254/latest", "https://localhost/push",
		"https://10.0.0.5:8443/"} {
		s := Stream{ID: "s"}
		if msg := tr.apply(&s, streamConfig{Delivery: deliveryConfig{Method: DeliveryPush, EndpointURL: u}}); msg == "" {
			t.Errorf("%s accepted as a push endpoint", u)
		}
	}
	// A name is checked on the address it resolves to, when dialling.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) }))
	defer srv.Close()
	local := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	if _, err := pushClient(false).Post(local, "application/secevent+jwt", nil); !errors.Is(err, errPrivateAddress) {
		t.Fatalf("a push to %s: %v", local, err)
	}
	resp, err := pushClient(true).Post(local, "application/secevent+jwt", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
