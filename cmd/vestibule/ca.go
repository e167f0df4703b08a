package main

import (
	"crypto/sha256"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/server"
)

func (a *app) caCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Manage the CAs: device identity (SCEP) and device trust",
	}
	var bits int
	var trustCA, profileSigning, all bool
	var tlsHosts []string
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
			if all {
				// Everything a deployment's first start needs, each left as
				// it is when it exists already.
				for _, step := range []func() error{
					func() error {
						_, _, err := server.InitCA(cfg.SCEP.CACertFile, cfg.SCEP.CAKeyFile, cfg.Org.Name, bits)
						return err
					},
					func() error {
						_, _, err := server.InitTrustCA(cfg.Trust.CACertFile, cfg.Trust.CAKeyFile, cfg.Org.Name, bits)
						return err
					},
					func() error {
						ca, err := server.LoadKeyPair(cfg.SCEP.CACertFile, cfg.SCEP.CAKeyFile)
						if err == nil {
							_, _, err = server.InitProfileSigner(cfg.Profile.SigningCertFile, cfg.Profile.SigningKeyFile, cfg.Org.Name, ca)
						}
						return err
					},
					func() error {
						if len(tlsHosts) == 0 {
							return nil
						}
						_, _, err := server.InitLocalTLS(cfg.DataDir, cfg.Org.Name, tlsHosts)
						return err
					},
				} {
					if err := step(); err != nil {
						return err
					}
				}
				fmt.Fprintf(a.out, "keys ready in %s: SCEP CA, trust CA, profile signing%s\n", cfg.DataDir,
					map[bool]string{true: ", local TLS", false: ""}[len(tlsHosts) > 0])
				return nil
			}
			switch {
			case len(tlsHosts) > 0:
				ca, srv, err := server.InitLocalTLS(cfg.DataDir, cfg.Org.Name, tlsHosts)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "local TLS CA %s, server certificate for %v until %s:\n  %s, %s\n", ca.Cert.Subject.CommonName,
					tlsHosts, srv.Cert.NotAfter.Format("2006-01-02"), filepath.Join(cfg.DataDir, "tls.pem"), filepath.Join(cfg.DataDir, "tls.key"))
				return nil
			case profileSigning:
				ca, err := server.LoadKeyPair(cfg.SCEP.CACertFile, cfg.SCEP.CAKeyFile)
				if err != nil {
					return fmt.Errorf("the profile-signing certificate is made by the SCEP CA: %w; run `vestibule ca init` first", err)
				}
				kp, created, err := server.InitProfileSigner(cfg.Profile.SigningCertFile, cfg.Profile.SigningKeyFile, cfg.Org.Name, ca)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "profile signing %s: %s (%s)\n", map[bool]string{true: "created", false: "exists"}[created],
					cfg.Profile.SigningCertFile, kp.Cert.Subject.CommonName)
				return nil
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
	initCmd.Flags().BoolVar(&all, "all", false, "create every key a first start needs: the SCEP CA, the trust CA, profile signing, and with --tls-host local TLS")
	initCmd.Flags().BoolVar(&profileSigning, "profile-signing", false,
		"create the profile-signing key pair (profile.signing_cert_file, profile.signing_key_file), certified by the SCEP CA")
	initCmd.Flags().StringSliceVar(&tlsHosts, "tls-host", nil,
		"create a local TLS CA (DATA_DIR/tls-ca.pem) and a server certificate for these hosts (DATA_DIR/tls.pem, tls.key): HTTPS for a trial")
	cmd.AddCommand(initCmd)
	return cmd
}
