package e2e

import (
	"context"
	"encoding/base64"
	"slices"

	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"github.com/micromdm/plist"
	"github.com/smallstep/pkcs7"
	"math/big"
	"net/http"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
	"github.com/vestibule-mdm/vestibule/internal/testserver"
)

// selfSign gives a device a self-made client certificate with the right CN:
// what an attacker without our CA can do.
func selfSign(d *devicesim.Device, cn string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return err
	}
	d.Cert, _ = x509.ParseCertificate(der)
	d.Key = key
	return nil
}

// newEnvOn starts a server on an existing database and data dir, as
// replicas share both.
func newEnvOn(t *testing.T, dsn, dataDir string) *env {
	t.Helper()
	ctx := context.Background()
	url, app := testserver.Start(t, dsn, dataDir, nil)
	if _, err := app.Store.UserByEmail(ctx, "alice@example.com"); err != nil {
		if _, err := app.Users.Add(ctx, admin, enrollment.UserInput{Email: "alice@example.com"}); err != nil {
			t.Fatal(err)
		}
	}
	return &env{t: t, url: url, app: app, ctx: ctx}
}

func newDevice(e *env) *devicesim.Device { return devicesim.New(http.DefaultClient, "SER-CONSOLE") }

// deviceInfo is a Setup Assistant device-info header: a plist in CMS
// SignedData, base64.
func deviceInfo(t testing.TB, serial, udid string) string {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "device info (test)"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	cert, _ := x509.ParseCertificate(der)
	body, _ := plist.Marshal(map[string]string{"SERIAL": serial, "UDID": udid, "PRODUCT": "MacBookPro18,3", "VERSION": "23F79"})
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

// onlyTheQuestion connects a pending device and checks that what it gets,
// if anything, is the attestation question: a DeviceInformation with a
// nonce, which asks and installs nothing. The device answers it, so the
// question is not asked again; then the device must get nothing more.
func onlyTheQuestion(t *testing.T, e *env, d *devicesim.Device) {
	t.Helper()
	code, cmd, err := d.Connect(e.ctx, "Idle", "")
	e.expect("Connect while pending", code, err, 200)
	if cmd == nil {
		return
	}
	var q struct {
		Command struct {
			RequestType            string
			Queries                []string
			DeviceAttestationNonce []byte
			Payload                []byte
		}
	}
	if err := plist.Unmarshal(cmd.Raw, &q); err != nil {
		t.Fatal(err)
	}
	if q.Command.RequestType != "DeviceInformation" || len(q.Command.DeviceAttestationNonce) != 32 || q.Command.Payload != nil ||
		!slices.Contains(q.Command.Queries, "DevicePropertiesAttestation") {
		t.Fatalf("a pending device got %s, not the attestation question: %+v", cmd.RequestType, q.Command)
	}
	code, cmd, err = d.Answer(e.ctx, cmd)
	e.expect("answer the question", code, err, 200)
	if cmd != nil {
		t.Fatalf("a pending device got %s after answering the question", cmd.RequestType)
	}
}
