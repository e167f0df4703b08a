package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/server"
)

func (a *app) profileCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "profile",
		Short: "Issue enrollment profiles",
	}
	var email, out, identity string
	issue := &cobra.Command{
		Use:   "issue --user EMAIL -o FILE [--identity scep|acme]",
		Short: "Reserve a device ID for a user and write its signed enrollment profile",
		Long: `Reserve a device ID for a known user and write the signed enrollment profile
for it (for an admin enrolling a device on a user's behalf). The profile
carries a one-time SCEP challenge and an enrollment token that expire together
(enrollment.token_ttl, 1h by default); the device that installs it still waits
for an administrator's approval.

--identity acme makes a profile for iOS 16, iPadOS 16, macOS 14 or later:
the identity key is made in the Secure Enclave and its certificate fetched
over ACME, with Apple attesting the key, serial and UDID. SCEP (the default)
works on every device.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The file is made first: a path that cannot be written must not
			// leave an open reservation behind.
			tmp, err := os.CreateTemp(filepath.Dir(out), ".vestibule-profile-*")
			if err != nil {
				return fmt.Errorf("cannot write the profile to %s: %w", out, err)
			}
			defer os.Remove(tmp.Name())
			defer tmp.Close()
			return a.withApp(cmd.Context(), func(app *server.App) error {
				ctx := cmd.Context()
				res, sec, err := app.Reservations.ReserveAs(ctx, cliActor(), email, identity)
				if err != nil {
					return err
				}
				body, err := app.Profiles.MakeProfile(ctx, res, sec)
				if err == nil {
					_, err = tmp.Write(body)
				}
				if err == nil {
					err = tmp.Close()
				}
				if err == nil {
					err = os.Chmod(tmp.Name(), 0o600)
				}
				if err == nil {
					err = os.Rename(tmp.Name(), out)
				}
				if err != nil {
					// Nothing usable was written: the reservation goes too.
					if rerr := app.Reservations.Revoke(ctx, cliActor(), res.ID); rerr != nil {
						return fmt.Errorf("write profile: %w (and revoking reservation %s failed: %v)", err, res.ID, rerr)
					}
					return fmt.Errorf("write profile: %w (reservation %s revoked)", err, res.ID)
				}
				fmt.Fprintf(a.out, "reserved device %s for %s until %s (identity over %s)\nwrote %s\n", res.ID, res.UserEmail,
					res.ExpiresAt.Local().Format("2006-01-02 15:04 MST"), strings.ToUpper(res.Identity), out)
				return nil
			})
		},
	}
	issue.Flags().StringVar(&email, "user", "", "e-mail of the user the device is for (required)")
	issue.Flags().StringVarP(&out, "output", "o", "", "file to write the .mobileconfig to (required)")
	issue.Flags().StringVar(&identity, "identity", enrollment.IdentitySCEP, "how the device gets its identity: scep (any device) or acme (Secure Enclave key, attested)")
	_ = issue.MarkFlagRequired("user")
	_ = issue.MarkFlagRequired("output")
	cmd.AddCommand(issue)
	return cmd
}
