// Package gcfloor keeps the Go heap's collection target from falling
// below a floor.
//
// Vestibule's live heap is small (a few MiB) while every request
// allocates, so with the runtime's default (collect when the heap has
// doubled) a busy server collects several times a second, and the
// profile of an idle check-in put a quarter of its CPU outside the
// handler, much of it in the collector. A fixed higher GOGC would buy
// that CPU back but multiply the heap of a large fleet too. The floor
// does neither: while the live heap is small the target is the floor;
// once twice the live heap is above it, the runtime's default applies.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

const liveHeap = "/gc/heap/live:bytes"

// Percents bound what the floor sets: the runtime's default of 100 is the
// least (a floor never collects more often than Go would), and the most
// keeps a floor from growing without bound for a nearly empty heap.
const (
	minPercent = 100
	maxPercent = 2000
)

// Percent is the GOGC that makes the collection target (live heap times
// 1 + percent/100) reach floor, within [minPercent, maxPercent].
func Percent(live, floor uint64) int {
	if live == 0 {
		return maxPercent
	}
	if floor <= live {
		return minPercent
	}
	p := (floor - live) * 100 / live
	return int(min(max(p, minPercent), maxPercent))
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
	f := &Floor{floor: floor, sample: []metrics.Sample{{Name: liveHeap}}}
	f.last = f.percent()
	f.before = debug.SetGCPercent(f.last)
	f.arm()
	return f
}

func (f *Floor) percent() int {
	metrics.Read(f.sample)
	if f.sample[0].Value.Kind() != metrics.KindUint64 {
		return minPercent
	}
	return Percent(f.sample[0].Value.Uint64(), f.floor)
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
