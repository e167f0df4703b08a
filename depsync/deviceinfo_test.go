package depsync

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/micromdm/plist"
	"github.com/smallstep/pkcs7"
)

// appleLike signs a device-info plist the way Setup Assistant's header is:
// CMS SignedData with the content attached.
func appleLike(t testing.TB, info map[string]string) string {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Apple iPhone Device Info (test)"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	cert, _ := x509.ParseCertificate(der)
	body, _ := plist.Marshal(info)
	sd, err := pkcs7.NewSignedData(body)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.AddSigner(cert, key, pkcs7.SignerInfoConfig{}); err != nil {
		t.Fatal(err)
	}
	out, _ := sd.Finish()
	return base64.StdEncoding.EncodeToString(out)
}

func TestParseDeviceInfoHeader(t *testing.T) {
	good := appleLike(t, map[string]string{"SERIAL": "C02DEP000001", "UDID": "0000FE00-ABCD", "PRODUCT": "MacBookPro18,3", "VERSION": "23F79", "LANGUAGE": "en-US"})
	info, err := ParseDeviceInfoHeader(good)
	if err != nil || info.Serial != "C02DEP000001" || info.UDID != "0000FE00-ABCD" || info.Product != "MacBookPro18,3" {
		t.Fatalf("%+v %v", info, err)
	}
	der, _ := base64.StdEncoding.DecodeString(good)
	tampered := []byte(strings.Replace(string(der), "C02DEP000001", "C02DEP999999", 1))
	for _, tc := range []struct{ name, v string }{
		{"error/missing", ""},
		{"error/not base64", "%%%"},
		{"error/not CMS", base64.StdEncoding.EncodeToString([]byte("plain text"))},
		{"error/truncated", base64.StdEncoding.EncodeToString(der[:len(der)/2])},
		{"error/tampered content", base64.StdEncoding.EncodeToString(tampered)},
		{"error/no serial", appleLike(t, map[string]string{"UDID": "x"})},
		{"error/huge", strings.Repeat("A", 64<<10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseDeviceInfoHeader(tc.v); !errors.Is(err, ErrDeviceInfo) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func FuzzParseDeviceInfoHeader(f *testing.F) {
	f.Add(appleLike(f, map[string]string{"SERIAL": "C02DEP000001", "UDID": "U"}))
	f.Add("")
	f.Add("MIIB")
	f.Fuzz(func(t *testing.T, v string) {
		info, err := ParseDeviceInfoHeader(v)
		if err == nil && (info.Serial == "" || info.UDID == "") {
			t.Fatalf("accepted without serial or UDID: %+v", info)
		}
	})
}
