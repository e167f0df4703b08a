package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/internal/gcfloor"
	"github.com/vestibule-mdm/vestibule/server"
)

// startGCFloor applies runtime.gc_heap_floor_mb unless it is 0 or the
// operator tuned the collector through GOGC or GOMEMLIMIT.
func startGCFloor(mib int, getenv func(string) string, log *slog.Logger) *gcfloor.Floor {
	if mib == 0 {
		return nil
	}
	for _, v := range []string{"GOGC", "GOMEMLIMIT"} {
		if getenv(v) != "" {
			log.Info("the environment tunes the garbage collector; runtime.gc_heap_floor_mb is not applied", "variable", v)
			return nil
		}
	}
	log.Info("the garbage collector lets the heap grow to a floor", "runtime.gc_heap_floor_mb", mib)
	return gcfloor.Start(uint64(mib) << 20)
}

func (a *app) serveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the Vestibule server",
		Long: `Run the Vestibule server: the enrollment portal, the admin console, SCEP and
the MDM check-in endpoints, plus /healthz, /readyz and /metrics.

With --dev it runs on the embedded defaults: SQLite and generated keys in
./data, HTTP on 127.0.0.1:8080, and a one-time admin password printed at start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, err := a.config()
			if err != nil {
				return err
			}
			log := a.logger(cfg)
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				return fmt.Errorf("listen: %w", err)
			}
			defer ln.Close()
			if cfg.PublicURL == "" {
				// --dev on port 0: the URL is known only once bound.
				cfg.PublicURL = "http://" + ln.Addr().String()
			}
			app, err := server.Build(ctx, cfg, log, true)
			if err != nil {
				return err
			}
			defer app.Close()
			if cfg.Signer.Backend == "local" {
				log.Warn("the enrollment-token HMAC key is in a local file; production keeps it in Vault (signer.backend: vault)",
					"file", cfg.Signer.LocalKeyFile)
			}
			srv, err := server.New(app)
			if err != nil {
				return err
			}
			if cfg.Metrics.Listen != "" {
				mln, err := net.Listen("tcp", cfg.Metrics.Listen)
				if err != nil {
					return fmt.Errorf("metrics.listen: %w", err)
				}
				defer mln.Close()
				go func() {
					if err := srv.ServeMetrics(ctx, mln); err != nil {
						log.Error("metrics listener stopped", "err", err)
					}
				}()
				log.Info("metrics on their own listener", "addr", mln.Addr().String())
			}
			if app.Pusher != nil {
				pushCtx, stopPush := context.WithCancel(ctx)
				app.Pusher.Start(pushCtx)
				// Deferred after app.Close, so it runs first: the workers'
				// last completions need the store.
				defer func() {
					stopPush()
					app.Pusher.Wait()
				}()
				log.Info("push on", "topic", app.Pusher.Topic(), "certificate_expires", app.Pusher.Expires().Format("2006-01-02"), "workers", cfg.Push.Workers)
			} else {
				log.Info("push is off (no push.cert_file): approved devices pick up commands at their next check-in")
			}
			if app.DEP != nil {
				go app.DEP.Run(ctx)
			}
			go app.Refusals.Run(ctx)
			if app.Webhook != nil {
				go app.Webhook.Run(ctx)
			}
			if app.Trust != nil {
				app.Trust.Run(ctx)
			}
			var password string
			if cfg.Dev {
				if password, err = server.EnsureDevAdmin(ctx, app.Store); err != nil {
					return err
				}
			}
			// Admin commands beside this server issue profiles for it.
			if err := app.Store.SetSetting(ctx, server.SettingPublicURL, cfg.PublicURL, time.Now()); err != nil {
				return err
			}
			// Only once serving: the start's own garbage (migrations, keys,
			// templates) is collected as Go would, and the start stays small.
			if floor := startGCFloor(cfg.Runtime.GCHeapFloorMB, os.Getenv, log); floor != nil {
				defer floor.Stop()
			}
			a.printBanner(cfg.Dev, cfg.PublicURL, cfg.DataDir, app.Store.Dialect(), password)
			log.Info("listening", "addr", ln.Addr().String(), "public_url", cfg.PublicURL, "database", app.Store.Dialect())
			return srv.Serve(ctx, ln)
		},
	}
	cmd.Flags().StringVar(&a.flags.Listen, "listen", "", "address to listen on, host:port (listen)")
	return cmd
}

func (a *app) printBanner(dev bool, url, dataDir, dialect, password string) {
	w := a.out
	if !dev {
		fmt.Fprintf(w, "Vestibule is listening on %s\n", url)
		return
	}
	abs, _ := filepath.Abs(dataDir)
	fmt.Fprintf(w, `
Vestibule is running in development mode.

  URL:       %s
  Console:   %s/login
  Admin:     %s
  Password:  %s   (one-time: a new one is printed at every start)
  Data:      %s (%s database, keys)

Next:
  curl %s/readyz
  go run ./cmd/vestibule --dev user add you@example.com --name "You"
  go run ./cmd/vestibule --dev user list

Development mode keeps the token key in a local file. Production keeps it in Vault.

`, url, url, server.DevAdminEmail, password, abs, dialect, url)
}
