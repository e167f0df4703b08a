// Package gcfloor keeps the Go heap's collection target from falling
// below a floor.
//
// Vestibule's live heap is small (a few MiB) while every request
// allocates, so with the runtime's default (collect when the heap has
// doubled) a busy server collects many times a second: 550 to 1,090
// times in a load run of 500 devices (bench/README.md). A fixed higher
// GOGC would buy that CPU back but multiply the heap of a large fleet
// too. The floor does neither: while the live heap is small the target
// is the floor; once twice the live heap is above it, the runtime's
// default applies.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// The runtime's figures after the last collection: the heap it found
// live, and the stacks and globals it scanned. GOGC grows the target by
// a percentage of all three.
const (
	liveHeap = "/gc/heap/live:bytes"
	stacks   = "/gc/scan/stack:bytes"
	globals  = "/gc/scan/globals:bytes"
)

// minPercent is the runtime's default: a floor never collects more often
// than Go would. maxPercent bounds how far GOGC goes when the live heap is
// nearly empty; the finalizer that adjusts GOGC can lag behind the
// collections under load, and a stale high GOGC must not let a heap that
// has grown since run far past the floor.
const (
	minPercent = 100
	maxPercent = 2000
	// The runtime never aims below 4 MiB × GOGC/100, however small the
	// live heap.
	runtimeMinHeap = 4 << 20
)

// Percent is the GOGC that makes the collection target reach floor: the
// runtime aims at live + (live + roots) × GOGC/100, roots being the
// stacks and globals, and at no less than 4 MiB × GOGC/100. The result is
// within [minPercent, maxPercent], and no higher than makes that minimum
// the floor.
func Percent(live, roots, floor uint64) int {
	most := min(maxPercent, max(minPercent, floor/(runtimeMinHeap/100)))
	if floor <= live {
		return minPercent
	}
	base := live + roots
	if base == 0 {
		return int(most)
	}
	// In floating point: (floor - live) × 100 overflows uint64 for the
	// largest floors, and the result is clamped to a few thousand anyway.
	p := float64(floor-live) * 100 / float64(base)
	return int(min(max(p, minPercent), float64(most)))
}

// Floor adjusts GOGC after every collection. One process runs at most one.
type Floor struct {
	floor  uint64
	sample []metrics.Sample // used by one goroutine at a time: Start's, then the finalizers'

	mu      sync.Mutex // orders Stop against an adjustment
	stopped bool
	last    int
	before  int
}

// sentinel is allocated for the collector to find unreachable once per
// cycle; it is larger than the runtime's tiny allocations, which may
// never be finalized.
type sentinel struct{ _ [32]byte }

// Start sets GOGC now and after each collection so that the heap's target
// is at least floor bytes. Stop restores the GOGC it found.
func Start(floor uint64) *Floor {
	f := &Floor{floor: floor, sample: []metrics.Sample{{Name: liveHeap}, {Name: stacks}, {Name: globals}}}
	f.last = f.percent()
	f.before = debug.SetGCPercent(f.last)
	f.arm()
	return f
}

func (f *Floor) percent() int {
	metrics.Read(f.sample)
	var v [3]uint64
	for i, s := range f.sample {
		if s.Value.Kind() != metrics.KindUint64 {
			return minPercent
		}
		v[i] = s.Value.Uint64()
	}
	return Percent(v[0], v[1]+v[2], f.floor)
}

func (f *Floor) arm() {
	runtime.SetFinalizer(&sentinel{}, f.collected)
}

// collected runs on the finalizer goroutine after a collection found the
// sentinel unreachable; the live heap it reads is that collection's.
func (f *Floor) collected(*sentinel) {
	p := f.percent()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	if p != f.last {
		debug.SetGCPercent(p)
		f.last = p
	}
	f.arm()
}

// GCPercent is the GOGC the floor set last.
func (f *Floor) GCPercent() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// Stop ends the adjustment and puts back the GOGC from before Start.
func (f *Floor) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	f.stopped = true
	debug.SetGCPercent(f.before)
}
