package store

import (
	"testing"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// TestFleetChunks: every item once, in order, in chunks of a few sizes
// only (powers of two up to fleetChunk), so statement texts stay few.
func TestFleetChunks(t *testing.T) {
	sizes := map[int]bool{}
	for n := 1; n <= enrollment.MaxFleetCommand; n++ {
		items := make([]enrollment.FleetCommand, n)
		for i := range items {
			items[i].EnrollmentID = string(rune('a' + i%26))
		}
		total := 0
		for _, c := range powerOfTwoChunks(items) {
			if len(c) == 0 || len(c) > fleetChunk || len(c)&(len(c)-1) != 0 {
				t.Fatalf("n=%d: a chunk of %d", n, len(c))
			}
			if &c[0] != &items[total] {
				t.Fatalf("n=%d: chunks out of order", n)
			}
			sizes[len(c)] = true
			total += len(c)
		}
		if total != n {
			t.Fatalf("n=%d: %d items in chunks", n, total)
		}
	}
	if len(sizes) != 7 {
		t.Errorf("chunk sizes %v, want the 7 powers of two up to 64", sizes)
	}
}
