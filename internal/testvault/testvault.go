// Package testvault runs a real Vault-compatible server (OpenBao, built
// from tools/openbao) in dev mode on loopback for tests.
package testvault

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/vestibule-mdm/vestibule/internal/testenv"
)

// BinEnv names the variable holding the OpenBao binary's path;
// scripts/test-vault.sh builds it and prints the path.
const BinEnv = "VESTIBULE_TEST_OPENBAO_BIN"

// Server is a running dev-mode server.
type Server struct {
	t         testing.TB
	bin       string
	Addr      string // http://127.0.0.1:port
	RootToken string
	cmd       *exec.Cmd
	logFile   string
}

// Start runs a server for the test, with the transit engine enabled, and
// stops it at cleanup. Without the binary it skips (or fails where
// VESTIBULE_TEST_REQUIRE names vault).
func Start(t testing.TB) *Server {
	t.Helper()
	bin := os.Getenv(BinEnv)
	if bin == "" {
		testenv.Missing(t, "vault", "build OpenBao with `export "+BinEnv+"=$(scripts/test-vault.sh)`")
	}
	if _, err := os.Stat(bin); err != nil {
		testenv.Missing(t, "vault", fmt.Sprintf("%s=%s: %v", BinEnv, bin, err))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var b [12]byte
	_, _ = rand.Read(b[:])
	s := &Server{t: t, bin: bin, Addr: "http://" + addr, RootToken: "root-" + hex.EncodeToString(b[:]),
		logFile: filepath.Join(t.TempDir(), "openbao.log")}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Restart starts the server (again), waits until it answers and enables
// transit. Dev mode keeps nothing across restarts.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	log, err := os.OpenFile(s.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	s.cmd = exec.Command(s.bin, "server", "-dev", "-dev-root-token-id="+s.RootToken, "-dev-listen-address="+s.Addr[len("http://"):])
	s.cmd.Env = []string{"HOME=" + filepath.Dir(s.logFile), "PATH=/usr/bin:/bin"}
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start OpenBao: %v", err)
	}
	c := s.Client()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		h, err := c.Sys().HealthWithContext(ctx)
		cancel()
		if err == nil && !h.Sealed {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(s.logFile)
			s.t.Fatalf("OpenBao did not come up: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := c.Sys().Mount("transit", &vault.MountInput{Type: "transit"}); err != nil {
		s.t.Fatalf("enable transit: %v", err)
	}
}

// Stop ends the server if it runs.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_, _ = s.cmd.Process.Wait()
	s.cmd = nil
}

// Client is a root client for setting the server up.
func (s *Server) Client() *vault.Client {
	s.t.Helper()
	c, err := vault.NewClient(&vault.Config{Address: s.Addr, HttpClient: &http.Client{Timeout: 5 * time.Second}})
	if err != nil {
		s.t.Fatal(err)
	}
	c.SetToken(s.RootToken)
	return c
}

// TokenFile writes a token to a file for the signer's token_file.
func (s *Server) TokenFile(token string) string {
	s.t.Helper()
	p := filepath.Join(s.t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return p
}
