package trust

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

type testCA struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
}

func (c testCA) Certificate() *x509.Certificate { return c.cert }
func (c testCA) Signer() crypto.Signer          { return c.key }

func newCA(t testing.TB, name string) testCA {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return testCA{cert, key}
}

func (c testCA) issue(t testing.TB, serial int64) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "device"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, c.cert, c.key.Public(), c.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// memRevocations is the store as several replicas share it.
type memRevocations struct {
	mu      sync.Mutex
	revoked []Revoked
	status  map[string]Status
	crl     CRL
	saves   int
}

func (m *memRevocations) RevocationGeneration(context.Context) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Repeat("r", len(m.revoked)), nil
}

func (m *memRevocations) RevokedTrust(context.Context, time.Time) ([]Revoked, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Revoked(nil), m.revoked...), nil
}

func (m *memRevocations) LatestCRL(context.Context) (CRL, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.crl.Number == 0 {
		return CRL{}, enrollment.ErrNotFound
	}
	return m.crl, nil
}

func (m *memRevocations) SaveCRL(_ context.Context, prev int64, c CRL) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.crl.Number != prev {
		return enrollment.ErrConflict
	}
	m.crl = c
	m.saves++
	return nil
}

func (m *memRevocations) TrustStatus(_ context.Context, serial string) (Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.status[serial]
	if !ok {
		return Status{}, enrollment.ErrNotFound
	}
	return s, nil
}

func (m *memRevocations) revoke(serial int64, code int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	at := time.Now().Truncate(time.Second)
	hex := strings.ToUpper(big.NewInt(serial).Text(16))
	m.revoked = append(m.revoked, Revoked{Serial: hex, RevokedAt: at, Code: code, NotAfter: time.Now().Add(time.Hour)})
	m.status[hex] = Status{Serial: hex, RevokedAt: &at, Code: code}
}

// TestCRLAcrossReplicas: replicas signing at once agree on one CRL whose
// number only grows, and a revocation is in the next CRL any of them
// serves.
func TestCRLAcrossReplicas(t *testing.T) {
	ca := newCA(t, "Trust")
	st := &memRevocations{status: map[string]Status{}}
	replicas := []*Revocation{NewRevocation(ca, st, nil, nil), NewRevocation(ca, st, nil, nil), NewRevocation(ca, st, nil, nil)}
	var last int64
	for round := range 5 {
		st.revoke(int64(100+round), 9)
		var wg sync.WaitGroup
		ders := make([][]byte, len(replicas))
		for i, r := range replicas {
			wg.Add(1)
			go func() {
				defer wg.Done()
				der, err := r.CurrentCRL(context.Background())
				if err != nil {
					t.Error(err)
				}
				ders[i] = der
			}()
		}
		wg.Wait()
		for i, der := range ders {
			crl, err := x509.ParseRevocationList(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := crl.CheckSignatureFrom(ca.cert); err != nil {
				t.Fatal(err)
			}
			if len(crl.RevokedCertificateEntries) != round+1 {
				t.Fatalf("round %d, replica %d: %d entries", round, i, len(crl.RevokedCertificateEntries))
			}
			if n := crl.Number.Int64(); n < last || n != st.crl.Number {
				t.Fatalf("round %d, replica %d: CRL number %d after %d (stored %d)", round, i, n, last, st.crl.Number)
			}
		}
		last = st.crl.Number
	}
	if st.saves != 5 {
		t.Errorf("%d CRLs signed for 5 changes", st.saves)
	}
}

func TestOCSP(t *testing.T) {
	ca, other := newCA(t, "Trust"), newCA(t, "SCEP identity")
	st := &memRevocations{status: map[string]Status{}}
	good, revoked, unknown, foreign := ca.issue(t, 7), ca.issue(t, 8), ca.issue(t, 9), other.issue(t, 7)
	st.status["7"] = Status{Serial: "7"}
	st.revoke(8, 1)
	r := NewRevocation(ca, st, nil, nil)
	for _, tc := range []struct {
		name   string
		cert   *x509.Certificate
		issuer *x509.Certificate
		want   int
	}{
		{"good", good, ca.cert, ocsp.Good},
		{"revoked", revoked, ca.cert, ocsp.Revoked},
		{"not ours", unknown, ca.cert, ocsp.Unknown},
	} {
		req, _ := ocsp.CreateRequest(tc.cert, tc.issuer, nil)
		raw, err := r.Respond(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ocsp.ParseResponseForCert(raw, tc.cert, ca.cert)
		if err != nil || resp.Status != tc.want {
			t.Fatalf("%s: %+v %v", tc.name, resp, err)
		}
	}
	// Another CA's certificate, or garbage, gets the protocol's errors.
	req, _ := ocsp.CreateRequest(foreign, other.cert, nil)
	for name, body := range map[string][]byte{"another CA": req, "garbage": []byte("not OCSP"), "empty": nil} {
		raw, err := r.Respond(context.Background(), body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ocsp.ParseResponse(raw, nil); err == nil {
			t.Fatalf("%s: a signed answer", name)
		}
	}
}

// FuzzOCSPRequest: whatever a relying party sends, the responder answers
// without failing on its own side.
func FuzzOCSPRequest(f *testing.F) {
	ca := newCA(f, "Trust")
	req, _ := ocsp.CreateRequest(ca.issue(f, 7), ca.cert, nil)
	f.Add(req)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	r := NewRevocation(ca, &memRevocations{status: map[string]Status{}}, nil, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		if _, err := r.Respond(context.Background(), body); err != nil {
			t.Fatal(err)
		}
	})
}
