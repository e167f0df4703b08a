package scep_test

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vestibule-mdm/vestibule/internal/testenv"
)

// TestRealClient enrolls with micromdm's scepclient (Debian package scep):
// a valid challenge works, a wrong one and a used one do not.
func TestRealClient(t *testing.T) {
	bin, err := exec.LookPath("scepclient")
	if err != nil {
		testenv.Missing(t, "scepclient", "apt-get install scep")
	}
	f := newFixture(t, "sqlite")
	run := func(challenge, cn string) (string, error) {
		dir := t.TempDir()
		cmd := exec.Command(bin, "-server-url", f.url+"/scep", "-challenge", challenge, "-cn", cn,
			"-private-key", filepath.Join(dir, "key.pem"), "-certificate", filepath.Join(dir, "cert.pem"), "-keySize", "2048")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), err
		}
		b, err := os.ReadFile(filepath.Join(dir, "cert.pem"))
		if err != nil {
			return string(out), err
		}
		block, _ := pem.Decode(b)
		if block == nil {
			return string(out), os.ErrInvalid
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return string(out), err
		}
		return c.Subject.CommonName, nil
	}

	r, challenge := f.reserve()
	if out, err := run("wrong-challenge", r.ID); err == nil {
		t.Fatalf("a wrong challenge got a certificate: %s", out)
	}
	cn, err := run(challenge, r.ID)
	if err != nil {
		t.Fatalf("valid challenge: %v\n%s", err, cn)
	}
	if cn != r.ID {
		t.Fatalf("certificate CN %q, want %s", cn, r.ID)
	}
	if out, err := run(challenge, r.ID); err == nil {
		t.Fatalf("a used challenge got a second certificate: %s", out)
	}
	if n := f.certs(r.ID); n != 1 {
		t.Fatalf("%d certificates for one challenge", n)
	}
}
