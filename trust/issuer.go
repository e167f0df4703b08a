package trust

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// IssuerStore is what queuing trust profiles needs from storage.
type IssuerStore interface {
	// TrustProfilesDue lists trusted enrollments owed a trust profile.
	// onlyNew limits the scan to enrollments never sent one since they
	// became trusted (cheap; the full scan also finds renewals).
	TrustProfilesDue(ctx context.Context, now time.Time, renewBefore, retryAfter time.Duration, onlyNew bool, limit int) ([]enrollment.Enrollment, error)
	// QueueTrustProfile stores the challenge and queues the command with a
	// push, if the enrollment is still trusted and owed one (else
	// ErrConflict).
	QueueTrustProfile(ctx context.Context, id, challengeHash string, expires time.Time, cmd enrollment.NewCommand,
		retryAfter time.Duration, at time.Time, ev enrollment.AuditEvent) error
}

// ProfileMaker builds the InstallProfile command that makes a device get
// its trust certificate over SCEP with challenge.
type ProfileMaker interface {
	TrustProfile(e enrollment.Enrollment, challenge string) (enrollment.NewCommand, error)
}

// IssuerOptions configure the Issuer.
type IssuerOptions struct {
	Store    IssuerStore
	Profiles ProfileMaker
	// RenewBefore: a certificate closer than this to expiry is renewed.
	RenewBefore time.Duration
	// ChallengeTTL is how long a trust challenge stays usable; a device
	// that has not used it by then is sent a new profile.
	ChallengeTTL time.Duration
	// Interval between scans for newly trusted devices, and FullInterval
	// between scans that also find renewals and unused challenges.
	Interval     time.Duration
	FullInterval time.Duration
	Logger       *slog.Logger
	Now          func() time.Time
}

// Issuer sends trusted devices the profile that gets them a trust
// certificate: after approval (never before), again before the
// certificate expires, and again after trust is restored. Replicas may all
// run one: the store lets one win per device.
type Issuer struct {
	o IssuerOptions
}

// NewIssuer returns the trust profile issuer.
func NewIssuer(o IssuerOptions) (*Issuer, error) {
	switch {
	case o.Store == nil || o.Profiles == nil:
		return nil, errors.New("trust issuer: Store and Profiles are required")
	case o.ChallengeTTL < time.Minute || o.Interval <= 0 || o.FullInterval <= 0 || o.RenewBefore <= 0:
		return nil, errors.New("trust issuer: ChallengeTTL (≥1m), Interval, FullInterval and RenewBefore must be set")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Issuer{o: o}, nil
}

// Run scans until ctx ends.
func (i *Issuer) Run(ctx context.Context) {
	t := time.NewTicker(i.o.Interval)
	defer t.Stop()
	var lastFull time.Time
	for {
		full := time.Since(lastFull) >= i.o.FullInterval
		if full {
			lastFull = time.Now()
		}
		if n, err := i.Scan(ctx, !full); err != nil && ctx.Err() == nil {
			i.o.Logger.ErrorContext(ctx, "queuing trust profiles failed", "err", err)
		} else if n > 0 {
			i.o.Logger.InfoContext(ctx, "trust profiles queued", "devices", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// scanBatch bounds one scan; the next picks up the rest.
const scanBatch = 200

// Scan queues a trust profile for every device owed one (onlyNew: every
// newly trusted one) and returns how many it queued.
func (i *Issuer) Scan(ctx context.Context, onlyNew bool) (int, error) {
	now := i.o.Now()
	due, err := i.o.Store.TrustProfilesDue(ctx, now, i.o.RenewBefore, i.o.ChallengeTTL, onlyNew, scanBatch)
	if err != nil {
		return 0, err
	}
	queued := 0
	for _, e := range due {
		ok, err := i.queue(ctx, e, now)
		if err != nil {
			return queued, err
		}
		if ok {
			queued++
		}
	}
	return queued, nil
}

func (i *Issuer) queue(ctx context.Context, e enrollment.Enrollment, now time.Time) (bool, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return false, err
	}
	challenge := base64.RawURLEncoding.EncodeToString(b)
	cmd, err := i.o.Profiles.TrustProfile(e, challenge)
	if err != nil {
		return false, fmt.Errorf("trust profile for %s: %w", e.ID, err)
	}
	ev := enrollment.AuditEvent{At: now, Actor: "vestibule", Action: "trust.profile", TargetType: "enrollment", TargetID: e.ID,
		Outcome: enrollment.OutcomeOK, Detail: "device-trust certificate profile queued, command " + cmd.UUID}
	err = i.o.Store.QueueTrustProfile(ctx, e.ID, enrollment.HashChallenge(challenge), now.Add(i.o.ChallengeTTL), cmd, i.o.ChallengeTTL, now, ev)
	if errors.Is(err, enrollment.ErrConflict) {
		return false, nil // another replica queued it, or trust ended meanwhile
	}
	if err != nil {
		return false, fmt.Errorf("queue trust profile for %s: %w", e.ID, err)
	}
	return true, nil
}
