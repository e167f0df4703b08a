package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/internal/testenv"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

// TestNginxRequiresDeviceTrust puts a real nginx in front of a resource,
// configured as README.md tells (ssl_verify_client with the trust CA, and
// either its CRL or live OCSP), and checks with curl that the device's
// trust certificate gets in while the device is approved and is refused
// once it is revoked: at once over OCSP, after the CRL refresh otherwise.
func TestNginxRequiresDeviceTrust(t *testing.T) {
	nginx := testenv.LookPath(t, "nginx", "nginx", "apt-get install nginx-light")
	curl := testenv.LookPath(t, "nginx", "curl", "apt-get install curl")
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		d, r := e.trustedDevice("alice@example.com", "C02NGINX0001")
		dir := t.TempDir()
		for _, sub := range []string{"logs", "tmp"} {
			if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		writePEM(t, filepath.Join(dir, "device.pem"), d.TrustCert.Raw)
		writeFile(t, filepath.Join(dir, "device.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(d.TrustKey)}))
		serverTLS(t, dir)
		fetchCRL := func() {
			resp, err := http.Get(e.url + "/trust/crl")
			if err != nil {
				t.Fatal(err)
			}
			der, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			writeFile(t, filepath.Join(dir, "trust-crl.pem"), pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
		}
		fetchCRL()
		port, ocspPort := freePort(t), freePort(t)
		conf := filepath.Join(dir, "nginx.conf")
		writeFile(t, conf, []byte(fmt.Sprintf(`error_log %[1]s/logs/error.log info;
pid %[1]s/nginx.pid;
events {}
http {
    access_log off;
    client_body_temp_path %[1]s/tmp; proxy_temp_path %[1]s/tmp; fastcgi_temp_path %[1]s/tmp;
    uwsgi_temp_path %[1]s/tmp; scgi_temp_path %[1]s/tmp;
    server {
        listen 127.0.0.1:%[2]d ssl;
        ssl_certificate     %[1]s/server.pem;
        ssl_certificate_key %[1]s/server.key;
        # Device trust, as README.md configures it.
        ssl_client_certificate %[3]s;
        ssl_verify_client on;
        ssl_crl %[1]s/trust-crl.pem;
        location / { return 200 "hello $ssl_client_s_dn\n"; }
    }
    server {
        listen 127.0.0.1:%[4]d ssl;
        ssl_certificate     %[1]s/server.pem;
        ssl_certificate_key %[1]s/server.key;
        # Device trust checked live over OCSP (the certificate names the
        # responder), as README.md configures it.
        ssl_client_certificate %[3]s;
        ssl_verify_client on;
        ssl_ocsp on;
        location / { return 200 "hello $ssl_client_s_dn\n"; }
    }
}
`, dir, port, e.app.Config.Trust.CACertFile, ocspPort)))
		// Its output goes to a file: workers outliving a killed master
		// would hold the test's output open.
		out, err := os.Create(filepath.Join(dir, "logs", "stderr.log"))
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		cmd := exec.Command(nginx, "-p", dir, "-c", conf, "-g", "daemon off;")
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			// A fast shutdown stops the workers with the master.
			if err := exec.Command(nginx, "-p", dir, "-c", conf, "-s", "stop").Run(); err != nil {
				_ = cmd.Process.Kill()
			}
			_ = cmd.Wait()
		})
		knock := func(port int, withCert bool) string {
			args := []string{"-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", filepath.Join(dir, "server.pem")}
			if withCert {
				args = append(args, "--cert", filepath.Join(dir, "device.pem"), "--key", filepath.Join(dir, "device.key"))
			}
			out, _ := exec.Command(curl, append(args, fmt.Sprintf("https://127.0.0.1:%d/", port))...).Output()
			return string(out)
		}
		get := func(withCert bool) string { return knock(port, withCert) }
		waitFor(t, "nginx to listen", func() bool { return get(true) != "000" })
		if code := get(true); code != "200" {
			t.Fatalf("approved device: HTTP %s, want 200", code)
		}
		if code := get(false); code != "400" {
			t.Fatalf("no certificate: HTTP %s, want 400", code)
		}
		if code := knock(ocspPort, true); code != "200" {
			t.Fatalf("approved device, OCSP checked: HTTP %s, want 200", code)
		}
		if _, err := e.app.Enrollments.Deny(e.ctx, admin, r.ID, "lost"); err != nil {
			t.Fatal(err)
		}
		// Checked over OCSP, the revocation holds at the next connection,
		// with no reload.
		if code := knock(ocspPort, true); code != "400" {
			t.Fatalf("revoked device, OCSP checked: HTTP %s, want 400", code)
		}
		// As the cron job in README.md does: fetch the CRL, reload nginx.
		fetchCRL()
		if out, err := exec.Command(nginx, "-p", dir, "-c", conf, "-s", "reload").CombinedOutput(); err != nil {
			t.Fatalf("nginx -s reload: %v\n%s", err, out)
		}
		waitFor(t, "nginx to refuse the revoked certificate", func() bool { return get(true) == "400" })
		b, _ := os.ReadFile(filepath.Join(dir, "logs", "error.log"))
		if !strings.Contains(string(b), "revoked") {
			t.Fatalf("nginx did not log a revoked certificate:\n%s", b)
		}
	})
}

func writeFile(t testing.TB, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// serverTLS writes a self-signed server certificate for 127.0.0.1.
func serverTLS(t testing.TB, dir string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, &x509.Certificate{Subject: pkix.Name{CommonName: "127.0.0.1"}}, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "server.pem"), der)
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	writeFile(t, filepath.Join(dir, "server.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}))
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
