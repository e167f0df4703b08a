package server

import (
	"context"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"time"
)

// readinessCheck is one dependency /readyz asks about.
type readinessCheck struct {
	name  string
	check func(ctx context.Context) error
}

func handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleReadyz runs every check with a short deadline; any failure makes
// the replica unready so the load balancer stops sending it devices.
func handleReadyz(checks []readinessCheck) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		status, code := "ok", http.StatusOK
		results := map[string]string{}
		for _, c := range checks {
			if err := c.check(ctx); err != nil {
				results[c.name] = err.Error()
				status, code = "unavailable", http.StatusServiceUnavailable
				continue
			}
			results[c.name] = "ok"
		}
		writeJSON(w, code, map[string]any{"status": status, "checks": results})
	}
}

// migrationsCheck caches success: once this binary's migrations are in,
// they stay in.
func migrationsCheck(status func(ctx context.Context) (pending bool, err error)) func(ctx context.Context) error {
	var current atomic.Bool
	return func(ctx context.Context) error {
		if current.Load() {
			return nil
		}
		pending, err := status(ctx)
		if err != nil {
			return err
		}
		if pending {
			return errPendingMigrations
		}
		current.Store(true)
		return nil
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
