package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/vestibule-mdm/vestibule/depsync"
	"github.com/vestibule-mdm/vestibule/enrollment"
)

// UpsertDEPDevices stores one page of inventory. A deleted device keeps
// its row, marked deleted, so the approver can see it left.
func (s *Store) UpsertDEPDevices(ctx context.Context, devices []depsync.Device, at time.Time) error {
	return s.inTxAlone(ctx, func(tx txn) error {
		for _, d := range devices {
			var opDate sql.NullInt64
			if d.OpDate != nil {
				opDate = sql.NullInt64{Int64: ms(*d.OpDate), Valid: true}
			}
			_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO dep_devices (serial, model, description, color, device_family, os,
				profile_status, profile_uuid, op_type, op_date, last_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (serial) DO UPDATE SET model = excluded.model, description = excluded.description, color = excluded.color,
				device_family = excluded.device_family, os = excluded.os, profile_status = excluded.profile_status,
				profile_uuid = excluded.profile_uuid, op_type = excluded.op_type, op_date = excluded.op_date, last_seen_at = excluded.last_seen_at`),
				d.Serial, d.Model, d.Description, d.Color, d.DeviceFamily, d.OS, d.ProfileStatus, d.ProfileUUID, d.OpType, opDate, ms(at))
			if err != nil {
				return fmt.Errorf("upsert DEP device: %w", err)
			}
		}
		return nil
	})
}

// DEPCursor returns the sync cursor of a DEP server, "" before the first
// fetch.
func (s *Store) DEPCursor(ctx context.Context, name string) (string, error) {
	var c string
	err := s.db.GetContext(ctx, &c, s.db.Rebind(`SELECT cursor FROM dep_servers WHERE name = ?`), name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return c, err
}

// SetDEPCursor records sync progress.
func (s *Store) SetDEPCursor(ctx context.Context, name, cursor string, at time.Time, lastErr string) error {
	_, err := s.exec(ctx, `INSERT INTO dep_servers (name, cursor, last_sync_at, last_error) VALUES (?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor, last_sync_at = excluded.last_sync_at, last_error = excluded.last_error`,
		name, cursor, ms(at), lastErr)
	return err
}

// SaveDEPTokens stores a DEP server's sealed OAuth tokens.
func (s *Store) SaveDEPTokens(ctx context.Context, name, sealed string, expiry time.Time, ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx txn) error {
		_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO dep_servers (name, tokens_sealed, token_expiry) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET tokens_sealed = excluded.tokens_sealed, token_expiry = excluded.token_expiry`), name, sealed, ms(expiry))
		if err != nil {
			return fmt.Errorf("save DEP tokens: %w", err)
		}
		return appendAudit(ctx, tx, ev)
	})
}

// DEPServer is what the store knows of a DEP server.
type DEPServer struct {
	Name        string
	Sealed      string
	TokenExpiry *time.Time
	LastSyncAt  *time.Time
	LastError   string
	Devices     int
}

// DEPServer reads a DEP server's record.
func (s *Store) DEPServer(ctx context.Context, name string) (DEPServer, error) {
	var r struct {
		Sealed   string        `db:"tokens_sealed"`
		Expiry   sql.NullInt64 `db:"token_expiry"`
		LastSync sql.NullInt64 `db:"last_sync_at"`
		LastErr  string        `db:"last_error"`
	}
	err := s.db.GetContext(ctx, &r, s.db.Rebind(`SELECT tokens_sealed, token_expiry, last_sync_at, last_error FROM dep_servers WHERE name = ?`), name)
	if err != nil {
		return DEPServer{}, fmt.Errorf("DEP server %s: %w", name, notFound(err))
	}
	out := DEPServer{Name: name, Sealed: r.Sealed, TokenExpiry: fromNullMS(r.Expiry), LastSyncAt: fromNullMS(r.LastSync), LastError: r.LastErr}
	err = s.db.GetContext(ctx, &out.Devices, `SELECT COUNT(*) FROM dep_devices WHERE op_type <> 'deleted'`)
	return out, err
}

// DEPFacts says whether a serial is in the organisation's inventory.
func (s *Store) DEPFacts(ctx context.Context, serial string) (depsync.Device, bool, error) {
	var r struct {
		Serial        string `db:"serial"`
		Model         string `db:"model"`
		Description   string `db:"description"`
		ProfileStatus string `db:"profile_status"`
		OpType        string `db:"op_type"`
	}
	err := s.db.GetContext(ctx, &r, s.db.Rebind(`SELECT serial, model, description, profile_status, op_type FROM dep_devices WHERE serial = ?`), serial)
	if errors.Is(err, sql.ErrNoRows) {
		return depsync.Device{}, false, nil
	}
	if err != nil {
		return depsync.Device{}, false, err
	}
	d := depsync.Device{Serial: r.Serial, Model: r.Model, Description: r.Description, ProfileStatus: r.ProfileStatus, OpType: r.OpType}
	return d, r.OpType != "deleted", nil
}

// ListDEPDevices returns the inventory by serial.
func (s *Store) ListDEPDevices(ctx context.Context, limit int) ([]depsync.Device, error) {
	var rows []struct {
		Serial        string `db:"serial"`
		Model         string `db:"model"`
		Description   string `db:"description"`
		Color         string `db:"color"`
		Family        string `db:"device_family"`
		OS            string `db:"os"`
		ProfileStatus string `db:"profile_status"`
		OpType        string `db:"op_type"`
	}
	if err := s.db.SelectContext(ctx, &rows, fmt.Sprintf(`SELECT serial, model, description, color, device_family, os, profile_status, op_type
		FROM dep_devices ORDER BY serial LIMIT %d`, limit)); err != nil {
		return nil, err
	}
	out := make([]depsync.Device, len(rows))
	for i, r := range rows {
		out[i] = depsync.Device{Serial: r.Serial, Model: r.Model, Description: r.Description, Color: r.Color, DeviceFamily: r.Family, OS: r.OS,
			ProfileStatus: r.ProfileStatus, OpType: r.OpType}
	}
	return out, nil
}

// depLockKey is the PostgreSQL advisory lock the DEP sync holds.
const depLockKey = 0x76657374 // "vest"

// TryDEPLock runs fn unless another replica (PostgreSQL advisory lock on a
// connection of its own) or another goroutine (SQLite) is syncing.
func (s *Store) TryDEPLock(ctx context.Context, fn func(ctx context.Context) error) (bool, error) {
	if s.dialect != Postgres {
		if !s.depMu.TryLock() {
			return false, nil
		}
		defer s.depMu.Unlock()
		return true, fn(ctx)
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	var got bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, depLockKey).Scan(&got); err != nil {
		return false, err
	}
	if !got {
		return false, nil
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, depLockKey)
	return true, fn(ctx)
}
