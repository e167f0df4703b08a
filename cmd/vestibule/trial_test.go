package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vestibule-mdm/vestibule/internal/testvault"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

// composeFile is what the test reads of deploy/compose/compose.yaml.
type composeFile struct {
	Env      map[string]string `yaml:"x-vestibule-env"`
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		ReadOnly    bool              `yaml:"read_only"`
		DependsOn   map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
	} `yaml:"services"`
}

// TestComposeTrial runs the production-like trial of
// deploy/compose/compose.yaml without a container engine (this machine's
// cannot run containers): the same commands, in the same order, with the
// same configuration, against a real PostgreSQL and a real Vault-compatible
// server. Only the addresses of the services change. The server must come
// up over HTTPS with its generated local CA and its token key in Vault.
func TestComposeTrial(t *testing.T) {
	b, err := os.ReadFile("../../deploy/compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"postgres", "openbao", "keys", "vault-key", "vestibule"} {
		if _, ok := c.Services[s]; !ok {
			t.Fatalf("compose has no %s service", s)
		}
	}
	if v := c.Services["vestibule"]; !v.ReadOnly || v.DependsOn["vault-key"].Condition != "service_completed_successfully" ||
		v.DependsOn["postgres"].Condition != "service_healthy" {
		t.Fatalf("the vestibule service: %+v", v)
	}
	dsn := storetest.DSN(t, "postgres")
	vault := testvault.Start(t)
	data := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	// The services' addresses, as this machine has them.
	env := map[string]string{}
	for k, v := range c.Services["vestibule"].Environment {
		v = strings.ReplaceAll(v, "/var/lib/vestibule", data)
		switch k {
		case "VESTIBULE_DATABASE_DSN":
			v = dsn
		case "VESTIBULE_VAULT_ADDRESS":
			v = vault.Addr
		case "VESTIBULE_VAULT_TOKEN_FILE":
			v = vault.TokenFile(vault.RootToken)
		case "VESTIBULE_LISTEN":
			v = fmt.Sprintf("127.0.0.1:%d", port)
		case "VESTIBULE_PUBLIC_URL":
			v = fmt.Sprintf("https://localhost:%d", port)
		}
		env[k] = v
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	for _, svc := range []string{"keys", "vault-key"} {
		var out, errOut strings.Builder
		if code := run(context.Background(), c.Services[svc].Command, &out, &errOut); code != 0 {
			t.Fatalf("%s (%v): %s %s", svc, c.Services[svc].Command, out.String(), errOut.String())
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var serveErr syncBuffer
	go func() { done <- run(ctx, c.Services["vestibule"].Command, io.Discard, &serveErr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})
	pem, err := os.ReadFile(filepath.Join(data, "tls-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	url := fmt.Sprintf("https://localhost:%d/readyz", port)
	var body string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := client.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if body = string(b); resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the trial never became ready: %v %s\n%s", err, body, serveErr.String())
		}
	}
	if !strings.Contains(body, `"vault":"ok"`) || !strings.Contains(body, `"database":"ok"`) {
		t.Fatalf("readyz: %s", body)
	}
	// The image's health check, as the container engine runs it.
	var out, errOut strings.Builder
	if code := run(context.Background(), []string{"healthcheck"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "ready") {
		t.Fatalf("healthcheck: %d %s %s", code, out.String(), errOut.String())
	}
	// And the README's next step.
	if code := run(context.Background(), []string{"user", "add", "you@example.com", "--role", "admin"}, &out, &errOut); code != 0 {
		t.Fatalf("user add: %s", errOut.String())
	}
}
