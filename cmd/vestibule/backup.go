package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/store"
	"github.com/vestibule-mdm/vestibule/store/dsn"
)

func (a *app) backupCmd() *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "backup --to DIR",
		Short: "Copy the store and its keys to DIR while the server runs (SQLite); name what to keep beside a pg_dump (PostgreSQL)",
		Long: `Write a consistent copy of the store and every key it needs to DIR, which
must not exist yet. With SQLite the database is copied online (VACUUM INTO),
so the server keeps running; DIR is then a data dir: restore by pointing
--data-dir at it (or copying it back).

With PostgreSQL the database is dumped with pg_dump, not by this command;
it copies the keys and says what else to keep. The keys are secrets: keep
the backup as safe as the server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			if err := requireStore(cmd.Context(), cfg); err != nil {
				return err
			}
			if _, err := os.Stat(to); err == nil {
				return fmt.Errorf("%s exists: back up into a new folder", to)
			}
			if err := os.MkdirAll(to, 0o700); err != nil {
				return err
			}
			kind, path, err := dsn.Split(cfg.Database.DSN)
			if err != nil {
				return err
			}
			if kind == "sqlite" {
				st, err := store.Open(cmd.Context(), cfg.Database.DSN, store.Options{})
				if err != nil {
					return err
				}
				target := filepath.Join(to, filepath.Base(strings.SplitN(path, "?", 2)[0]))
				err = st.BackupSQLite(cmd.Context(), target)
				st.Close()
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "database: %s\n", target)
			} else {
				fmt.Fprintf(a.out, "database: PostgreSQL is not copied by this command; run pg_dump (see README.md, Backups)\n")
			}
			copied, err := copyKeys(cfg, to)
			if err != nil {
				return err
			}
			for _, c := range copied {
				fmt.Fprintf(a.out, "key: %s\n", c)
			}
			if cfg.Signer.Backend == "vault" {
				fmt.Fprintf(a.out, "the enrollment-token key is in Vault (%s/%s) and not exportable: keep Vault's own backup\n", cfg.Vault.Mount, cfg.Vault.Key)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "new folder to write the backup to (required)")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// copyKeys copies every key file of the configuration into dir, under the
// names a data dir uses, and returns what it copied.
func copyKeys(cfg config.Config, dir string) ([]string, error) {
	files := []string{cfg.SCEP.CACertFile, cfg.SCEP.CAKeyFile, cfg.Trust.CACertFile, cfg.Trust.CAKeyFile,
		cfg.Profile.SigningCertFile, cfg.Profile.SigningKeyFile, cfg.Signer.LocalKeyFile, cfg.TLS.CertFile, cfg.TLS.KeyFile}
	if cfg.Dev {
		// --dev's defaults, where a configuration names none.
		for _, n := range []string{"profile-signing.pem", "profile-signing.key", "tls-ca.pem", "tls-ca.key"} {
			files = append(files, filepath.Join(cfg.DataDir, n))
		}
	}
	var copied []string
	seen := map[string]bool{}
	for _, f := range files {
		if f == "" || seen[f] {
			continue
		}
		seen[f] = true
		if err := copyFile(f, filepath.Join(dir, filepath.Base(f))); errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return copied, err
		}
		copied = append(copied, filepath.Join(dir, filepath.Base(f)))
	}
	if keys, err := filepath.Glob(filepath.Join(cfg.Trust.SSFKeyDir, "es256-*.pem")); err == nil && len(keys) > 0 {
		sub := filepath.Join(dir, "ssf-keys")
		if err := os.MkdirAll(sub, 0o700); err != nil {
			return copied, err
		}
		for _, k := range keys {
			if err := copyFile(k, filepath.Join(sub, filepath.Base(k))); err != nil {
				return copied, err
			}
		}
		copied = append(copied, sub+string(os.PathSeparator))
	}
	return copied, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
