package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/store"
)

// App is everything a configuration builds: the store, the keys and the
// domain services. serve and every admin command use the same App, so a
// command acts on exactly what a server with that configuration would.
type App struct {
	Config       config.Config
	Log          *slog.Logger
	Store        *store.Store
	Signer       enrollment.Signer
	Tokens       *enrollment.Tokens
	Reservations *enrollment.Reservations
	Users        *enrollment.Users
	Enrollments  *enrollment.Enrollments
	Commands     *enrollment.Commands
	APITokens    *auth.APITokens
	Profiles     *Profiles
	CA           keyPair
	closers      []func() error
}

// Build opens the store (migrated, or checked current when migrate is
// false) and builds keys and services. cfg.PublicURL must be final.
func Build(ctx context.Context, cfg config.Config, log *slog.Logger, migrate bool) (*App, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &App{Config: cfg, Log: log}
	st, err := store.Open(ctx, cfg.Database.DSN, store.Options{MaxOpenConns: cfg.Database.MaxOpenConns, Logger: log})
	if err != nil {
		return nil, err
	}
	a.Store = st
	a.closers = append(a.closers, st.Close)
	if err := a.schema(ctx, migrate); err != nil {
		a.Close()
		return nil, err
	}
	if a.Signer, err = newSigner(cfg, log); err != nil {
		a.Close()
		return nil, err
	}
	if a.Tokens, err = enrollment.NewTokens(a.Signer, cfg.Org.ID, cfg.Enroll.ClockSkew.D(), time.Now); err != nil {
		a.Close()
		return nil, err
	}
	a.Reservations = enrollment.NewReservations(st, a.Tokens, cfg.Org.ID, cfg.Enroll.TokenTTL.D(), time.Now)
	a.Users = enrollment.NewUsers(st, time.Now)
	a.Commands = enrollment.NewCommands(st, time.Now)
	a.Enrollments = enrollment.NewEnrollments(st, a.Tokens, nil, time.Now)
	a.APITokens = auth.NewAPITokens(st, time.Now)
	if a.CA, _, err = devCA(cfg.DataDir, cfg.Org.Name); err != nil {
		a.Close()
		return nil, fmt.Errorf("CA: %w", err)
	}
	if a.Profiles, err = NewProfiles(cfg, a.CA); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

func (a *App) schema(ctx context.Context, migrate bool) error {
	if migrate {
		applied, err := a.Store.Migrate(ctx)
		if err != nil {
			return err
		}
		if len(applied) > 0 {
			a.Log.Info("database migrated", "versions", applied)
		}
		return nil
	}
	status, err := a.Store.Migrations(ctx)
	if err != nil {
		return err
	}
	if status.Pending() {
		return fmt.Errorf("the database schema is at version %d, this binary needs %d: run `vestibule migrate` first", status.Current, status.Target)
	}
	return nil
}

// Close releases what Build opened.
func (a *App) Close() error {
	var first error
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i](); err != nil && first == nil {
			first = err
		}
	}
	return first
}
