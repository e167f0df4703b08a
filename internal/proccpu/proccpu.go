// Package proccpu reads the CPU time this process has used, for
// benchmarks that report it beside wall time: the garbage collector,
// SQLite's checkpointer and goroutines woken on the other core work
// outside the benchmark's own goroutine.
package proccpu

import (
	"syscall"
	"testing"
	"time"
)

// Used is the CPU time this process has used, every thread, user and
// system; 0 when the system cannot tell.
func Used() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ReportPerOp reports, as cpu-ms/op, the process's CPU per operation of b
// since since, a value of Used taken when the clock started. It counts
// every thread: goroutines woken on the other core, the collector,
// SQLite's checkpointer, and a client running in the same process (the
// e2e benchmarks' simulated devices) alike.
func ReportPerOp(b *testing.B, since time.Duration) {
	b.ReportMetric(float64((Used()-since).Microseconds())/1000/float64(b.N), "cpu-ms/op")
}
