package store_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jmoiron/sqlx"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/seed"
	"github.com/vestibule-mdm/vestibule/migrations"
	"github.com/vestibule-mdm/vestibule/store"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		storetest.Run(t, func(t *testing.T) *store.Store { return storetest.Open(t, dialect) })
	})
}

func TestMigrateFromEmptyAndAgain(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		s, err := store.Open(ctx, storetest.DSN(t, dialect), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		st, err := s.Migrations(ctx)
		if err != nil || !st.Pending() || st.Current != 0 {
			t.Fatalf("empty database: %+v %v", st, err)
		}
		applied, err := s.Migrate(ctx)
		if err != nil || len(applied) == 0 {
			t.Fatalf("first migrate: %v %v", applied, err)
		}
		again, err := s.Migrate(ctx)
		if err != nil || len(again) != 0 {
			t.Fatalf("second migrate applied %v, %v", again, err)
		}
		if st, err := s.Migrations(ctx); err != nil || st.Pending() || st.Current != applied[len(applied)-1] {
			t.Fatalf("after migrate: %+v %v", st, err)
		}
	})
}

func TestFailedMigrationRollsBack(t *testing.T) {
	fsys := fstest.MapFS{
		"00001_one.sql": {Data: []byte("-- +goose Up\nCREATE TABLE one (id TEXT PRIMARY KEY);\n-- +goose Down\nDROP TABLE one;\n")},
		"00002_two.sql": {Data: []byte("-- +goose Up\nCREATE TABLE two (id TEXT PRIMARY KEY);\nINSERT INTO two (id) VALUES ('a');\nTHIS IS NOT SQL;\n-- +goose Down\nDROP TABLE two;\n")},
	}
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		s, err := store.Open(ctx, storetest.DSN(t, dialect), store.Options{Migrations: fsys})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		applied, err := s.Migrate(ctx)
		if err == nil || !strings.Contains(err.Error(), "version 2") {
			t.Fatalf("want an error naming version 2, got %v", err)
		}
		if len(applied) != 1 || applied[0] != 1 {
			t.Errorf("applied %v, want [1]", applied)
		}
		if _, err := s.DB().ExecContext(ctx, "SELECT * FROM two"); err == nil {
			t.Error("table two exists: the failed migration was not rolled back")
		}
		if _, err := s.DB().ExecContext(ctx, "SELECT * FROM one"); err != nil {
			t.Errorf("table one missing: %v", err)
		}
		st, err := s.Migrations(ctx)
		if err != nil || st.Current != 1 || st.Target != 2 {
			t.Errorf("status after failure: %+v %v", st, err)
		}
	})
}

func TestDialectFilesAreSeparated(t *testing.T) {
	fsys := fstest.MapFS{
		"00001_common.sql":           {Data: []byte("x")},
		"00002_feature.sqlite.sql":   {Data: []byte("x")},
		"00002_feature.postgres.sql": {Data: []byte("x")},
	}
	for dialect, want := range map[string]string{
		"sqlite":   "00001_common.sql,00002_feature.sqlite.sql",
		"postgres": "00001_common.sql,00002_feature.postgres.sql",
	} {
		entries, err := migrations.Filter(fsys, dialect).(interface {
			ReadDir(string) ([]os.DirEntry, error)
		}).ReadDir(".")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if got := strings.Join(names, ","); got != want {
			t.Errorf("%s sees %s, want %s", dialect, got, want)
		}
	}
}

func TestSQLiteFileIsPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "v.db")
	s := storetest.OpenDSN(t, "sqlite:"+path, store.Options{})
	_ = s
	for _, p := range []string{path, filepath.Dir(path)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v, want no group or other access", p, fi.Mode().Perm())
		}
	}
}

func TestOpenRejectsUnknownDSN(t *testing.T) {
	_, err := store.Open(context.Background(), "mysql://x", store.Options{})
	if err == nil || errors.Is(err, nil) || !strings.Contains(err.Error(), "postgres://") {
		t.Fatalf("got %v", err)
	}
}

