package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/depsync/deptest"
)

// TestDEPTokenUpload follows the DEP set-up in the README: make the key
// pair, upload its certificate to ABM, upload the token file ABM gives
// back, sync.
func TestDEPTokenUpload(t *testing.T) {
	dep := deptest.Start(t)
	dep.Add(deptest.Device{Serial: "C02UPLOAD001", Model: "MacBook Air", Description: "MBA 13", Family: "Mac", OS: "OSX"})
	t.Setenv("VESTIBULE_DEP_ENABLED", "true")
	t.Setenv("VESTIBULE_DEP_SERVER_URL", dep.URL)
	dataDir := filepath.Join(t.TempDir(), "data")
	dir := t.TempDir()

	certFile := filepath.Join(dir, "dep.pem")
	if _, e, code := vestibule(t, dataDir, "dep", "keypair", "-o", certFile); code != 0 {
		t.Fatal(e)
	}
	b, _ := os.ReadFile(certFile)
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("dep keypair wrote no certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}

	// A file that is not a token is refused and stores nothing.
	garbage := filepath.Join(dir, "garbage.p7m")
	os.WriteFile(garbage, []byte("Content-Type: application/pkcs7-mime\r\n\r\nAAAA\r\n"), 0o600)
	if _, e, code := vestibule(t, dataDir, "dep", "token", "upload", garbage); code == 0 || !strings.Contains(e, "not an S/MIME file encrypted to this server's DEP certificate") {
		t.Fatalf("garbage token: %d %s", code, e)
	}
	if _, e, code := vestibule(t, dataDir, "dep", "sync", "--now"); code == 0 || !strings.Contains(e, "no DEP server token") {
		t.Fatalf("sync without a token: %d %s", code, e)
	}

	token, err := dep.ServerTokenFile(cert, time.Now().Add(365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token.p7m")
	os.WriteFile(tokenFile, token, 0o600)
	if out, e, code := vestibule(t, dataDir, "dep", "token", "upload", tokenFile); code != 0 || !strings.Contains(out, "stored the DEP server token") {
		t.Fatalf("upload: %d %s %s", code, out, e)
	}
	if out, e, code := vestibule(t, dataDir, "dep", "sync", "--now"); code != 0 || !strings.Contains(out, "1 added") {
		t.Fatalf("sync: %d %s %s", code, out, e)
	}
	if out, _, _ := vestibule(t, dataDir, "dep", "devices"); !strings.Contains(out, "C02UPLOAD001") {
		t.Fatalf("devices: %s", out)
	}
}
