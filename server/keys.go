package server

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/vaultkey"
)

// signer is the token key as the server uses it: it signs and verifies,
// may report its health, and may hold resources to release.
type signer struct {
	enrollment.Signer
	health func(ctx context.Context) error
	close  func() error
}

// newSigner opens the enrollment-token key the configuration names.
func newSigner(ctx context.Context, cfg config.Config, log *slog.Logger, reg prometheus.Registerer) (signer, error) {
	switch cfg.Signer.Backend {
	case "local":
		s, created, err := vaultkey.OpenLocalSigner(cfg.Signer.LocalKeyFile)
		if err != nil {
			return signer{}, err
		}
		if created {
			log.Info("generated a new enrollment-token key", "file", cfg.Signer.LocalKeyFile)
		}
		return signer{Signer: s}, nil
	case "vault":
		t, err := vaultkey.NewTransitSigner(ctx, TransitConfig(cfg, log, reg))
		if err != nil {
			return signer{}, fmt.Errorf("signer.backend vault: %w", err)
		}
		return signer{Signer: t, health: t.Health, close: t.Close}, nil
	}
	return signer{}, fmt.Errorf("signer.backend %q is not available", cfg.Signer.Backend)
}

// TransitConfig maps the vault section of the configuration.
func TransitConfig(cfg config.Config, log *slog.Logger, reg prometheus.Registerer) vaultkey.TransitConfig {
	v := cfg.Vault
	return vaultkey.TransitConfig{Address: v.Address, Mount: v.Mount, Key: v.Key, Namespace: v.Namespace, CACert: v.CACert,
		Timeout: v.Timeout.D(), TokenFile: v.TokenFile, AppRoleMount: v.AppRole.Mount, AppRoleRoleIDFile: v.AppRole.RoleIDFile,
		AppRoleSecretIDFile: v.AppRole.SecretIDFile, KubernetesMount: v.Kubernetes.Mount, KubernetesRole: v.Kubernetes.Role,
		KubernetesJWTFile: v.Kubernetes.JWTFile, Registerer: reg, Logger: log}
}