// TestApprovedCountsStopAtTheCap: the pending queue's per-owner count
// reads at most atMost rows per owner, however many devices they have.
func TestApprovedCountsStopAtTheCap(t *testing.T) {
	ca, caKey := testCA(t)
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		s := storetest.Open(t, dialect)
		// Two owners, round robin: three approved devices and two, and one
		// pending device that is not counted.
		if _, err := seed.Run(ctx, s, seed.Options{Devices: 6, Pending: 1, Users: 2, Keys: []*rsa.PrivateKey{caKey}, CA: ca, CAKey: caKey, Prefix: "CAP"}); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, email := range []string{"seed00000@example.com", "seed00001@example.com"} {
			u, err := s.UserByEmail(ctx, email)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, u.ID)
		}
		for _, tc := range []struct {
			atMost int
			want   []int
		}{{10, []int{2, 3}}, {2, []int{2, 2}}, {1, []int{1, 1}}} {
			got, err := s.ApprovedCounts(ctx, append(ids, "no-such-user"), tc.atMost)
			if err != nil {
				t.Fatal(err)
			}
			if got[ids[0]] != tc.want[0] || got[ids[1]] != tc.want[1] || len(got) != 2 {
				t.Errorf("ApprovedCounts(atMost %d) = %v, want %v", tc.atMost, got, tc.want)
			}
		}
	})
}

// testCA is a CA the seeder issues device certificates from.
func testCA(t *testing.T) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca, caKey
}

// TestApprovalRoundTrips: on PostgreSQL each statement of an approval is a
// round trip (on a connection that has prepared it already) and an
// execution of its plan, and a bulk approval makes thousands of them; a
// statement added to Decide shows here, named, before it shows in
// BenchmarkBulkApproval. A batch of DecideMany costs about what one
// approval does.
func TestApprovalRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		name      string
		approvals int
		// begin; the states; the enrollments with their trust and last
		// command seq; their earlier enrollments; the commands; the
		// pushes; the trust; the trust events; the audit events; commit.
		want int
	}{
		{"one approval", 1, 10},
		// Two commands each: 64 rows, one chunk.
		{"a batch of 32", 32, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			var log statementLog
			s, ids := pendingOnPostgres(t, store.Options{PostgresTracer: &log}, tc.approvals)
			at := time.Now()
			ds := make([]enrollment.Decision, len(ids))
			for i, id := range ids {
				var cmds []enrollment.NewCommand
				for j := range 2 {
					cmds = append(cmds, enrollment.NewCommand{UUID: enrollment.NewID(), RequestType: "InstallProfile", Body: fmt.Appendf(nil, "<plist>%d</plist>", j)})
				}
				ds[i] = enrollment.Decision{ID: id, Effects: enrollment.DecisionEffects(enrollment.StateApproved, cmds),
					Event: enrollment.AuditEvent{At: at, Actor: "admin", Action: "enrollment.approve"}}
			}
			log.record(true)
			res, err := s.DecideMany(ctx, enrollment.StatePending, enrollment.StateApproved, "admin", "", at, ds)
			log.record(false)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				if r.Err != nil {
					t.Fatal(r.Err)
				}
			}
			if got := log.statements(); len(got) != tc.want {
				t.Errorf("%d approvals sent %d statements, want %d:\n%s", tc.approvals, len(got), tc.want, strings.Join(got, "\n"))
			}
			if n, err := s.OutboxLen(ctx); err != nil || n != tc.approvals {
				t.Errorf("pushes owed after the approvals: %d %v", n, err)
			}
		})
	}
}

// onePendingOnPostgres opens a store on PostgreSQL with one pending
// device (push token and certificate seeded) and returns its enrollment.
func onePendingOnPostgres(t *testing.T, opts store.Options) (*store.Store, string) {
	t.Helper()
	s, ids := pendingOnPostgres(t, opts, 1)
	return s, ids[0]
}

