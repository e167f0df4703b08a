package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/server"
)

func (a *app) commandsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "commands",
		Short: "Queue MDM commands for a device and see their results",
	}
	var reqType, file string
	enqueue := &cobra.Command{
		Use:   "enqueue DEVICE --type DeviceInformation|ProfileList|InstallProfile [--file PROFILE]",
		Short: "Queue a command (DEVICE is the device ID or its UDID); a pending device gets it only after approval",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var payload []byte
			if file != "" {
				var err error
				if payload, err = os.ReadFile(file); err != nil {
					return err
				}
			}
			c, err := server.NewCommand(reqType, payload)
			if err != nil {
				return err
			}
			return a.withCore(cmd.Context(), func(app *server.App) error {
				e, err := app.Enrollments.Resolve(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if err := app.Commands.Enqueue(cmd.Context(), cliActor(), e, c); err != nil {
					return err
				}
				fmt.Fprintf(a.out, "queued %s %s for %s (%s)\n", c.RequestType, c.UUID, e.ID, e.State)
				return nil
			})
		},
	}
	enqueue.Flags().StringVar(&reqType, "type", "", "DeviceInformation, ProfileList or InstallProfile (required)")
	enqueue.Flags().StringVar(&file, "file", "", "the profile to install (InstallProfile), sent unchanged")
	_ = enqueue.MarkFlagRequired("type")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list DEVICE [--json]",
		Short: "List a device's commands in queue order with their status",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withCore(cmd.Context(), func(app *server.App) error {
				e, err := app.Enrollments.Resolve(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				cmds, err := app.Commands.List(cmd.Context(), e.ID)
				if err != nil {
					return err
				}
				if asJSON {
					if cmds == nil {
						cmds = []enrollment.Command{}
					}
					return a.printJSON(cmds)
				}
				tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tUUID\tTYPE\tSTATUS\tQUEUED\tBY")
				for _, c := range cmds {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", c.Seq, c.UUID, c.RequestType, c.Status, c.CreatedAt.Local().Format("2006-01-02 15:04"), c.CreatedBy)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	cmd.AddCommand(enqueue, list)
	return cmd
}
