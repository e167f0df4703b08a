package server

import (
	"fmt"
	"log/slog"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/vaultkey"
)

// newSigner opens the enrollment-token key the configuration names.
func newSigner(cfg config.Config, log *slog.Logger) (enrollment.Signer, error) {
	switch cfg.Signer.Backend {
	case "local":
		s, created, err := vaultkey.OpenLocalSigner(cfg.Signer.LocalKeyFile)
		if err != nil {
			return nil, err
		}
		if created {
			log.Info("generated a new enrollment-token key", "file", cfg.Signer.LocalKeyFile)
		}
		return s, nil
	default:
		return nil, fmt.Errorf("signer.backend %q is not available in this build", cfg.Signer.Backend)
	}
}
