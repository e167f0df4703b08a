package proccpu

import (
	"crypto/sha256"
	"testing"
)

func TestUsedGrowsWithWork(t *testing.T) {
	before := Used()
	if before <= 0 {
		t.Fatalf("Used() = %v before any work; a running process has used some CPU", before)
	}
	sum := sha256.Sum256(nil)
	for Used()-before < 10e6 { // 10 ms of hashing
		for range 10_000 {
			sum = sha256.Sum256(sum[:])
		}
	}
	_ = sum
}
