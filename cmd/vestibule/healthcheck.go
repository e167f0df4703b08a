package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
)

// healthcheckCmd asks a running server whether it is ready: the health
// check of a container image that has no shell or curl.
func (a *app) healthcheckCmd() *cobra.Command {
	var url, caFile string
	cmd := &cobra.Command{
		Use:   "healthcheck [--url URL [--ca FILE]]",
		Short: "Exit 0 when the server answers /readyz with 200 (for container health checks)",
		Long: `Exit 0 when the server answers /readyz with 200.

Without --url it asks the server this configuration describes, on the
loopback address of its listen port, over HTTPS when tls.cert_file is set.
That certificate is not checked against a name (it is this machine's own
server); with --url, --ca names the CA the server's certificate must chain
to.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client := &http.Client{Timeout: 5 * time.Second}
			if url == "" {
				cfg, err := a.config()
				if err != nil {
					return err
				}
				_, port, err := net.SplitHostPort(cfg.Listen)
				if err != nil {
					return fmt.Errorf("listen: %w", err)
				}
				url = "http://127.0.0.1:" + port + "/readyz"
				if cfg.TLS.CertFile != "" {
					url = "https://127.0.0.1:" + port + "/readyz"
					client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // its own server, on loopback
				}
			} else if caFile != "" {
				pem, err := os.ReadFile(caFile)
				if err != nil {
					return err
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return errors.New("--ca holds no PEM certificate")
				}
				client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("not ready: %w", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("not ready: %s answered HTTP %d", url, resp.StatusCode)
			}
			fmt.Fprintln(a.out, "ready")
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "readiness URL (default: this configuration's server on 127.0.0.1)")
	cmd.Flags().StringVar(&caFile, "ca", "", "with --url: CA file the server's certificate must chain to")
	return cmd
}
