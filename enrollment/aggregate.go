package enrollment

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// AuditAppender is where audit events go.
type AuditAppender interface {
	AppendAudit(ctx context.Context, ev AuditEvent) error
}

// RefusalAggregator keeps a flood of refused requests from one source from
// writing one audit row each. The first refusal of a source (actor, action
// and address) in a window is written as it comes; the rest of that window
// are counted and written as one summary row when the window ends. Other
// events pass straight through. Counting happens in this process: a
// replica that dies loses at most one window's count, never the first row.
type RefusalAggregator struct {
	next    AuditAppender
	window  time.Duration
	maxKeys int
	now     func() time.Time

	mu      sync.Mutex
	windows map[refusalKey]*refusalWindow
}

type refusalKey struct{ actor, action, ip string }

type refusalWindow struct {
	first, last time.Time
	repeats     int
	sample      AuditEvent
}

// NewRefusalAggregator aggregates over window, tracking at most maxKeys
// sources at once; past that, new sources share one key ("many sources").
func NewRefusalAggregator(next AuditAppender, window time.Duration, maxKeys int, now func() time.Time) *RefusalAggregator {
	if now == nil {
		now = time.Now
	}
	return &RefusalAggregator{next: next, window: window, maxKeys: maxKeys, now: now, windows: map[refusalKey]*refusalWindow{}}
}

// AppendAudit writes ev, or counts it when it repeats a refusal of the
// current window.
func (a *RefusalAggregator) AppendAudit(ctx context.Context, ev AuditEvent) error {
	if ev.Outcome != OutcomeRefused {
		return a.next.AppendAudit(ctx, ev)
	}
	now := a.now()
	if ev.At.IsZero() {
		ev.At = now
	}
	key := refusalKey{ev.Actor, ev.Action, ev.RemoteIP}
	a.mu.Lock()
	w, ok := a.windows[key]
	if !ok && len(a.windows) >= a.maxKeys {
		// Full: every new source shares one window per action, whatever
		// its actor says (SCEP's actor names the address).
		key = refusalKey{"many sources", ev.Action, "many sources"}
		w, ok = a.windows[key]
	}
	var due *refusalWindow
	switch {
	case ok && now.Sub(w.first) < a.window:
		w.repeats++
		w.last = now
		a.mu.Unlock()
		return nil
	case ok:
		due = w
	}
	a.windows[key] = &refusalWindow{first: now, last: now, sample: ev}
	a.mu.Unlock()
	var sumErr error
	if due != nil && due.repeats > 0 {
		sumErr = a.next.AppendAudit(ctx, summary(due))
	}
	// The new window's first event is written even when the previous
	// window's summary could not be.
	return errors.Join(sumErr, a.next.AppendAudit(ctx, ev))
}

// Flush writes the summaries of windows that have ended (all of them when
// final is true, at shutdown) and forgets them.
func (a *RefusalAggregator) Flush(ctx context.Context, final bool) error {
	now := a.now()
	var due []*refusalWindow
	a.mu.Lock()
	for k, w := range a.windows {
		if final || now.Sub(w.first) >= a.window {
			delete(a.windows, k)
			if w.repeats > 0 {
				due = append(due, w)
			}
		}
	}
	a.mu.Unlock()
	var errs []error
	for _, w := range due {
		errs = append(errs, a.next.AppendAudit(ctx, summary(w)))
	}
	return errors.Join(errs...)
}

// Run flushes ended windows every window until ctx is done. The owner
// flushes the rest with Flush(ctx, true) before closing the store.
func (a *RefusalAggregator) Run(ctx context.Context) {
	t := time.NewTicker(a.window)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = a.Flush(ctx, false)
		}
	}
}

func summary(w *refusalWindow) AuditEvent {
	ev := w.sample
	ev.At = w.last
	ev.Detail = fmt.Sprintf("aggregated: %d more refusals like the one at %s, the last at %s; first: %s",
		w.repeats, w.first.UTC().Format(time.RFC3339), w.last.UTC().Format(time.RFC3339), w.sample.Detail)
	return ev
}
