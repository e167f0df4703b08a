package store

import (
	"context"
	"strings"
	"testing"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// TestAuditListsSeekTheirIndex: a list by actor or by target reads its
// page from an index that ends in id, newest first, instead of reading
// every event (by target id alone, as the console asks: 0.55 s at a
// million events) or sorting every match (by actor: 0.12 s).
func TestAuditListsSeekTheirIndex(t *testing.T) {
	ctx := context.Background()
	s := migratedSQLite(t, Options{})
	for _, tc := range []struct {
		name  string
		f     enrollment.AuditFilter
		index string
	}{
		{"actor", enrollment.AuditFilter{Actor: "admin@example.com", Limit: 50}, "audit_log_actor_id (actor=?)"},
		{"target id, as the console asks", enrollment.AuditFilter{TargetID: "0190abcd-0000-7000-8000-000000000000", Limit: 50}, "audit_log_target_id (target_id=?)"},
		{"target type and id, as the API asks", enrollment.AuditFilter{TargetType: "enrollment", TargetID: "0190abcd-0000-7000-8000-000000000000", Limit: 50}, "audit_log_target_id (target_id=?)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, args := auditListQuery(tc.f)
			got := queryPlan(ctx, t, s, q, args)
			if !strings.Contains(got, "SEARCH audit_log USING INDEX "+tc.index) || strings.Contains(got, "TEMP B-TREE") {
				t.Errorf("plan %q, want a search of %s and no sort", got, tc.index)
			}
		})
	}
}
