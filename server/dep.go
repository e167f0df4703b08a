package server

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	depclient "github.com/micromdm/nanodep/client"
	"github.com/micromdm/nanodep/godep"
	"github.com/micromdm/nanodep/tokenpki"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/depsync"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/store"
)

// DEP is the Apple Business Manager side: the token key pair, the sealed
// server token and the sync.
type DEP struct {
	cfg    config.Config
	store  *store.Store
	box    *depsync.TokenBox
	Syncer *depsync.Syncer
	log    *slog.Logger
}

// Files in the data dir.
const (
	depBoxKeyFile  = "dep-token.key"
	depCertFile    = "dep-keypair.pem"
	depKeyFile     = "dep-keypair.key"
	depKeypairDays = 365
)

func newDEP(cfg config.Config, st *store.Store, log *slog.Logger) (*DEP, error) {
	key, err := loadOrCreateSecret(filepath.Join(cfg.DataDir, depBoxKeyFile), 32)
	if err != nil {
		return nil, fmt.Errorf("DEP token key: %w", err)
	}
	box, err := depsync.NewTokenBox(key)
	if err != nil {
		return nil, err
	}
	d := &DEP{cfg: cfg, store: st, box: box, log: log}
	client := godep.NewClient(depStorage{d})
	d.Syncer = depsync.NewSyncer(client, st, cfg.DEP.Name, log)
	return d, nil
}

// loadOrCreateSecret reads n random bytes kept in a 0600 file, making them
// on first use.
func loadOrCreateSecret(path string, n int) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) != n {
			return nil, fmt.Errorf("%s: want %d bytes, found %d", path, n, len(b))
		}
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	b = make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	return b, os.WriteFile(path, b, 0o600)
}

// depStorage gives godep the tokens and the API address.
type depStorage struct{ d *DEP }

func (s depStorage) RetrieveAuthTokens(ctx context.Context, name string) (*depclient.OAuth1Tokens, error) {
	srv, err := s.d.store.DEPServer(ctx, name)
	if err != nil || srv.Sealed == "" {
		return nil, fmt.Errorf("no DEP server token for %s: run `vestibule dep token upload`", name)
	}
	return s.d.box.Open(name, srv.Sealed)
}

func (s depStorage) RetrieveConfig(context.Context, string) (*depclient.Config, error) {
	if s.d.cfg.DEP.ServerURL == "" {
		return nil, nil // Apple's default
	}
	return &depclient.Config{BaseURL: s.d.cfg.DEP.ServerURL}, nil
}

// Keypair returns the certificate to upload to Apple Business Manager,
// making the key pair on first use.
func (d *DEP) Keypair() (*x509.Certificate, error) {
	kp, _, err := loadOrCreate(filepath.Join(d.cfg.DataDir, depCertFile), filepath.Join(d.cfg.DataDir, depKeyFile), func() (keyPair, error) {
		key, cert, err := tokenpki.SelfSignedRSAKeypair("vestibule-dep", depKeypairDays)
		if err != nil {
			return keyPair{}, err
		}
		return keyPair{Cert: cert, Key: key}, nil
	})
	return kp.Cert, err
}

// UploadToken decrypts the server token file from ABM and stores its
// tokens sealed.
func (d *DEP) UploadToken(ctx context.Context, actor enrollment.Actor, p7m []byte) (time.Time, error) {
	kp, err := loadKeyPair(filepath.Join(d.cfg.DataDir, depCertFile), filepath.Join(d.cfg.DataDir, depKeyFile))
	if err != nil {
		return time.Time{}, fmt.Errorf("DEP key pair: %w (run `vestibule dep keypair` first)", err)
	}
	tokens, err := depsync.DecryptServerToken(p7m, kp.Cert, kp.Key)
	if err != nil {
		return time.Time{}, err
	}
	sealed, err := d.box.Seal(d.cfg.DEP.Name, tokens)
	if err != nil {
		return time.Time{}, err
	}
	ev := enrollment.AuditEvent{At: time.Now(), Actor: actor.Name, Action: "dep.token.upload", TargetType: "dep_server", TargetID: d.cfg.DEP.Name,
		Outcome: enrollment.OutcomeOK, Detail: "expires " + tokens.AccessTokenExpiry.Format("2006-01-02")}
	return tokens.AccessTokenExpiry, d.store.SaveDEPTokens(ctx, d.cfg.DEP.Name, sealed, tokens.AccessTokenExpiry, ev)
}

// SetTokens stores tokens directly (tests and migrations from other MDMs).
func (d *DEP) SetTokens(ctx context.Context, tokens *depclient.OAuth1Tokens) error {
	sealed, err := d.box.Seal(d.cfg.DEP.Name, tokens)
	if err != nil {
		return err
	}
	return d.store.SaveDEPTokens(ctx, d.cfg.DEP.Name, sealed, tokens.AccessTokenExpiry,
		enrollment.AuditEvent{At: time.Now(), Actor: "system", Action: "dep.token.set", TargetType: "dep_server", TargetID: d.cfg.DEP.Name})
}

// Run syncs every sync_interval until ctx ends.
func (d *DEP) Run(ctx context.Context) {
	for {
		stats, ran, err := d.Syncer.Run(ctx)
		switch {
		case err != nil:
			d.log.Error("DEP sync", "err", err)
		case ran:
			d.log.Info("DEP sync", "pages", stats.Pages, "added", stats.Added, "modified", stats.Modified, "deleted", stats.Deleted)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d.cfg.DEP.SyncInterval.D()):
		}
	}
}

// ApplyProfile defines the DEP profile and assigns it to every device of
// the inventory that has none.
func (d *DEP) ApplyProfile(ctx context.Context) (string, map[string]string, error) {
	devices, err := d.store.ListDEPDevices(ctx, 100_000)
	if err != nil {
		return "", nil, err
	}
	var serials []string
	for _, dev := range devices {
		if dev.OpType != "deleted" {
			serials = append(serials, dev.Serial)
		}
	}
	c := d.cfg
	return depsync.DefineAndAssign(ctx, godep.NewClient(depStorage{d}), c.DEP.Name, depsync.ProfileSettings{
		Name: c.Org.Name + " enrollment", WebURL: c.PublicURL + "/dep/enroll", Department: c.DEP.Department,
		SupportPhone: c.DEP.SupportPhone, SupportEmail: c.DEP.SupportEmail, SkipSetupItems: c.DEP.SkipSetupItems}, serials)
}
