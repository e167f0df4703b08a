package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/store"
)

// app holds what every command shares: the flags and where output goes.
type app struct {
	flags  config.Overrides
	out    io.Writer
	errOut io.Writer
	env    []string
}

// run executes the command line and returns the process exit code.
func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	a := &app{out: out, errOut: errOut, env: os.Environ()}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(errOut)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(errOut, "error:", err)
		return 1
	}
	return 0
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "vestibule",
		Short: "Vestibule: MDM enrollment where a serial number alone never enrolls a device",
		Long: `Vestibule enrolls Apple devices only through a person signed in at the company
IdP, a profile made for one reserved device, and an administrator's approval.

Every command takes the same --config, --dev, --data-dir, --db and --public-url
flags as serve, and acts on the same store and keys as a server started with them.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.flags.ConfigFile, "config", "", "configuration file (YAML); keys are overridable by VESTIBULE_* variables")
	pf.BoolVar(&a.flags.Dev, "dev", false, "use the embedded development defaults (SQLite, generated keys in ./data, HTTP on 127.0.0.1)")
	pf.StringVar(&a.flags.DataDir, "data-dir", "", "directory for the SQLite database, keys and CA (data_dir)")
	pf.StringVar(&a.flags.DB, "db", "", "database DSN: postgres://... or sqlite:PATH (database.dsn)")
	pf.StringVar(&a.flags.PublicURL, "public-url", "", "URL devices and browsers reach Vestibule at (public_url)")
	root.AddCommand(a.serveCmd(), a.migrateCmd(), a.versionCmd(), a.userCmd())
	return root
}

func (a *app) config() (config.Config, error) {
	return config.Load(a.flags, a.env)
}

func (a *app) logger(cfg config.Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(a.errOut, opts))
	}
	return slog.New(slog.NewTextHandler(a.errOut, opts))
}

// openStore opens the configured store for an admin command. In --dev the
// schema is brought up to date; otherwise pending migrations are an error,
// so an old binary never writes to a newer schema or the other way round.
func (a *app) openStore(ctx context.Context, cfg config.Config, log *slog.Logger) (*store.Store, error) {
	st, err := store.Open(ctx, cfg.Database.DSN, store.Options{MaxOpenConns: cfg.Database.MaxOpenConns, Logger: log})
	if err != nil {
		return nil, err
	}
	if cfg.Dev {
		if _, err := st.Migrate(ctx); err != nil {
			st.Close()
			return nil, err
		}
		return st, nil
	}
	status, err := st.Migrations(ctx)
	if err != nil {
		st.Close()
		return nil, err
	}
	if status.Pending() {
		st.Close()
		return nil, errors.New("the database schema is not current: run `vestibule migrate` first")
	}
	return st, nil
}

// withStore loads the configuration, opens the store and runs fn.
func (a *app) withStore(ctx context.Context, fn func(cfg config.Config, st *store.Store) error) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	// Admin commands log only problems: their output is for the person.
	cfg.Log.Level = "warn"
	st, err := a.openStore(ctx, cfg, a.logger(cfg))
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(cfg, st)
}
