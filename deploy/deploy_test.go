// Package deploy holds the deployment files (systemd, container, Kubernetes)
// and the tests that run or validate each of them.
package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/internal/testenv"
)

// TestSystemdUnit checks the unit with systemd's own analyzer, and its
// hardening score (0 is the most confined, 10 the least).
func TestSystemdUnit(t *testing.T) {
	analyze := testenv.LookPath(t, "systemd", "systemd-analyze", "apt-get install systemd")
	b, err := os.ReadFile("systemd/vestibule.service")
	if err != nil {
		t.Fatal(err)
	}
	// verify wants the binary to exist: any executable stands in for it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "vestibule.service")
	if err := os.WriteFile(unit, bytes.ReplaceAll(b, []byte("/usr/local/bin/vestibule"), []byte(self)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", "--man=no", unit).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err := exec.Command(analyze, "security", "--offline=yes", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+) (\w+)`).FindStringSubmatch(string(out))
	if m == nil || m[2] != "OK" {
		t.Fatalf("exposure: %v\n%s", m, out)
	}
	t.Logf("systemd exposure level %s %s", m[1], m[2])
}

// TestKubernetesConfig loads the configuration the Kubernetes manifests
// ship with the real configuration loader: every key must exist and
// validate (the manifests themselves are checked against the Kubernetes
// API types in deploy/kubernetes/validate, a module of its own).
func TestKubernetesConfig(t *testing.T) {
	b, err := os.ReadFile("kubernetes/vestibule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Kind string            `yaml:"kind"`
		Data map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal(bytes.SplitN(b, []byte("\n---\n"), 2)[0], &cm); err != nil || cm.Kind != "ConfigMap" {
		t.Fatalf("the first document is not the ConfigMap: %v", err)
	}
	file := filepath.Join(t.TempDir(), "vestibule.yaml")
	if err := os.WriteFile(file, []byte(cm.Data["vestibule.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	// What the Secret vestibule-env provides.
	env := []string{"VESTIBULE_DATABASE_DSN=postgres://vestibule@postgres:5432/vestibule", "VESTIBULE_VAULT_ADDRESS=https://vault:8200"}
	cfg, err := config.Load(config.Overrides{ConfigFile: file}, env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Signer.Backend != "vault" || cfg.Dev {
		t.Fatalf("the manifests' server does not keep its token key in Vault: %+v", cfg.Signer)
	}
}

// TestContainerImage builds the image's runtime stage with podman, from a
// binary built here (this machine reaches no image registry, so the
// builder stage's Go image cannot be pulled), and checks what it runs as.
func TestContainerImage(t *testing.T) {
	podman := testenv.LookPath(t, "podman", "podman", "apt-get install podman")
	b, err := os.ReadFile("container/Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	file := string(b)
	for _, want := range []string{"AS build", "FROM scratch AS runtime", "USER 65532:65532", "HEALTHCHECK", "CGO_ENABLED=0"} {
		if !strings.Contains(file, want) {
			t.Fatalf("the Containerfile lacks %q", want)
		}
	}
	ctxDir := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(ctxDir, "out", "vestibule"), "../cmd/vestibule")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.MkdirAll(filepath.Join(ctxDir, "out", "var", "lib", "vestibule"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(ctxDir, "etc", "ssl", "certs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "etc", "ssl", "certs", "ca-certificates.crt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The builder stage, replaced by the context: the runtime stage is kept
	// as written.
	runtime := file[strings.Index(file, "FROM scratch AS runtime"):]
	runtime = strings.ReplaceAll(runtime, "COPY --from=build --chown=65532:65532 /out/", "COPY --chown=65532:65532 out/")
	runtime = strings.ReplaceAll(runtime, "COPY --from=build /out/", "COPY out/")
	runtime = strings.ReplaceAll(runtime, "COPY --from=build /etc/", "COPY etc/")
	if err := os.WriteFile(filepath.Join(ctxDir, "Containerfile"), []byte(runtime), 0o644); err != nil {
		t.Fatal(err)
	}
	tag := "localhost/vestibule-test:" + filepath.Base(ctxDir)
	if out, err := exec.Command(podman, "build", "-q", "--format", "docker", "-t", tag, ctxDir).CombinedOutput(); err != nil {
		t.Fatalf("podman build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command(podman, "rmi", "-f", tag).Run() })
	out, err := exec.Command(podman, "image", "inspect", tag).Output()
	if err != nil {
		t.Fatal(err)
	}
	var img []struct {
		Config struct {
			User       string
			Entrypoint []string
		}
		Healthcheck struct{ Test []string }
	}
	if err := json.Unmarshal(out, &img); err != nil || len(img) != 1 {
		t.Fatalf("inspect: %v", err)
	}
	c := img[0].Config
	if c.User != "65532:65532" || len(c.Entrypoint) != 1 || !strings.Contains(strings.Join(img[0].Healthcheck.Test, " "), "healthcheck") {
		t.Fatalf("image: %+v", img[0])
	}
}
