package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/store"
)

func (a *app) migrateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply pending database migrations",
		Long: `Apply pending database migrations, each in its own transaction. A migration
that fails leaves the database as the previous one left it. serve also migrates
at start; replicas on PostgreSQL take an advisory lock so only one migrates.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, err := a.config()
			if err != nil {
				return err
			}
			st, err := store.Open(ctx, cfg.Database.DSN, store.Options{Logger: a.logger(cfg)})
			if err != nil {
				return err
			}
			defer st.Close()
			applied, err := st.Migrate(ctx)
			if err != nil {
				return err
			}
			status, err := st.Migrations(ctx)
			if err != nil {
				return err
			}
			if len(applied) == 0 {
				fmt.Fprintf(a.out, "schema is current at version %d (%s)\n", status.Current, st.Dialect())
				return nil
			}
			fmt.Fprintf(a.out, "applied %d migration(s) %v; schema now at version %d (%s)\n", len(applied), applied, status.Current, st.Dialect())
			return nil
		},
	}
}
