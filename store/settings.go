package store

import (
	"context"
	"fmt"
	"time"
)

// SetSetting records a fact of the running server.
func (s *Store) SetSetting(ctx context.Context, name, value string, at time.Time) error {
	_, err := s.exec(ctx, `INSERT INTO settings (name, value, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`, name, value, ms(at))
	if err != nil {
		return fmt.Errorf("setting %s: %w", name, err)
	}
	return nil
}

// Setting reads a recorded fact; ErrNotFound when none was recorded.
func (s *Store) Setting(ctx context.Context, name string) (string, error) {
	var v string
	if err := s.db.GetContext(ctx, &v, s.db.Rebind(`SELECT value FROM settings WHERE name = ?`), name); err != nil {
		return "", fmt.Errorf("setting %s: %w", name, notFound(err))
	}
	return v, nil
}
