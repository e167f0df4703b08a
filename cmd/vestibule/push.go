package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/server"
)

func (a *app) pushCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "push DEVICE",
		Short: "Wake a device through APNs now (DEVICE is the device ID or its UDID)",
		Long: `Queue an MDM push to a device: the running server's push workers send it and
the device connects for its commands. Needs push configured (push.cert_file).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withApp(cmd.Context(), func(app *server.App) error {
				if app.Pusher == nil {
					return errors.New("push is not configured (push.cert_file)")
				}
				e, err := app.Enrollments.Resolve(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if err := app.Pusher.PushNow(cmd.Context(), e.ID); err != nil {
					return err
				}
				fmt.Fprintf(a.out, "push queued for %s (%s)\n", e.ID, e.Facts.Serial)
				return nil
			})
		},
	}
}
