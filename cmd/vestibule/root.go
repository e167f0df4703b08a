package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/server"
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
	root.AddCommand(a.serveCmd(), a.migrateCmd(), a.versionCmd(), a.userCmd(), a.tokenCmd(), a.profileCmd(), a.enrollmentsCmd(), a.commandsCmd(), a.caCmd(), a.vaultCmd(), a.pushCmd(), a.depCmd())
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

// withApp loads the configuration, builds the App an admin command acts on
// and runs fn. In --dev the schema is brought up to date; otherwise pending
// migrations are an error, so an old binary never writes to a newer schema
// or the other way round.
func (a *app) withApp(ctx context.Context, fn func(app *server.App) error) error {
	return a.with(ctx, func(ctx context.Context, cfg config.Config, log *slog.Logger, migrate bool) (*server.App, error) {
		return server.Build(ctx, cfg, log, migrate)
	}, fn)
}

// withCore runs fn on the part of the App that decides and administers:
// no token key, identity provider, APNs or Apple is contacted (see
// server.BuildCore).
func (a *app) withCore(ctx context.Context, fn func(app *server.App) error) error {
	return a.with(ctx, server.BuildCore, fn)
}

func (a *app) with(ctx context.Context, build func(context.Context, config.Config, *slog.Logger, bool) (*server.App, error),
	fn func(app *server.App) error) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	// Admin commands log only problems: their output is for the person.
	cfg.Log.Level = "warn"
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://" + cfg.Listen
	}
	app, err := build(ctx, cfg, a.logger(cfg), cfg.Dev)
	if err != nil {
		return err
	}
	defer app.Close()
	return fn(app)
}

// printJSON writes v as indented JSON, the --json form of every listing.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
