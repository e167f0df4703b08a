package main

import (
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/server"
)

func (a *app) depCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dep",
		Short: "Apple Business Manager: the server token and the device inventory (needs dep.enabled)",
	}
	// withDEP runs fn on the DEP side of the configured App.
	withDEP := func(cmd *cobra.Command, fn func(app *server.App, d *server.DEP) error) error {
		return a.withApp(cmd.Context(), func(app *server.App) error {
			if app.DEP == nil {
				return errors.New("the ABM sync is off: set dep.enabled: true")
			}
			return fn(app, app.DEP)
		})
	}
	var out string
	keypair := &cobra.Command{
		Use:   "keypair [-o FILE]",
		Short: "Write the certificate to upload to Apple Business Manager (the key stays in the data dir)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withDEP(cmd, func(app *server.App, d *server.DEP) error {
				cert, err := d.Keypair()
				if err != nil {
					return err
				}
				b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
				if out == "" {
					_, err = a.out.Write(b)
					return err
				}
				return os.WriteFile(out, b, 0o644)
			})
		},
	}
	keypair.Flags().StringVarP(&out, "output", "o", "", "file to write the certificate to")
	token := &cobra.Command{Use: "token", Short: "The DEP server token"}
	upload := &cobra.Command{
		Use:   "upload FILE.p7m",
		Short: "Decrypt the server token downloaded from ABM and store it (sealed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			return withDEP(cmd, func(app *server.App, d *server.DEP) error {
				exp, err := d.UploadToken(cmd.Context(), cliActor(), b)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "stored the DEP server token; it expires %s\n", exp.Format("2006-01-02"))
				return nil
			})
		},
	}
	token.AddCommand(upload)
	var now bool
	syncCmd := &cobra.Command{
		Use:   "sync --now",
		Short: "Sync the inventory now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !now {
				return errors.New("say --now: the server syncs on its own every dep.sync_interval")
			}
			return withDEP(cmd, func(app *server.App, d *server.DEP) error {
				st, ran, err := d.Syncer.Run(cmd.Context())
				if err != nil {
					return err
				}
				if !ran {
					return errors.New("another sync is running")
				}
				fmt.Fprintf(a.out, "synced: %d page(s), %d added, %d modified, %d deleted\n", st.Pages, st.Added, st.Modified, st.Deleted)
				return nil
			})
		},
	}
	syncCmd.Flags().BoolVar(&now, "now", false, "sync now")
	var asJSON bool
	devices := &cobra.Command{
		Use:   "devices [--json]",
		Short: "List the synced inventory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withApp(cmd.Context(), func(app *server.App) error {
				list, err := app.Store.ListDEPDevices(cmd.Context(), 100_000)
				if err != nil {
					return err
				}
				if asJSON {
					return a.printJSON(list)
				}
				tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SERIAL\tMODEL\tDESCRIPTION\tPROFILE\tLAST OP")
				for _, d := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Serial, d.Model, d.Description, d.ProfileStatus, d.OpType)
				}
				return tw.Flush()
			})
		},
	}
	devices.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	profile := &cobra.Command{Use: "profile", Short: "The DEP profile that sends Setup Assistant to the portal"}
	apply := &cobra.Command{
		Use:   "apply",
		Short: "Define the DEP profile (configuration_web_url = PUBLIC_URL/dep/enroll) and assign it to the inventory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withDEP(cmd, func(app *server.App, d *server.DEP) error {
				uuid, results, err := d.ApplyProfile(cmd.Context())
				if err != nil {
					return err
				}
				counts := map[string]int{}
				for _, r := range results {
					counts[r]++
				}
				fmt.Fprintf(a.out, "DEP profile %s defined; assignment results: %v\n", uuid, counts)
				return nil
			})
		},
	}
	profile.AddCommand(apply)
	cmd.AddCommand(keypair, token, syncCmd, devices, profile)
	return cmd
}
