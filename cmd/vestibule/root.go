package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/server"
	"github.com/vestibule-mdm/vestibule/store"
	"github.com/vestibule-mdm/vestibule/store/dsn"
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
		fmt.Fprintln(errOut, "error:", enrollment.Explain(err))
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
	root.AddCommand(a.serveCmd(), a.migrateCmd(), a.versionCmd(), a.userCmd(), a.tokenCmd(), a.profileCmd(), a.enrollmentsCmd(), a.commandsCmd(), a.caCmd(), a.vaultCmd(), a.pushCmd(), a.depCmd(), a.simulateCmd(), a.healthcheckCmd(), a.backupCmd())
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands makes every command group fail on a word it does
// not know, suggesting the nearest, instead of printing its help and
// exiting 0: a script must not believe a mistyped command ran.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	cmd.SuggestionsMinimumDistance = 2
	for _, sub := range cmd.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !cmd.HasSubCommands() || cmd.Runnable() {
		return
	}
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return c.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return fmt.Errorf("%s (see %s --help)", msg, c.CommandPath())
	}
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
	if err := requireStore(ctx, cfg); err != nil {
		return err
	}
	if cfg.Dev && !a.publicURLGiven() {
		// Profiles must point at the server that runs, not at a default.
		if url := recordedPublicURL(ctx, cfg); url != "" && url != cfg.PublicURL {
			cfg.PublicURL = url
			fmt.Fprintf(a.errOut, "using the public URL the running server recorded: %s (--public-url to choose another)\n", url)
		}
	}
	app, err := build(ctx, cfg, a.logger(cfg), cfg.Dev)
	if err != nil {
		return err
	}
	defer app.Close()
	return fn(app)
}

// recordedPublicURL is the public URL serve recorded in the store, or "".
func recordedPublicURL(ctx context.Context, cfg config.Config) string {
	st, err := store.Open(ctx, cfg.Database.DSN, store.Options{})
	if err != nil {
		return ""
	}
	defer st.Close()
	url, err := st.Setting(ctx, server.SettingPublicURL)
	if err != nil {
		return ""
	}
	return url
}

// publicURLGiven reports whether the person chose the public URL.
func (a *app) publicURLGiven() bool {
	if a.flags.PublicURL != "" {
		return true
	}
	for _, kv := range a.env {
		if strings.HasPrefix(kv, "VESTIBULE_PUBLIC_URL=") {
			return true
		}
	}
	return false
}

// requireStore refuses to run an admin command on a store that does not
// exist: only serve (and migrate) create one, so a mistyped --data-dir or
// --db is an error, not a new, empty store with new keys.
func requireStore(ctx context.Context, cfg config.Config) error {
	kind, path, err := dsn.Split(cfg.Database.DSN)
	if err != nil {
		return err
	}
	start := "start one with `vestibule serve --dev` (or `vestibule migrate` for a deployment), or pass the --data-dir or --db of an existing one"
	if kind == "sqlite" {
		path, _, _ = strings.Cut(path, "?")
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("there is no Vestibule store at %s: %s", path, start)
		}
		return nil
	}
	if !cfg.Dev {
		return nil // a deployment's schema is checked, never created, by the command itself
	}
	st, err := store.Open(ctx, cfg.Database.DSN, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	status, err := st.Migrations(ctx)
	if err != nil {
		return err
	}
	if status.Current == 0 {
		return fmt.Errorf("the database %s holds no Vestibule store: %s", dsn.Redact(cfg.Database.DSN), start)
	}
	return nil
}

// printJSON writes v as indented JSON, the --json form of every listing.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
