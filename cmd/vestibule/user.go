package main

import (
	"fmt"
	"os"
	"os/user"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/server"
)

// cliActor names the person at the terminal in the audit log.
func cliActor() enrollment.Actor {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	return enrollment.Actor{Name: "cli:" + name}
}

func (a *app) userCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "user",
		Short: "Manage the people allowed to enroll devices and use the console",
	}
	var name, role string
	var admin bool
	add := &cobra.Command{
		Use:   "add EMAIL",
		Short: "Add a user (only known users may enroll devices)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withCore(cmd.Context(), func(app *server.App) error {
				r := enrollment.Role(role)
				if admin {
					r = enrollment.RoleAdmin
				}
				u, err := app.Users.Add(cmd.Context(), cliActor(), enrollment.UserInput{Email: args[0], Name: name, Role: r})
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "added %s (%s) id %s\n", u.Email, u.Role, u.ID)
				return nil
			})
		},
	}
	add.Flags().StringVar(&name, "name", "", "display name")
	add.Flags().StringVar(&role, "role", "user", "role: user, viewer, approver or admin")
	add.Flags().BoolVar(&admin, "admin", false, "shorthand for --role admin")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withCore(cmd.Context(), func(app *server.App) error {
				users, err := app.Store.ListUsers(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					if users == nil {
						users = []enrollment.User{}
					}
					return a.printJSON(users)
				}
				tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "EMAIL\tNAME\tROLE\tSTATE\tCREATED")
				for _, u := range users {
					state := "enabled"
					if !u.Enabled() {
						state = "disabled"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Email, u.Name, u.Role, state, u.CreatedAt.Format("2006-01-02 15:04"))
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")

	imp := &cobra.Command{
		Use:   "import FILE.csv",
		Short: "Create or update users from a CSV file (columns: email, name, role)",
		Long: `Create or update users from a CSV file whose first line is a header naming
the columns: email (required), name and role (user, viewer, approver, admin).
Users are matched by e-mail. The whole file is imported in one transaction: a
bad line imports nothing and the error names the line.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			return a.withCore(cmd.Context(), func(app *server.App) error {
				created, updated, err := app.Users.Import(cmd.Context(), cliActor(), f)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "imported %s: %d created, %d updated\n", args[0], created, updated)
				return nil
			})
		},
	}
	cmd.AddCommand(add, list, imp)
	return cmd
}
