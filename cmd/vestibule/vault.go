package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/server"
	"github.com/vestibule-mdm/vestibule/vaultkey"
)

func (a *app) vaultCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vault",
		Short: "Set up and rotate the enrollment-token key in Vault's transit engine",
		Long: `Manage the enrollment-token key in Vault (the vault section of the
configuration). These commands log in as configured; init and rotate need a
token allowed to create and rotate transit keys, which the server's own
policy (configs/vault-policy.hcl) deliberately does not grant.`,
	}
	var printPolicy bool
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create the transit key (type hmac) or check it, and print the server's policy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			if printPolicy {
				fmt.Fprint(a.out, vaultkey.Policy(cfg.Vault.Mount, cfg.Vault.Key))
				return nil
			}
			t, err := vaultkey.NewTransitSigner(cmd.Context(), server.TransitConfig(cfg, a.logger(cfg), nil))
			if err != nil {
				return err
			}
			defer t.Close()
			info, err := t.EnsureKey(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(a.errOut, "transit key %s/%s: type %s, latest version %d, min_decryption_version %d\n",
				cfg.Vault.Mount, cfg.Vault.Key, info.Type, info.LatestVersion, info.MinDecryptionVersion)
			fmt.Fprintf(a.errOut, "the server's policy (vault policy write vestibule FILE):\n")
			fmt.Fprint(a.out, vaultkey.Policy(cfg.Vault.Mount, cfg.Vault.Key))
			return nil
		},
	}
	initCmd.Flags().BoolVar(&printPolicy, "print-policy", false, "only print the policy, without contacting Vault")
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Rotate the transit key: new tokens use the new version, older tokens verify until retired",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			t, err := vaultkey.NewTransitSigner(cmd.Context(), server.TransitConfig(cfg, a.logger(cfg), nil))
			if err != nil {
				return err
			}
			defer t.Close()
			info, err := t.Rotate(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "rotated %s/%s to version %d; after enrollment.token_ttl retire the old versions with:\n  vault write %s/keys/%s/config min_decryption_version=%d\n",
				cfg.Vault.Mount, cfg.Vault.Key, info.LatestVersion, cfg.Vault.Mount, cfg.Vault.Key, info.LatestVersion)
			return nil
		},
	}
	cmd.AddCommand(initCmd, rotate)
	return cmd
}
