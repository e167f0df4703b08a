// Package proccpu reads the CPU time this process has used, for
// benchmarks that report it beside wall time: the garbage collector,
// SQLite's checkpointer and goroutines woken on the other core work
// outside the benchmark's own goroutine.
package proccpu

import (
	"syscall"
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