// pendingOnPostgres is onePendingOnPostgres with n devices.
func pendingOnPostgres(t *testing.T, opts store.Options, n int) (*store.Store, []string) {
	t.Helper()
	s := storetest.OpenDSN(t, storetest.DSN(t, store.Postgres), opts)
	ca, caKey := testCA(t)
	devices, err := seed.Run(context.Background(), s, seed.Options{Devices: n, Pending: n, Users: 1, Keys: []*rsa.PrivateKey{caKey},
		CA: ca, CAKey: caKey, Prefix: "PG"})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(devices))
	for i, d := range devices {
		ids[i] = d.ID
	}
	return s, ids
}

// statementLog records the statements sent to PostgreSQL while on, and
// those that failed as deadlocks.
type statementLog struct {
	mu     sync.Mutex
	on     bool
	sent   []string
	failed int
}

func (l *statementLog) record(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.on = on
}

func (l *statementLog) statements() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.sent)
}

func (l *statementLog) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.on {
		l.sent = append(l.sent, strings.Join(strings.Fields(data.SQL), " "))
	}
	return ctx
}

func (l *statementLog) TraceQueryEnd(_ context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	var pgErr *pgconn.PgError
	if errors.As(data.Err, &pgErr) && pgErr.Code == "40P01" {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.on {
			l.failed++
		}
	}
}

func (l *statementLog) deadlocks() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

// TestOwnerDisabledWhileApproving: disabling a user denies their pending
// enrollments and revokes those certificates; an enrollment whose approval
// holds its row at that moment ends approved, untrusted, its certificate
// valid, not approved with a revoked certificate. PostgreSQL only: SQLite
// runs one write at a time.
func TestOwnerDisabledWhileApproving(t *testing.T) {
	ctx := context.Background()
	s, e := ownerChangeDuringApproval(t, true)
	if got, err := s.Enrollment(ctx, e.ID); err != nil || got.State != enrollment.StateApproved {
		t.Fatalf("enrollment after the race: %s %v, want approved", got.State, err)
	}
	certs, err := s.ListCertificates(ctx, e.ID)
	if err != nil || len(certs) == 0 {
		t.Fatalf("certificates: %d %v", len(certs), err)
	}
	for _, c := range certs {
		if c.RevokedAt != nil {
			t.Errorf("certificate %s of the approved enrollment revoked (%s)", c.Serial, c.RevokeReason)
		}
	}
	if ok, err := s.TrustIssuance().EnrollmentApproved(ctx, e.ID); err != nil || ok {
		t.Errorf("the disabled owner's device trusted: %v %v", ok, err)
	}
}

// TestOwnerEnabledWhileApproving: an approval that read its owner as
// disabled leaves the device untrusted; enabling the owner meanwhile waits
// for the approval's row and then trusts the device, rather than missing
// it because it was still pending when read. PostgreSQL only.
func TestOwnerEnabledWhileApproving(t *testing.T) {
	ctx := context.Background()
	s, e := ownerChangeDuringApproval(t, false)
	if ok, err := s.TrustIssuance().EnrollmentApproved(ctx, e.ID); err != nil || !ok {
		t.Errorf("approved, owner enabled, but not trusted: %v %v", ok, err)
	}
}

// ownerChangeDuringApproval disables (or, from disabled, enables) the owner
// of a pending enrollment while an approval of it holds its row, the
// approval committing only once the change waits for the row (or has
// finished without waiting). The approval is the decision's UPDATE as the
// store makes it, with the trust it judged: none while the owner was
// disabled, none before its trust sync in the other case.
func ownerChangeDuringApproval(t *testing.T, disable bool) (*store.Store, enrollment.Enrollment) {
	t.Helper()
	ctx := context.Background()
	s, id := onePendingOnPostgres(t, store.Options{})
	e, err := s.Enrollment(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !disable {
		// A pending enrollment of a disabled owner: a claim that raced
		// the disable.
		if _, err := s.DB().ExecContext(ctx, `UPDATE users SET disabled_at = $1 WHERE id = $2`, time.Now().UnixMilli(), e.UserID); err != nil {
			t.Fatal(err)
		}
	}
	approval, err := s.DB().BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = approval.Rollback() }()
	// As an approval that read the owner before the change writes it: the
	// device trusted while the owner was enabled, not while disabled.
	if _, err := approval.ExecContext(ctx, `UPDATE enrollments SET state = 'approved', trust_compliant = $2 WHERE id = $1`,
		e.ID, map[bool]int{true: 1, false: 0}[disable]); err != nil {
		t.Fatal(err)
	}
	changed := make(chan error, 1)
	go func() {
		at := time.Now()
		changed <- s.SetUserDisabled(ctx, e.UserID, disable, at, enrollment.AuditEvent{At: at, Actor: "admin", Action: "user.disable"})
	}()
	waitBlockedBy(t, s, approval, func() bool { return len(changed) > 0 })
	if err := approval.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-changed; err != nil {
		t.Fatal(err)
	}
	return s, e
}

