package profile

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/micromdm/plist"
	"github.com/smallstep/pkcs7"

	"github.com/vestibule-mdm/vestibule/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite golden files")

func testOptions() Options {
	return Options{ReservationID: "6f1c1c39-0d5e-4c38-9b53-2a3d7c0e9f11", OrgName: "Acme", IdentifierPrefix: "com.acme.mdm",
		SCEPURL: "https://mdm.acme.test/scep", Challenge: "challenge-1", CAName: "Acme CA", ServerURL: "https://mdm.acme.test/mdm/connect",
		CheckInURL: "https://mdm.acme.test/mdm/checkin?t=TOKEN1", Topic: "com.apple.mgmt.External.test"}
}

// decoded mirrors the profile loosely, as a device would read it.
type decoded struct {
	PayloadType       string
	PayloadIdentifier string
	PayloadUUID       string
	PayloadContent    []map[string]any
}

func TestBuildParsesBack(t *testing.T) {
	b, err := Build(testOptions())
	if err != nil {
		t.Fatal(err)
	}
	var d decoded
	if err := plist.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.PayloadType != "Configuration" || d.PayloadIdentifier != "com.acme.mdm.6f1c1c39-0d5e-4c38-9b53-2a3d7c0e9f11" || len(d.PayloadContent) != 2 {
		t.Fatalf("top level: %+v", d)
	}
	scep, mdm := d.PayloadContent[0], d.PayloadContent[1]
	sc := scep["PayloadContent"].(map[string]any)
	for k, want := range map[string]any{"URL": "https://mdm.acme.test/scep", "Challenge": "challenge-1", "Key Type": "RSA"} {
		if sc[k] != want {
			t.Errorf("SCEP %s = %v, want %v", k, sc[k], want)
		}
	}
	if sc["Keysize"] != uint64(2048) || sc["Key Usage"] != uint64(5) {
		t.Errorf("SCEP key: %v %v", sc["Keysize"], sc["Key Usage"])
	}
	subj := sc["Subject"].([]any)[0].([]any)[0].([]any)
	if subj[0] != "CN" || subj[1] != "6f1c1c39-0d5e-4c38-9b53-2a3d7c0e9f11" {
		t.Errorf("subject %v", subj)
	}
	for k, want := range map[string]any{"PayloadType": "com.apple.mdm", "ServerURL": "https://mdm.acme.test/mdm/connect",
		"CheckInURL": "https://mdm.acme.test/mdm/checkin?t=TOKEN1", "Topic": "com.apple.mgmt.External.test", "SignMessage": true,
		"CheckOutWhenRemoved": true, "AccessRights": uint64(8191), "IdentityCertificateUUID": scep["PayloadUUID"]} {
		if mdm[k] != want {
			t.Errorf("MDM %s = %v, want %v", k, mdm[k], want)
		}
	}
	if caps := mdm["ServerCapabilities"].([]any); len(caps) != 1 || caps[0] != "com.apple.mdm.per-user-connections" {
		t.Errorf("capabilities %v", caps)
	}

	golden := filepath.Join("testdata", "profile.golden.plist")
	if *update {
		os.MkdirAll("testdata", 0o755)
		os.WriteFile(golden, b, 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(b, want) {
		t.Errorf("profile differs from %s (run go test -update if the change is intended)", golden)
	}
}

func TestTwoReservationsDifferOnlyWhereTheyShould(t *testing.T) {
	a, b := testOptions(), testOptions()
	b.Challenge, b.CheckInURL = "challenge-2", "https://mdm.acme.test/mdm/checkin?t=TOKEN2"
	pa, _ := Build(a)
	pb, _ := Build(b)
	la, lb := strings.Split(string(pa), "\n"), strings.Split(string(pb), "\n")
	if len(la) != len(lb) {
		t.Fatal("different shapes")
	}
	var diff []string
	for i := range la {
		if la[i] != lb[i] {
			diff = append(diff, strings.TrimSpace(lb[i]))
		}
	}
	if len(diff) != 2 || !strings.Contains(diff[0]+diff[1], "challenge-2") || !strings.Contains(diff[0]+diff[1], "TOKEN2") {
		t.Errorf("differences: %v", diff)
	}
	// Same reservation, same payload UUIDs: a re-download replaces.
	if payloadUUID(a.ReservationID, "scep") != payloadUUID(b.ReservationID, "scep") {
		t.Error("payload UUID is not stable")
	}
}

func TestValidate(t *testing.T) {
	for name, mut := range map[string]func(*Options){
		"ReservationID": func(o *Options) { o.ReservationID = "" },
		"Challenge":     func(o *Options) { o.Challenge = " " },
		"Topic":         func(o *Options) { o.Topic = "" },
		"SCEPURL":       func(o *Options) { o.SCEPURL = "/scep" },
		"CheckInURL":    func(o *Options) { o.CheckInURL = "ftp://x/y" },
		"KeySize":       func(o *Options) { o.KeySize = 1024 },
	} {
		o := testOptions()
		mut(&o)
		if _, err := Build(o); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

type testPKI struct {
	caCert  *x509.Certificate
	leaf    *x509.Certificate
	leafKey crypto.Signer
	caPEM   []byte
	leafPEM []byte
}

func newTestPKI(t testing.TB) testPKI {
	t.Helper()
	caKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Profile Signing"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, leafKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	return testPKI{caCert: ca, leaf: leaf, leafKey: leafKey,
		caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), leafPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})}
}

