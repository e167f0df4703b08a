package main

import (
	"crypto/sha256"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/server"
)

func (a *app) caCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Manage the CAs: device identity (SCEP) and device trust",
	}
	var bits int
	var trustCA bool
	initCmd := &cobra.Command{
		Use:   "init [--bits 2048] [--trust]",
		Short: "Create the SCEP CA (or, with --trust, the device-trust CA) unless it exists",
		Long: `Create an RSA CA key and a self-signed CA certificate at scep.ca_cert_file and
scep.ca_key_file (default DATA_DIR/ca.pem and DATA_DIR/ca.key), mode 0600.
With --trust, create the device-trust CA instead, at trust.ca_cert_file and
trust.ca_key_file (default DATA_DIR/trust-ca.pem and DATA_DIR/trust-ca.key):
the CA identity providers and access proxies trust, which issues approved
devices their device-trust certificates. The two CAs never share a key.
An existing CA is left as it is. serve --dev does this on its first start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if bits < 2048 || bits > 8192 {
				return fmt.Errorf("--bits must be between 2048 and 8192")
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			certFile, keyFile, initCA := cfg.SCEP.CACertFile, cfg.SCEP.CAKeyFile, server.InitCA
			if trustCA {
				certFile, keyFile, initCA = cfg.Trust.CACertFile, cfg.Trust.CAKeyFile, server.InitTrustCA
			}
			ca, created, err := initCA(certFile, keyFile, cfg.Org.Name, bits)
			if err != nil {
				return err
			}
			verb := "exists"
			if created {
				verb = "created"
			}
			sum := sha256.Sum256(ca.Cert.Raw)
			fmt.Fprintf(a.out, "CA %s: %s\n  subject  %s\n  expires  %s\n  sha256   %X\n  key      %s\n", verb, certFile,
				ca.Cert.Subject, ca.Cert.NotAfter.Format("2006-01-02"), sum, keyFile)
			return nil
		},
	}
	initCmd.Flags().IntVar(&bits, "bits", 2048, "RSA key size")
	initCmd.Flags().BoolVar(&trustCA, "trust", false, "create the device-trust CA instead of the SCEP CA")
	cmd.AddCommand(initCmd)
	return cmd
}