// TestBatchLocksInIDOrder: a batch of approvals locks its rows in ID
// order, as a fleet command and disabling their owner lock theirs, so
// each waits for the other instead of deadlocking. Three rows stored out
// of ID order are decided while a third transaction holds the middle one
// until both writers wait; no statement may fail as a deadlock (which
// would be retried, a second later). PostgreSQL only: SQLite runs one
// write at a time.
func TestBatchLocksInIDOrder(t *testing.T) {
	at := time.Now()
	for _, tc := range []struct {
		name  string
		other func(ctx context.Context, s *store.Store, ids []string, userID string) error
	}{
		{"a fleet command", func(ctx context.Context, s *store.Store, ids []string, _ string) error {
			var items []enrollment.FleetCommand
			for _, id := range ids {
				items = append(items, enrollment.FleetCommand{EnrollmentID: id,
					Command: enrollment.NewCommand{UUID: enrollment.NewID(), RequestType: "DeviceInformation", Body: []byte("b")},
					Event:   enrollment.AuditEvent{At: at, Actor: "admin", Action: "command.enqueue"}})
			}
			return s.EnqueueFleet(ctx, items, "admin", at)
		}},
		{"disabling their owner", func(ctx context.Context, s *store.Store, _ []string, userID string) error {
			return s.SetUserDisabled(ctx, userID, true, at, enrollment.AuditEvent{At: at, Actor: "admin", Action: "user.disable"})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for round := range 3 {
				ctx := context.Background()
				var log statementLog
				s, _ := pendingOnPostgres(t, store.Options{PostgresTracer: &log}, 16)
				// x, z, y in the order the table stores them, y < z < x.
				var stored []string
				if err := s.DB().SelectContext(ctx, &stored, `SELECT id FROM enrollments ORDER BY ctid`); err != nil {
					t.Fatal(err)
				}
				x, z, y := decreasingTriple(stored)
				if x == "" {
					t.Fatalf("no three of %d random IDs stored in decreasing order", len(stored))
				}
				e, err := s.Enrollment(ctx, x)
				if err != nil {
					t.Fatal(err)
				}
				holder, err := s.DB().BeginTxx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = holder.Rollback() }()
				if _, err := holder.ExecContext(ctx, `UPDATE enrollments SET updated_at = updated_at WHERE id = $1`, z); err != nil {
					t.Fatal(err)
				}
				log.record(true)
				done := make(chan error, 2)
				go func() {
					_, err := s.DecideMany(ctx, enrollment.StatePending, enrollment.StateApproved, "admin", "", at, approvals("admin", at, x, z, y))
					done <- err
				}()
				go func() { done <- tc.other(ctx, s, []string{x, z, y}, e.UserID) }()
				waitBlockedBy(t, s, holder, func() bool { return len(done) > 0 }, 2)
				if err := holder.Commit(); err != nil {
					t.Fatal(err)
				}
				for range 2 {
					if err := <-done; err != nil {
						t.Fatalf("round %d: %v", round, err)
					}
				}
				log.record(false)
				if n := log.deadlocks(); n > 0 {
					t.Fatalf("round %d: %d statements failed as deadlocks", round, n)
				}
			}
		})
	}
}

