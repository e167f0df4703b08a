package store

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestTrustDueSeeksItsIndex: the reads the trust issuer repeats every two
// seconds seek the (trust_compliant, trust_requested_at) index instead of
// walking every enrollment. On a table that never saw ANALYZE, as SQLite's
// planner sees a new deployment.
func TestTrustDueSeeksItsIndex(t *testing.T) {
	ctx := context.Background()
	s := migratedSQLite(t, Options{})
	for _, onlyNew := range []bool{true, false} {
		q, args := trustDueQuery(time.Now(), time.Hour, time.Hour, onlyNew, 200)
		if got := queryPlan(ctx, t, s, q, args); !strings.Contains(got, "SEARCH e USING INDEX enrollments_trust_due") {
			t.Errorf("onlyNew=%v: plan %q", onlyNew, got)
		}
	}
}

// queryPlan is SQLite's plan for q, its steps joined by "; ".
func queryPlan(ctx context.Context, t *testing.T, s *Store, q string, args []any) string {
	t.Helper()
	rows, err := s.db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "; ")
}
