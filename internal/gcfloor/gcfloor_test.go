package gcfloor

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name               string
		live, roots, floor uint64
		want               int
	}{
		{"an empty heap: the most that keeps the runtime's minimum at the floor", 0, 0, 16 * mib, 400},
		{"a small heap reaches the floor", 4 * mib, 0, 32 * mib, 700},
		{"stacks and globals count", 4 * mib, 4 * mib, 32 * mib, 350},
		{"a tiny heap: the runtime's minimum bounds it", 1024, 0, 32 * mib, 800},
		{"a tiny heap under a large floor: the most", 1024, 0, 64 << 30, maxPercent},
		{"a heap at half the floor is the default", 16 * mib, 0, 32 * mib, minPercent},
		{"a heap above half the floor is the default, never less", 20 * mib, 0, 32 * mib, minPercent},
		{"a heap above the floor is the default", 64 * mib, 0, 32 * mib, minPercent},
		{"a floor under the runtime's minimum is the default", 0, 0, 2 * mib, minPercent},
		{"no floor is the default", 4 * mib, 0, 0, minPercent},
		{"no floor and no heap is the default", 0, 0, 0, minPercent},
		{"the largest floor does not overflow", 3 * mib, 1 * mib, 1 << 62, maxPercent},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := Percent(c.live, c.roots, c.floor); got != c.want {
				t.Fatalf("Percent(%d, %d, %d) = %d, want %d", c.live, c.roots, c.floor, got, c.want)
			}
		})
	}
}

func currentPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// TestFloorFollowsTheLiveHeap runs the floor in this process: GOGC is
// set at Start, follows the live heap after collections, and is put back
// by Stop.
func TestFloorFollowsTheLiveHeap(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)

	const floor = 64 << 20 // far above this test's heap
	f := Start(floor)
	if got := currentPercent(); got != f.GCPercent() || got <= minPercent {
		t.Fatalf("after Start GOGC is %d (floor says %d), want above %d", got, f.GCPercent(), minPercent)
	}

	// A live heap above half the floor brings GOGC down to the default at
	// the next collections; once it is gone, GOGC goes up again.
	func() {
		ballast := make([][]byte, 0, 48)
		for range cap(ballast) {
			ballast = append(ballast, make([]byte, 1<<20))
		}
		waitFor(t, func() bool { runtime.GC(); return f.GCPercent() == minPercent }, "GOGC to come down with a live heap of 48 MiB")
		if got := currentPercent(); got != f.GCPercent() {
			t.Fatalf("GOGC is %d, the floor says %d", got, f.GCPercent())
		}
		runtime.KeepAlive(ballast)
	}()
	waitFor(t, func() bool { runtime.GC(); return f.GCPercent() > 2*minPercent }, "GOGC to go up once the heap is small again")

	f.Stop()
	if got := currentPercent(); got != 100 {
		t.Fatalf("after Stop GOGC is %d, want the 100 found at Start", got)
	}
	// A live heap of a quarter of the floor would make a running floor set
	// GOGC to 300; a stopped one leaves the 100 alone.
	func() {
		ballast := make([][]byte, 0, 16)
		for range cap(ballast) {
			ballast = append(ballast, make([]byte, 1<<20))
		}
		for range 20 {
			runtime.GC()
			time.Sleep(5 * time.Millisecond)
			if got := currentPercent(); got != 100 {
				t.Fatalf("a collection after Stop set GOGC to %d", got)
			}
		}
		runtime.KeepAlive(ballast)
	}()
	f.Stop() // twice is harmless
}

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
