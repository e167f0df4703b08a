package depsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/micromdm/nanodep/godep"
)

// Device is one inventory record.
type Device struct {
	Serial        string
	Model         string
	Description   string
	Color         string
	DeviceFamily  string
	OS            string
	ProfileStatus string
	ProfileUUID   string
	OpType        string
	OpDate        *time.Time
}

// Store keeps the inventory and the sync cursor.
type Store interface {
	UpsertDEPDevices(ctx context.Context, devices []Device, at time.Time) error
	DEPCursor(ctx context.Context, name string) (string, error)
	SetDEPCursor(ctx context.Context, name, cursor string, at time.Time, lastErr string) error
	// TryDEPLock runs fn if no other replica is syncing; ran says whether.
	TryDEPLock(ctx context.Context, fn func(ctx context.Context) error) (ran bool, err error)
}

// API is the part of the DEP API the syncer uses.
type API interface {
	FetchDevices(ctx context.Context, name string, opts ...godep.DeviceRequestOption) (*godep.FetchDeviceResponseJson, error)
	SyncDevices(ctx context.Context, name string, opts ...godep.DeviceRequestOption) (*godep.FetchDeviceResponseJson, error)
}

// Syncer fetches, then incrementally syncs, one DEP server's devices.
type Syncer struct {
	api   API
	store Store
	name  string
	limit int
	log   *slog.Logger
	now   func() time.Time
	sleep func(context.Context, time.Duration) error
	stats Stats
}

// Stats count what one run did.
type Stats struct {
	Pages, Added, Modified, Deleted int
}

// NewSyncer returns a syncer for the DEP server name.
func NewSyncer(api API, store Store, name string, log *slog.Logger) *Syncer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Syncer{api: api, store: store, name: name, limit: 1000, log: log, now: time.Now, sleep: sleepCtx}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Run does one sync under the cross-replica lock: a full fetch when there
// is no cursor (or Apple says it expired), then the changes since. Pages
// are stored as they arrive; nothing holds the whole inventory.
func (s *Syncer) Run(ctx context.Context) (Stats, bool, error) {
	s.stats = Stats{}
	ran, err := s.store.TryDEPLock(ctx, s.run)
	return s.stats, ran, err
}

func (s *Syncer) run(ctx context.Context) error {
	cursor, err := s.store.DEPCursor(ctx, s.name)
	if err != nil {
		return err
	}
	fetching := cursor == ""
	for range 100_000 {
		var resp *godep.FetchDeviceResponseJson
		err := s.retry(ctx, func() error {
			opts := []godep.DeviceRequestOption{godep.WithLimit(s.limit)}
			if cursor != "" {
				opts = append(opts, godep.WithCursor(cursor))
			}
			var err error
			if fetching {
				resp, err = s.api.FetchDevices(ctx, s.name, opts...)
			} else {
				resp, err = s.api.SyncDevices(ctx, s.name, opts...)
			}
			return err
		})
		if !fetching && (godep.IsCursorExpired(err) || godep.IsCursorInvalid(err) || godep.IsCursorExhausted(err)) {
			s.log.Info("DEP cursor no longer valid; fetching the whole inventory", "name", s.name)
			fetching, cursor = true, ""
			continue
		}
		if err != nil {
			_ = s.store.SetDEPCursor(ctx, s.name, cursor, s.now(), err.Error())
			return fmt.Errorf("dep sync %s: %w", s.name, err)
		}
		devices := make([]Device, 0, len(resp.Devices))
		for _, d := range resp.Devices {
			dev := convert(d)
			if fetching && dev.OpType == "" {
				dev.OpType = "added"
			}
			switch dev.OpType {
			case "deleted":
				s.stats.Deleted++
			case "modified":
				s.stats.Modified++
			default:
				s.stats.Added++
			}
			devices = append(devices, dev)
		}
		if err := s.store.UpsertDEPDevices(ctx, devices, s.now()); err != nil {
			return err
		}
		s.stats.Pages++
		cursor = resp.Cursor
		if err := s.store.SetDEPCursor(ctx, s.name, cursor, s.now(), ""); err != nil {
			return err
		}
		if !resp.MoreToFollow {
			if fetching {
				// The fetch is done; the changes since it come by sync.
				fetching = false
				continue
			}
			return nil
		}
	}
	return errors.New("dep sync: too many pages")
}

// retry repeats a call Apple refused with 429 or 5xx, waiting as told
// (Retry-After) or with a growing backoff, a few times.
func (s *Syncer) retry(ctx context.Context, fn func() error) error {
	var err error
	for attempt := range 6 {
		if err = fn(); err == nil {
			return nil
		}
		var he *godep.HTTPError
		if !errors.As(err, &he) || (he.StatusCode != http.StatusTooManyRequests && he.StatusCode < 500) {
			return err
		}
		// godep keeps no response headers, so Retry-After is not at hand:
		// back off 1, 2, 4, 8, 16 s.
		wait := time.Duration(1<<attempt) * time.Second
		s.log.Warn("DEP API asked to slow down", "status", he.StatusCode, "wait", wait.String())
		if err := s.sleep(ctx, wait); err != nil {
			return err
		}
	}
	return err
}

func convert(d godep.DeviceJson) Device {
	dev := Device{Serial: d.SerialNumber, Model: d.Model, Description: deref(d.Description), Color: deref(d.Color),
		ProfileUUID: deref(d.ProfileUuid), OpDate: d.OpDate}
	if d.Os != nil {
		dev.OS = string(*d.Os)
	}
	if d.ProfileStatus != nil {
		dev.ProfileStatus = string(*d.ProfileStatus)
	}
	if d.OpType != nil {
		dev.OpType = string(*d.OpType)
	}
	if d.DeviceFamily != nil {
		dev.DeviceFamily = string(*d.DeviceFamily)
	}
	return dev
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