// approvals are approvals of ids by actor at at, with no commands, each
// audited against its enrollment.
func approvals(actor string, at time.Time, ids ...string) []enrollment.Decision {
	ds := make([]enrollment.Decision, len(ids))
	for i, id := range ids {
		ds[i] = enrollment.Decision{ID: id, Effects: enrollment.DecisionEffects(enrollment.StateApproved, nil),
			Event: enrollment.AuditEvent{At: at, Actor: actor, Action: "enrollment.approve", TargetType: "enrollment", TargetID: id}}
	}
	return ds
}

// decreasingTriple returns the first x, z, y of ids, in their order, with
// y < z < x.
func decreasingTriple(ids []string) (x, z, y string) {
	for i := range ids {
		for j := i + 1; j < len(ids); j++ {
			for k := j + 1; k < len(ids); k++ {
				if ids[i] > ids[j] && ids[j] > ids[k] {
					return ids[i], ids[j], ids[k]
				}
			}
		}
	}
	return "", "", ""
}

// waitBlockedBy waits until want (1 unless given) sessions wait for a lock
// tx holds, directly or behind another waiting session, or until done
// says there is nothing left to wait for.
func waitBlockedBy(t *testing.T, s *store.Store, tx *sqlx.Tx, done func() bool, want ...int) {
	t.Helper()
	n := 1
	if len(want) > 0 {
		n = want[0]
	}
	var pid int
	if err := tx.Get(&pid, `SELECT pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !done(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d sessions waited for the lock", n)
		}
		var waiting int
		if err := s.DB().Get(&waiting, `WITH RECURSIVE blocked AS (
				SELECT pid FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))
				UNION SELECT a.pid FROM pg_stat_activity a JOIN blocked b ON b.pid = ANY (pg_blocking_pids(a.pid)))
			SELECT COUNT(*) FROM blocked`, pid); err != nil {
			t.Fatal(err)
		}
		if waiting >= n {
			return
		}
	}
}

// TestDecideManyAfterWaitingForARow: a batch that waits for a row held by
// a concurrent transaction judges that row as the transaction committed
// it: decided meanwhile (approved, denied), it is a conflict and keeps
// its decider; only touched, it is moved, once. PostgreSQL only.
func TestDecideManyAfterWaitingForARow(t *testing.T) {
	for _, tc := range []struct {
		name    string
		holder  string // run by the holder on the middle row ($1)
		moved   bool
		state   enrollment.State
		decider string
	}{
		{"approved meanwhile", `UPDATE enrollments SET state = 'approved', decided_at = 1, decided_by = 'single-approver', decision_note = 'single',
			updated_at = updated_at + 1 WHERE id = $1`, false, enrollment.StateApproved, "single-approver"},
		{"denied meanwhile", `UPDATE enrollments SET state = 'denied', decided_at = 1, decided_by = 'denier', decision_note = 'no',
			updated_at = updated_at + 1 WHERE id = $1`, false, enrollment.StateDenied, "denier"},
		{"touched only", `UPDATE enrollments SET updated_at = updated_at + 1 WHERE id = $1`, true, enrollment.StateApproved, "bulk-admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s, ids := pendingOnPostgres(t, store.Options{}, 3)
			slices.Sort(ids)
			held := ids[1]
			holder, err := s.DB().BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = holder.Rollback() }()
			if _, err := holder.ExecContext(ctx, tc.holder, held); err != nil {
				t.Fatal(err)
			}
			at := time.Now()
			type outcome struct {
				res []enrollment.DecisionResult
				err error
			}
			done := make(chan outcome, 1)
			go func() {
				// Out of ID order.
				ds := approvals("bulk-admin", at, ids[2], ids[1], ids[0])
				res, err := s.DecideMany(ctx, enrollment.StatePending, enrollment.StateApproved, "bulk-admin", "bulk approval", at, ds)
				done <- outcome{res, err}
			}()
			waitBlockedBy(t, s, holder, func() bool { return len(done) > 0 })
			if len(done) != 0 {
				t.Fatal("the batch finished while the row was held")
			}
			if err := holder.Commit(); err != nil {
				t.Fatal(err)
			}
			o := <-done
			if o.err != nil {
				t.Fatal(o.err)
			}
			// Results follow the decisions: ids[2], ids[1], ids[0].
			if err := o.res[1].Err; tc.moved != (err == nil) || (!tc.moved && !errors.Is(err, enrollment.ErrConflict)) {
				t.Fatalf("the held row's result: %v, want moved=%v", err, tc.moved)
			}
			for _, i := range []int{0, 2} {
				if o.res[i].Err != nil {
					t.Fatalf("a row not held: %v", o.res[i].Err)
				}
			}
			if e, err := s.Enrollment(ctx, held); err != nil || e.State != tc.state || e.DecidedBy != tc.decider {
				t.Fatalf("the held row after the race: %s by %q (%v), want %s by %q", e.State, e.DecidedBy, err, tc.state, tc.decider)
			}
			evs, err := s.ListAudit(ctx, enrollment.AuditFilter{TargetID: held, Actor: "bulk-admin"})
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{true: 1, false: 0}[tc.moved]; len(evs) != want {
				t.Fatalf("%d bulk audit events for the held row, want %d", len(evs), want)
			}
		})
	}
}

// TestDisableSyncsAnApprovalBeforeItsLock: an enrollment that appeared
// and was approved (trusted: the approval read the owner still enabled)
// while a disable ran, before it locked the owner's enrollments, is found
// by that lock and loses its trust. The disable is paused at DELETE FROM
// sessions; the enrollment is written directly, as any way one could
// appear there. PostgreSQL only.
func TestDisableSyncsAnApprovalBeforeItsLock(t *testing.T) {
	ctx := context.Background()
	s, ids := pendingOnPostgres(t, store.Options{}, 1)
	e0, err := s.Enrollment(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	db := s.DB()
	if _, err := db.ExecContext(ctx, `INSERT INTO sessions (id_hash, user_id, method, created_at, last_seen_at, expires_at)
		VALUES ('paused', $1, 'password', 0, 0, 9999999999999)`, e0.UserID); err != nil {
		t.Fatal(err)
	}
	pause, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pause.Rollback() }()
	if _, err := pause.ExecContext(ctx, `SELECT 1 FROM sessions WHERE id_hash = 'paused' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	done := make(chan error, 1)
	go func() {
		done <- s.SetUserDisabled(ctx, e0.UserID, true, at, enrollment.AuditEvent{At: at, Actor: "admin", Action: "user.disable"})
	}()
	waitBlockedBy(t, s, pause, func() bool { return len(done) > 0 })
	p := enrollment.NewID()
	appear, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = appear.Rollback() }()
	for _, q := range []struct{ sql, arg string }{
		{`CREATE TEMP TABLE r ON COMMIT DROP AS SELECT * FROM reservations WHERE id = $1`, e0.ID},
		{`UPDATE r SET id = $1, challenge_hash = $1, token_nonce = $1, state = 'claimed'`, p},
		{`INSERT INTO reservations SELECT * FROM r`, ""},
		{`CREATE TEMP TABLE e ON COMMIT DROP AS SELECT * FROM enrollments WHERE id = $1`, e0.ID},
		{`UPDATE e SET id = $1, udid = 'UDID-' || $1, serial = 'SER-' || $1, state = 'pending', trust_compliant = 0`, p},
		{`INSERT INTO enrollments SELECT * FROM e`, ""},
	} {
		var args []any
		if q.arg != "" {
			args = append(args, q.arg)
		}
		if _, err := appear.ExecContext(ctx, q.sql, args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	if err := appear.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Decide(ctx, p, enrollment.StatePending, enrollment.StateApproved, "approver", "", at,
		enrollment.DecisionEffects(enrollment.StateApproved, nil), enrollment.AuditEvent{At: at, Actor: "approver", Action: "enrollment.approve"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.TrustIssuance().EnrollmentApproved(ctx, p); err != nil || !ok {
		t.Fatalf("the approval did not trust the device: %v %v", ok, err)
	}
	if err := pause.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ok, err := s.TrustIssuance().EnrollmentApproved(ctx, p); err != nil || ok {
		t.Fatalf("an approved device of a disabled owner is still trusted: %v %v", ok, err)
	}
}
