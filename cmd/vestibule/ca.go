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
		Short: "Manage the CA that issues device identity certificates",
	}
	var bits int
	initCmd := &cobra.Command{
		Use:   "init [--bits 2048]",
		Short: "Create the SCEP CA key and certificate (scep.ca_cert_file, scep.ca_key_file) unless they exist",
		Long: `Create an RSA CA key and a self-signed CA certificate at scep.ca_cert_file and
scep.ca_key_file (default DATA_DIR/ca.pem and DATA_DIR/ca.key), mode 0600.
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
			ca, created, err := server.InitCA(cfg.SCEP.CACertFile, cfg.SCEP.CAKeyFile, cfg.Org.Name, bits)
			if err != nil {
				return err
			}
			verb := "exists"
			if created {
				verb = "created"
			}
			sum := sha256.Sum256(ca.Cert.Raw)
			fmt.Fprintf(a.out, "CA %s: %s\n  subject  %s\n  expires  %s\n  sha256   %X\n  key      %s\n", verb, cfg.SCEP.CACertFile,
				ca.Cert.Subject, ca.Cert.NotAfter.Format("2006-01-02"), sum, cfg.SCEP.CAKeyFile)
			return nil
		},
	}
	initCmd.Flags().IntVar(&bits, "bits", 2048, "RSA key size")
	cmd.AddCommand(initCmd)
	return cmd
}