func TestSignVerifies(t *testing.T) {
	pki := newTestPKI(t)
	body, _ := Build(testOptions())
	signed, err := Sign(body, pki.leaf, pki.leafKey, []*x509.Certificate{pki.caCert})
	if err != nil {
		t.Fatal(err)
	}
	p7, err := pkcs7.Parse(signed)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(pki.caCert)
	if err := p7.VerifyWithChain(pool); err != nil {
		t.Fatalf("pkcs7 verify: %v", err)
	}
	if !bytes.Equal(p7.Content, body) {
		t.Fatal("signed content differs")
	}

	openssl := testenv.LookPath(t, "openssl", "openssl", "apt-get install openssl")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "p.mobileconfig"), signed, 0o600)
	os.WriteFile(filepath.Join(dir, "ca.pem"), pki.caPEM, 0o600)
	out, err := exec.Command(openssl, "smime", "-verify", "-inform", "DER", "-in", filepath.Join(dir, "p.mobileconfig"),
		"-CAfile", filepath.Join(dir, "ca.pem"), "-out", filepath.Join(dir, "content.plist")).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl smime -verify: %v\n%s", err, out)
	}
	content, _ := os.ReadFile(filepath.Join(dir, "content.plist"))
	if !bytes.Equal(content, body) {
		t.Fatal("openssl extracted different content")
	}
	// A flipped byte in the content breaks the signature.
	tampered := bytes.Replace(signed, []byte("challenge-1"), []byte("challenge-X"), 1)
	os.WriteFile(filepath.Join(dir, "t.mobileconfig"), tampered, 0o600)
	if out, err := exec.Command(openssl, "smime", "-verify", "-inform", "DER", "-in", filepath.Join(dir, "t.mobileconfig"),
		"-CAfile", filepath.Join(dir, "ca.pem"), "-out", os.DevNull).CombinedOutput(); err == nil {
		t.Fatalf("openssl verified a tampered profile: %s", out)
	}
}

func BenchmarkBuildAndSign(b *testing.B) {
	pki := newTestPKI(b)
	o := testOptions()
	for b.Loop() {
		body, err := Build(o)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Sign(body, pki.leaf, pki.leafKey, []*x509.Certificate{pki.caCert}); err != nil {
			b.Fatal(err)
		}
	}
}
