package enrollment

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

type recordedAudit struct{ events []AuditEvent }

func (r *recordedAudit) AppendAudit(_ context.Context, ev AuditEvent) error {
	r.events = append(r.events, ev)
	return nil
}

func TestRefusalAggregator(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	rec := &recordedAudit{}
	a := NewRefusalAggregator(rec, time.Minute, 3, clock)
	refused := func(ip string) AuditEvent {
		return AuditEvent{Actor: "device:unknown", Action: "device.checkin", RemoteIP: ip, Outcome: OutcomeRefused, Detail: "bad"}
	}

	for range 1000 {
		_ = a.AppendAudit(ctx, refused("192.0.2.1"))
	}
	if len(rec.events) != 1 {
		t.Fatalf("1000 refusals from one source in a window wrote %d rows, want 1", len(rec.events))
	}
	_ = a.AppendAudit(ctx, AuditEvent{Actor: "user:a", Action: "enrollment.approve", Outcome: OutcomeOK})
	if len(rec.events) != 2 {
		t.Fatal("an accepted event was held back")
	}
	_ = a.AppendAudit(ctx, refused("192.0.2.2"))
	if len(rec.events) != 3 {
		t.Fatal("another source's first refusal was held back")
	}

	now = now.Add(61 * time.Second)
	if err := a.Flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	if len(rec.events) != 4 || !strings.Contains(rec.events[3].Detail, "999 more refusals") {
		t.Fatalf("after the window: %d rows, last %+v", len(rec.events), rec.events[len(rec.events)-1])
	}

	// Many sources: past maxKeys they share one window, even when the
	// actor names the address (as SCEP's does).
	for i := range 50 {
		ip := fmt.Sprintf("198.51.100.%d", i)
		ev := refused(ip)
		ev.Actor = "scep:" + ip
		_ = a.AppendAudit(ctx, ev)
	}
	if n := len(rec.events) - 4; n > 4 {
		t.Fatalf("50 sources past the key limit wrote %d rows", n)
	}
	if len(a.windows) > 4 {
		t.Fatalf("%d windows tracked, over the limit of 3 and the shared one", len(a.windows))
	}
	if err := a.Flush(ctx, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rec.events[len(rec.events)-1].RemoteIP+rec.events[len(rec.events)-1].Detail, "more refusals") {
		t.Fatalf("the final flush wrote no summary: %+v", rec.events[len(rec.events)-1])
	}
}

func TestBoundedAuditEvent(t *testing.T) {
	ev := AuditEvent{Actor: strings.Repeat("a", 10_000), Detail: strings.Repeat("é", 60_000), RemoteIP: strings.Repeat("1", 500)}.Bounded()
	if len(ev.Actor) > maxAuditShort || len(ev.Detail) > maxAuditDetail || len(ev.RemoteIP) > 64 {
		t.Fatalf("not bounded: %d %d %d", len(ev.Actor), len(ev.Detail), len(ev.RemoteIP))
	}
	if !strings.HasSuffix(ev.Detail, "…") || !utf8Valid(ev.Detail) {
		t.Fatal("the cut is not marked or breaks a character")
	}
}

func utf8Valid(s string) bool { return utf8.ValidString(s) }

type failingAudit struct {
	recordedAudit
	failSummaries bool
}

func (f *failingAudit) AppendAudit(ctx context.Context, ev AuditEvent) error {
	if f.failSummaries && strings.HasPrefix(ev.Detail, "aggregated:") {
		return errors.New("database is down")
	}
	return f.recordedAudit.AppendAudit(ctx, ev)
}

// TestRefusalAggregatorKeepsFirstRows: a summary that cannot be written
// does not take the next window's first row with it.
func TestRefusalAggregatorKeepsFirstRows(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	rec := &failingAudit{failSummaries: true}
	a := NewRefusalAggregator(rec, time.Minute, 10, func() time.Time { return now })
	ev := AuditEvent{Actor: "device:unknown", Action: "device.checkin", RemoteIP: "192.0.2.1", Outcome: OutcomeRefused}
	_ = a.AppendAudit(ctx, ev)
	_ = a.AppendAudit(ctx, ev)
	now = now.Add(2 * time.Minute)
	if err := a.AppendAudit(ctx, ev); err == nil {
		t.Fatal("the failed summary is not reported")
	}
	if len(rec.events) != 2 {
		t.Fatalf("%d first rows written, want 2", len(rec.events))
	}
}

// TestCutKeepsUTF8: a device-controlled string cut to fit a column never
// splits a character and holds no invalid byte (PostgreSQL refuses them,
// which once let a device hide its attestation mismatch behind a failing
// update).
func TestCutKeepsUTF8(t *testing.T) {
	for _, s := range []string{strings.Repeat("é", 300), "a" + strings.Repeat("€", 200), "\xff\xfe" + strings.Repeat("x", 600)} {
		for _, n := range []int{4, 5, 63, 64, 499, 500} {
			got := cut(s, n)
			if len(got) > n || !utf8.ValidString(got) {
				t.Fatalf("cut(%q…, %d) = %d bytes, valid %v", s[:8], n, len(got), utf8.ValidString(got))
			}
		}
	}
	a := Attestation{Reason: `serial: claimed "` + strings.Repeat("é", 300) + `"`, Serial: strings.Repeat("€", 40)}.bounded()
	if len(a.Reason) > 500 || len(a.Serial) > 64 || !utf8.ValidString(a.Reason) || !utf8.ValidString(a.Serial) {
		t.Fatalf("bounded attestation: %d %d", len(a.Reason), len(a.Serial))
	}
}
