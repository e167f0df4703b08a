package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vestibule.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const validProd = `
listen: 0.0.0.0:8443
public_url: https://mdm.example.com
data_dir: /var/lib/vestibule
org: {id: acme, name: Acme Corp}
database: {dsn: "postgres://vestibule@db/vestibule"}
mdm: {topic: com.apple.mgmt.External.x}
profile: {signing_cert_file: p.pem, signing_key_file: p.key}
`

func TestLoadValid(t *testing.T) {
	cfg, err := Load(Overrides{ConfigFile: writeFile(t, validProd)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PublicURL != "https://mdm.example.com" || cfg.Org.ID != "acme" || cfg.Enroll.TokenTTL.D() != time.Hour {
		t.Errorf("got %+v", cfg)
	}
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, validProd+"enrollment: {token_ttl: 30m}\n")
	env := []string{"VESTIBULE_ENROLLMENT_TOKEN_TTL=45m", "VESTIBULE_LISTEN=127.0.0.1:9000", "VESTIBULE_TEST_POSTGRES=ignored", "PATH=/bin"}
	cfg, err := Load(Overrides{ConfigFile: file, Listen: "127.0.0.1:9999"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Enroll.TokenTTL.D() != 45*time.Minute {
		t.Errorf("env should override file: %v", cfg.Enroll.TokenTTL.D())
	}
	if cfg.Listen != "127.0.0.1:9999" {
		t.Errorf("flag should override env: %v", cfg.Listen)
	}
}

func TestDevDefaults(t *testing.T) {
	cfg, err := Load(Overrides{Dev: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Listen: DevDefaultListen, PublicURL: "http://127.0.0.1:8080", DataDir: "data"}
	if cfg.Listen != want.Listen || cfg.PublicURL != want.PublicURL || cfg.DataDir != want.DataDir ||
		cfg.Database.DSN != "sqlite:data/vestibule.db" || cfg.Signer.LocalKeyFile != "data/hmac-keys.json" {
		t.Errorf("got %+v", cfg)
	}
	if cfg.Runtime.GCHeapFloorMB != 16 {
		t.Errorf("heap floor %d MiB, want 16 by default", cfg.Runtime.GCHeapFloorMB)
	}
	if cfg, err := Load(Overrides{Dev: true}, []string{"VESTIBULE_RUNTIME_GC_HEAP_FLOOR_MB=0"}); err != nil || cfg.Runtime.GCHeapFloorMB != 0 {
		t.Errorf("the floor is not turned off by its variable: %d %v", cfg.Runtime.GCHeapFloorMB, err)
	}
	cfg, err = Load(Overrides{Dev: true, Listen: "127.0.0.1:0", DataDir: "/tmp/x"}, nil)
	if err != nil || cfg.PublicURL != "" || cfg.Database.DSN != "sqlite:/tmp/x/vestibule.db" {
		t.Errorf("port 0 leaves the URL to the server: %+v %v", cfg, err)
	}
}

func TestInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		env  []string
		o    Overrides
		want []string
	}{
		{name: "error/nothing outside dev", want: []string{"listen: is required", "public_url: is required", "data_dir: is required", "database.dsn: is required", "org.id: is required"}},
		{name: "error/http public url outside dev", file: strings.Replace(validProd, "https://", "http://", 1), want: []string{"public_url: must be https"}},
		{name: "error/relative public url", file: strings.Replace(validProd, "https://mdm.example.com", "mdm.example.com", 1), want: []string{"public_url: \"mdm.example.com\" is not an absolute"}},
		{name: "error/unknown key", file: validProd + "listne: x\n", want: []string{`unknown key "listne" in the top level`}},
		{name: "error/bad duration", file: validProd + "enrollment: {token_ttl: soon}\n", want: []string{"\"soon\" is not a duration"}},
		{name: "error/bad listen", o: Overrides{Listen: "8080"}, file: validProd, want: []string{"listen: \"8080\" is not host:port"}},
		{name: "error/bad dsn", o: Overrides{DB: "mysql://x"}, file: validProd, want: []string{"database.dsn: \"mysql://x\": use postgres://"}},
		{name: "error/dsn password is redacted", o: Overrides{DB: "mysql://u:secret@h/db"}, file: validProd, want: []string{"database.dsn"}},
		{name: "error/long token ttl", file: validProd + "enrollment: {token_ttl: 1000h}\n", want: []string{"enrollment.token_ttl: must be at most"}},
		{name: "error/bad log level", env: []string{"VESTIBULE_LOG_LEVEL=loud"}, file: validProd, want: []string{"log.level: \"loud\"", "VESTIBULE_LOG_LEVEL"}},
		{name: "error/unknown env", env: []string{"VESTIBULE_LISTNE=x"}, file: validProd, want: []string{"VESTIBULE_LISTNE: not a configuration key"}},
		{name: "error/env not a number", env: []string{"VESTIBULE_HTTP_MAX_BODY_BYTES=lots"}, file: validProd, want: []string{"\"lots\" is not a whole number"}},
		{name: "error/tls half set", file: validProd + "tls: {cert_file: a.pem}\n", want: []string{"tls: cert_file and key_file go together"}},
		{name: "error/half a signing pair", file: strings.Replace(validProd, "signing_key_file: p.key", "tls_root_file: r.pem", 1), want: []string{"profile.signing_key_file: is required"}},
		{name: "error/unknown signer", file: validProd + "signer: {backend: hsm}\n", want: []string{"signer.backend: \"hsm\""}},
		{name: "error/missing file", o: Overrides{ConfigFile: "/nonexistent.yaml"}, want: []string{"no such file"}},
		{name: "error/push rate zero", env: []string{"VESTIBULE_PUSH_RATE=0"}, file: validProd, want: []string{"push.rate: must be 1 to 100000"}},
		{name: "error/negative heap floor", env: []string{"VESTIBULE_RUNTIME_GC_HEAP_FLOOR_MB=-1"}, file: validProd, want: []string{"runtime.gc_heap_floor_mb: must be 0"}},
		{name: "error/huge heap floor", file: validProd + "runtime: {gc_heap_floor_mb: 65537}\n", want: []string{"runtime.gc_heap_floor_mb: must be 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			if tc.file != "" && o.ConfigFile == "" {
				o.ConfigFile = writeFile(t, tc.file)
			}
			_, err := Load(o, tc.env)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error leaks a password: %v", err)
			}
		})
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	if _, err := Load(Overrides{ConfigFile: "../configs/vestibule.example.yaml"}, nil); err != nil {
		t.Fatalf("the shipped example config does not load: %v", err)
	}
}

// TestUnknownKeyNamesTheSection: a mistyped key is reported by its
// section in the file, not by a Go type.
func TestUnknownKeyNamesTheSection(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(name, []byte("org:\n  nmae: Example\nlisten_on: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(Overrides{ConfigFile: name}, nil)
	if err == nil || strings.Contains(err.Error(), "config.Org") || !strings.Contains(err.Error(), `unknown key "nmae" in "org"`) ||
		!strings.Contains(err.Error(), `unknown key "listen_on" in the top level`) {
		t.Fatalf("error: %v", err)
	}
}
