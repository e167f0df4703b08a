package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/server"
)

func (a *app) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage API bearer tokens",
	}
	var name, role string
	create := &cobra.Command{
		Use:   "create --name NAME [--role admin|approver|viewer|receiver]",
		Short: "Create an API token and print it once (only its hash is stored)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := enrollment.ParseTokenRole(role)
			if err != nil {
				return err
			}
			return a.withCore(cmd.Context(), func(app *server.App) error {
				t, secret, err := app.APITokens.Create(cmd.Context(), cliActor(), name, r)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.errOut, "created API token %q (%s); it is shown once, store it now:\n", t.Name, t.Role)
				fmt.Fprintln(a.out, secret)
				return nil
			})
		},
	}
	create.Flags().StringVar(&name, "name", "", "a name saying who or what uses the token (required)")
	create.Flags().StringVar(&role, "role", "viewer", "role: viewer (the least privilege, default), approver, admin or receiver")
	_ = create.MarkFlagRequired("name")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List API tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withCore(cmd.Context(), func(app *server.App) error {
				tokens, err := app.APITokens.List(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					if tokens == nil {
						tokens = []auth.APIToken{}
					}
					return json.NewEncoder(a.out).Encode(tokens)
				}
				tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tROLE\tCREATED\tLAST USED\tSTATE")
				for _, t := range tokens {
					used, state := "never", "active"
					if t.LastUsedAt != nil {
						used = t.LastUsedAt.Format("2006-01-02 15:04")
					}
					if t.RevokedAt != nil {
						state = "revoked"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Name, t.Role, t.CreatedAt.Format("2006-01-02 15:04"), used, state)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke an API token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withCore(cmd.Context(), func(app *server.App) error {
				if err := app.APITokens.Revoke(cmd.Context(), cliActor(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(a.out, "revoked %s\n", args[0])
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
