package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/certificate"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/push"
	"github.com/vestibule-mdm/vestibule/store"
)

// newPusher builds the APNs pusher, or nil when push is not configured.
// The certificate's topic must be the one profiles carry (mdm.topic), or
// devices would ignore every push.
func newPusher(cfg config.Config, st *store.Store, log *slog.Logger, reg prometheus.Registerer) (*push.Pusher, error) {
	p := cfg.Push
	if !p.Enabled() {
		return nil, nil
	}
	var cert tls.Certificate
	var err error
	if p.P12File != "" {
		var password []byte
		if p.P12PasswordFile != "" {
			if password, err = os.ReadFile(p.P12PasswordFile); err != nil {
				return nil, fmt.Errorf("push.p12_password_file: %w", err)
			}
		}
		cert, err = certificate.FromP12File(p.P12File, strings.TrimSpace(string(password)))
	} else {
		cert, err = tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	}
	if err != nil {
		return nil, fmt.Errorf("push certificate: %w", err)
	}
	host := apns2.HostProduction
	if p.Environment == "development" {
		host = apns2.HostDevelopment
	}
	if p.Host != "" {
		host = p.Host
	}
	pusher, err := push.New(push.Options{Certificate: cert, Host: host, Store: st, Registerer: reg, Logger: log,
		Rate: float64(cfg.Push.Rate), Workers: cfg.Push.Workers})
	if err != nil {
		return nil, err
	}
	if pusher.Topic() != cfg.MDM.Topic {
		return nil, fmt.Errorf("the push certificate's topic %s is not mdm.topic %s: devices would ignore every push", pusher.Topic(), cfg.MDM.Topic)
	}
	return pusher, nil
}
