// Command go-oracle performs a CSV allocation workload on the real Go runtime and prints what
// the runtime reports, as JSON, for allocscope's fidelity tests and benchmarks.
//
// Usage: go-oracle [-gogc N|off] [-repeat N] [-sample N] [-work N] [-workkib N] [-pace]
// [-timeline FILE] workload.csv
//
// The CSV has a header row naming at least op,id,size (the allocscope CSV form); noscan (1/0),
// old_id, nmemb and ts_ns are used when present, other columns are ignored. Pointer-free objects
// are make([]byte, size); pointer objects are make([]*byte, ceil(size/8)) (the same size
// class as size bytes). A free drops the program's last reference (a free with no id is
// free(NULL)); a realloc allocates the new object, copies, and drops the old one (Go has no
// realloc). With -pace each op waits until its ts_ns after the start, so the runtime sees the
// workload's own allocation rate (its GC runs concurrently with it, as in the recorded program).
//
// The workload is decoded into an op array in mmap'd memory before measuring, so the
// runtime heap holds only the workload's objects and the runtime's own. Live objects are held
// in a global (bss) slot table. Before measuring, a GC runs; then the GC percent is set
// (-gogc, default off). Output: MemStats and runtime/metrics before and after, the peak of
// HeapInuse sampled every -sample ops with runtime/metrics (no stop-the-world; -timeline writes
// every sample), and the loop's wall time (median over -repeat runs when GC is off; with GC on,
// one run).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sort"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

const maxSlots = 1 << 18

// slotTable holds the live objects (a GC root outside the heap).
var slotTable [maxSlots]unsafe.Pointer
var slotSize [maxSlots]int64

const (
	opAlloc = iota
	opFree
	opRealloc
)

// op is one decoded call; it lives in mmap'd memory.
type op struct {
	size   int64
	ts     int64 // ns from the start of the workload (the ts_ns column), or -1
	slot   uint32
	old    uint32
	kind   uint8
	noscan uint8
	_      [6]byte
}

// mmapBytes returns n bytes of zeroed memory outside the Go heap.
func mmapBytes(n int) ([]byte, error) {
	if n == 0 {
		n = 1
	}
	return syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
}

// mmapSlice returns a zeroed []T of n elements outside the Go heap (T must hold no pointers).
func mmapSlice[T any](n int) ([]T, error) {
	var zero T
	b, err := mmapBytes((n + 1) * int(unsafe.Sizeof(zero)))
	if err != nil {
		return nil, err
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n), nil
}

// idTable maps object ids (byte ranges of the workload text) to slots: open addressing with
// tombstones, all of it outside the Go heap so decoding leaves no garbage in the heap's spans.
type idTable struct {
	text []byte
	off  []uint32 // 0 = empty, ^0 = deleted, else offset+1
	n    []uint16
	slot []uint32
	mask uint32
}

func hashBytes(b []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return h
}

func (t *idTable) find(key []byte) (int, bool) {
	i := hashBytes(key) & t.mask
	firstFree := -1
	for {
		o := t.off[i]
		switch {
		case o == 0:
			if firstFree >= 0 {
				return firstFree, false
			}
			return int(i), false
		case o == ^uint32(0):
			if firstFree < 0 {
				firstFree = int(i)
			}
		default:
			k := t.text[o-1 : o-1+uint32(t.n[i])]
			if string(k) == string(key) {
				return int(i), true
			}
		}
		i = (i + 1) & t.mask
	}
}

// fields splits one CSV line into at most len(out) fields (no quoting: the allocscope CSV
// form needs none), trimming spaces, without allocating.
func fields(line []byte, base int, out [][2]int) int {
	n := 0
	start := 0
	for i := 0; i <= len(line) && n < len(out); i++ {
		if i == len(line) || line[i] == ',' {
			a, b := start, i
			for a < b && (line[a] == ' ' || line[a] == '\t') {
				a++
			}
			for b > a && (line[b-1] == ' ' || line[b-1] == '\t' || line[b-1] == '\r') {
				b--
			}
			out[n] = [2]int{base + a, base + b}
			n++
			start = i + 1
		}
	}
	return n
}

func atoi(b []byte) int64 {
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + int64(c-'0')
	}
	return v
}

func decode(path string) ([]op, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	text, err := mmapBytes(int(st.Size()) + 1)
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(f, text[:st.Size()]); err != nil {
		return nil, err
	}
	f.Close()
	text = text[:st.Size()]
	lines := 0
	for _, c := range text {
		if c == '\n' {
			lines++
		}
	}
	lines++
	ops, err := mmapSlice[op](lines)
	if err != nil {
		return nil, err
	}
	capacity := uint32(1)
	for int(capacity) < 2*lines+16 {
		capacity <<= 1
	}
	t := idTable{text: text, mask: capacity - 1}
	if t.off, err = mmapSlice[uint32](int(capacity)); err != nil {
		return nil, err
	}
	if t.n, err = mmapSlice[uint16](int(capacity)); err != nil {
		return nil, err
	}
	if t.slot, err = mmapSlice[uint32](int(capacity)); err != nil {
		return nil, err
	}
	freeSlots, err := mmapSlice[uint32](lines)
	if err != nil {
		return nil, err
	}
	nfree := 0
	next := uint32(0)
	newSlot := func() (uint32, error) {
		if nfree > 0 {
			nfree--
			return freeSlots[nfree], nil
		}
		if next == maxSlots {
			return 0, fmt.Errorf("more than %d live objects", maxSlots)
		}
		next++
		return next - 1, nil
	}
	var col [16][2]int
	const absent = -1
	colOp, colID, colSize, colNoscan, colOld, colNmemb, colTs := absent, absent, absent, absent, absent, absent, absent
	get := func(c int) []byte {
		if c == absent {
			return nil
		}
		return text[col[c][0]:col[c][1]]
	}
	n := 0
	header := true
	pos := 0
	lineNo := 0
	for pos < len(text) {
		end := pos
		for end < len(text) && text[end] != '\n' {
			end++
		}
		line := text[pos:end]
		base := pos
		pos = end + 1
		lineNo++
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		nf := fields(line, base, col[:])
		if header {
			header = false
			for i := 0; i < nf; i++ {
				switch string(text[col[i][0]:col[i][1]]) {
				case "op":
					colOp = i
				case "id":
					colID = i
				case "size":
					colSize = i
				case "noscan":
					colNoscan = i
				case "old_id":
					colOld = i
				case "nmemb":
					colNmemb = i
				case "ts_ns":
					colTs = i
				}
			}
			if colOp == absent || colID == absent || colSize == absent {
				return nil, fmt.Errorf("the header needs op,id,size")
			}
			continue
		}
		if nf <= colOp || nf <= colID || nf <= colSize {
			return nil, fmt.Errorf("line %d: too few fields", lineNo)
		}
		name := string(get(colOp)) // converted only for the comparison below (no allocation)
		id := get(colID)
		size := atoi(get(colSize))
		ts := int64(-1)
		if colTs != absent && colTs < nf {
			ts = atoi(get(colTs))
		}
		noscan := uint8(1)
		if colNoscan != absent && colNoscan < nf && string(get(colNoscan)) == "0" {
			noscan = 0
		}
		switch name {
		case "free":
			if len(id) == 0 {
				continue // free(NULL)
			}
			i, ok := t.find(id)
			if !ok {
				return nil, fmt.Errorf("line %d: free of an id that is not live", lineNo)
			}
			s := t.slot[i]
			t.off[i] = ^uint32(0)
			ops[n] = op{ts: ts, slot: s, kind: opFree}
			freeSlots[nfree] = s
			nfree++
		default:
			if name == "calloc" && colNmemb != absent && colNmemb < nf {
				if k := atoi(get(colNmemb)); k > 0 {
					size *= k
				}
			}
			s, err := newSlot()
			if err != nil {
				return nil, err
			}
			ops[n] = op{size: size, ts: ts, slot: s, kind: opAlloc, noscan: noscan}
			if name == "realloc" {
				oldID := id
				if colOld != absent && colOld < nf && len(get(colOld)) > 0 {
					oldID = get(colOld)
				}
				if i, ok := t.find(oldID); ok {
					o := t.slot[i]
					t.off[i] = ^uint32(0)
					ops[n] = op{size: size, ts: ts, slot: s, old: o, kind: opRealloc, noscan: noscan}
					freeSlots[nfree] = o
					nfree++
				}
			}
			i, ok := t.find(id)
			if ok {
				return nil, fmt.Errorf("line %d: id allocated while live", lineNo)
			}
			t.off[i] = uint32(col[colID][0]) + 1
			t.n[i] = uint16(len(id))
			t.slot[i] = s
		}
		n++
	}
	return ops[:n], nil
}

var sink unsafe.Pointer

func alloc(size int64, noscan bool) unsafe.Pointer {
	if noscan {
		b := make([]byte, size)
		if len(b) == 0 {
			return unsafe.Pointer(unsafe.SliceData(b))
		}
		return unsafe.Pointer(&b[0])
	}
	p := make([]*byte, (size+7)/8)
	if len(p) == 0 {
		return unsafe.Pointer(unsafe.SliceData(p))
	}
	return unsafe.Pointer(&p[0])
}

var inuseSamples = []metrics.Sample{
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/memory/classes/heap/unused:bytes"},
	{Name: "/gc/cycles/total:gc-cycles"},
}

// timeline, when set (-timeline), gets one line per HeapInuse sample: op index, heap object
// bytes, unused bytes in in-use spans, GC cycles. Written after the run from memory outside
// the Go heap.
var timeline []uint64
var timelineN int

func heapInuse() uint64 {
	metrics.Read(inuseSamples)
	return inuseSamples[0].Value.Uint64() + inuseSamples[1].Value.Uint64()
}

func noteTimeline(i int) {
	if timelineN+4 <= len(timeline) {
		timeline[timelineN] = uint64(i)
		timeline[timelineN+1] = inuseSamples[0].Value.Uint64()
		timeline[timelineN+2] = inuseSamples[1].Value.Uint64()
		timeline[timelineN+3] = inuseSamples[2].Value.Uint64()
		timelineN += 4
	}
}

// spin does about n units of CPU work that allocates nothing (a program's work between
// allocations, so the GC's concurrent phases take their usual share of the run).
func spin(n int) {
	x := workSink | 1
	for i := 0; i < n; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	workSink = x
}

var workSink uint64

// With -pace: how late ops ran against their ts_ns (sum and maximum, ns) and how many ran more
// than 100 µs late.
var lagSum, lagMax, lateOps int64

// run performs the ops. With -pace, an op with a time (ts_ns) waits until that long after the
// start, as the recorded program did: the runtime sees the workload's own allocation rate.
func run(ops []op, sample, work, workKiB int, pace bool) (peak uint64) {
	start := time.Now()
	for i := range ops {
		o := &ops[i]
		if w := work + workKiB*int(o.size>>10); w > 0 {
			spin(w)
		}
		if pace && o.ts >= 0 {
			el := time.Since(start).Nanoseconds()
			for el < o.ts {
				spin(20)
				el = time.Since(start).Nanoseconds()
			}
			// How far behind the workload's clock the runtime is running.
			lag := el - o.ts
			lagSum += lag
			if lag > lagMax {
				lagMax = lag
			}
			if lag > 100_000 {
				lateOps++
			}
		}
		switch o.kind {
		case opAlloc:
			slotTable[o.slot] = alloc(o.size, o.noscan == 1)
			slotSize[o.slot] = o.size
		case opFree:
			slotTable[o.slot] = nil
		case opRealloc:
			p := alloc(o.size, o.noscan == 1)
			n := min(o.size, slotSize[o.old])
			if n > 0 {
				copy(unsafe.Slice((*byte)(p), n), unsafe.Slice((*byte)(slotTable[o.old]), n))
			}
			slotTable[o.slot] = p
			slotSize[o.slot] = o.size
			slotTable[o.old] = nil
		}
		if sample > 0 && i%sample == 0 {
			if v := heapInuse(); v > peak {
				peak = v
			}
			noteTimeline(i)
		}
	}
	if sample > 0 {
		if v := heapInuse(); v > peak {
			peak = v
		}
	}
	return peak
}

type bySize struct {
	Size    uint32 `json:"size"`
	Mallocs uint64 `json:"mallocs"`
	Frees   uint64 `json:"frees"`
}

type snapshot struct {
	HeapAlloc    uint64   `json:"heap_alloc"`
	HeapInuse    uint64   `json:"heap_inuse"`
	HeapIdle     uint64   `json:"heap_idle"`
	HeapReleased uint64   `json:"heap_released"`
	HeapSys      uint64   `json:"heap_sys"`
	Mallocs      uint64   `json:"mallocs"`
	Frees        uint64   `json:"frees"`
	HeapObjects  uint64   `json:"heap_objects"`
	NumGC        uint32   `json:"num_gc"`
	NextGC       uint64   `json:"next_gc"`
	BySize       []bySize `json:"by_size"`
	// runtime/metrics
	TinyAllocs    uint64    `json:"tiny_allocs"`
	AllocsObjects uint64    `json:"allocs_objects"`
	AllocsBySize  []uint64  `json:"allocs_by_size_counts"`
	AllocsBuckets []float64 `json:"allocs_by_size_buckets"`
	GlobalsScan   uint64    `json:"globals_scan_bytes"`
	StackScan     uint64    `json:"stack_scan_bytes"`
	HeapUnused    uint64    `json:"heap_unused_bytes"`
	HeapObjectsB  uint64    `json:"heap_objects_bytes"`
	GCCyclesTotal uint64    `json:"gc_cycles_total"`
	HeapGoal      uint64    `json:"heap_goal"`
}

var metricNames = []string{
	"/gc/heap/tiny/allocs:objects",
	"/gc/heap/allocs:objects",
	"/gc/heap/allocs-by-size:bytes",
	"/gc/scan/globals:bytes",
	"/gc/scan/stack:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/objects:bytes",
	"/gc/cycles/total:gc-cycles",
	"/gc/heap/goal:bytes",
}

// raw is read without allocating (so reading it does not disturb what it measures): the
// MemStats and samples are allocated and read once beforehand, and Read reuses histograms.
type raw struct {
	m  runtime.MemStats
	ms []metrics.Sample
}

func newRaw() *raw {
	r := &raw{}
	for _, n := range metricNames {
		r.ms = append(r.ms, metrics.Sample{Name: n})
	}
	r.read()
	return r
}

func (r *raw) read() {
	runtime.ReadMemStats(&r.m)
	metrics.Read(r.ms)
}

func (r *raw) snapshot() snapshot {
	m := &r.m
	s := snapshot{
		HeapAlloc: m.HeapAlloc, HeapInuse: m.HeapInuse, HeapIdle: m.HeapIdle,
		HeapReleased: m.HeapReleased, HeapSys: m.HeapSys, Mallocs: m.Mallocs, Frees: m.Frees,
		HeapObjects: m.HeapObjects, NumGC: m.NumGC, NextGC: m.NextGC,
	}
	for _, b := range m.BySize {
		s.BySize = append(s.BySize, bySize{b.Size, b.Mallocs, b.Frees})
	}
	ms := r.ms
	s.TinyAllocs = ms[0].Value.Uint64()
	s.AllocsObjects = ms[1].Value.Uint64()
	h := ms[2].Value.Float64Histogram()
	s.AllocsBySize = append([]uint64(nil), h.Counts...)
	for _, b := range h.Buckets {
		if b > 1e18 || b < -1e18 {
			b = -1 // JSON cannot hold infinities
		}
		s.AllocsBuckets = append(s.AllocsBuckets, b)
	}
	s.GlobalsScan = ms[3].Value.Uint64()
	s.StackScan = ms[4].Value.Uint64()
	s.HeapUnused = ms[5].Value.Uint64()
	s.HeapObjectsB = ms[6].Value.Uint64()
	s.GCCyclesTotal = ms[7].Value.Uint64()
	s.HeapGoal = ms[8].Value.Uint64()
	return s
}

type output struct {
	GoVersion   string   `json:"go_version"`
	GOGC        int      `json:"gogc"`
	Ops         int      `json:"ops"`
	Before      snapshot `json:"before"`
	After       snapshot `json:"after"`
	PeakInuse   uint64   `json:"peak_heap_inuse"`
	ElapsedNs   []int64  `json:"elapsed_ns"`
	MedianNs    int64    `json:"median_ns"`
	NsPerOp     float64  `json:"ns_per_op"`
	Experiments string   `json:"goexperiment"`
	// With -pace: mean and largest lateness of ops against their ts_ns, and ops over 100 µs late.
	MeanLagNs int64 `json:"mean_lag_ns"`
	MaxLagNs  int64 `json:"max_lag_ns"`
	LateOps   int64 `json:"late_ops"`
}

func main() {
	gogc := flag.String("gogc", "off", "GOGC percent for the measured run, or off")
	repeat := flag.Int("repeat", 1, "runs to time (GC off only; the stats are from the first)")
	sample := flag.Int("sample", 0, "sample HeapInuse every N ops (0 = never)")
	work := flag.Int("work", 0, "units of non-allocating work before each op (about 1 ns each)")
	workKiB := flag.Int("workkib", 0, "more units of work per KiB the op allocates")
	pace := flag.Bool("pace", false, "perform each op no earlier than its ts_ns after the start")
	timelinePath := flag.String("timeline", "", "write every HeapInuse sample here (CSV: op,heap_objects,heap_unused,gc_cycles)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: go-oracle [-gogc N|off] [-repeat N] [-sample N] workload.csv")
		os.Exit(2)
	}
	debug.SetGCPercent(-1)
	ops, err := decode(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-oracle:", err)
		os.Exit(2)
	}
	pct := -1
	if *gogc != "off" {
		pct, err = strconv.Atoi(*gogc)
		if err != nil {
			fmt.Fprintln(os.Stderr, "go-oracle: bad -gogc")
			os.Exit(2)
		}
	}
	// The runtime's background scavenger adds a timer when it sleeps; the first timer on a P
	// grows that P's timer heap (a 16-byte allocation). Keep some timers pending so that growth
	// happens now, not while measuring.
	for i := 0; i < 8; i++ {
		time.AfterFunc(time.Hour, func() {})
	}
	before, after := newRaw(), newRaw()
	heapInuse()
	if *timelinePath != "" && *sample > 0 {
		if timeline, err = mmapSlice[uint64](4 * (len(ops)/(*sample) + 2)); err != nil {
			fmt.Fprintln(os.Stderr, "go-oracle:", err)
			os.Exit(2)
		}
	}
	out := output{GoVersion: runtime.Version(), GOGC: pct, Ops: len(ops), Experiments: os.Getenv("GOEXPERIMENT")}
	elapsed := make([]int64, 0, *repeat)
	runtime.GC()
	runtime.GC()
	time.Sleep(20 * time.Millisecond) // let the scavenger and sweeper settle
	debug.SetGCPercent(pct)
	before.read()
	t0 := time.Now()
	out.PeakInuse = run(ops, *sample, *work, *workKiB, *pace)
	elapsed = append(elapsed, time.Since(t0).Nanoseconds())
	after.read()
	if len(ops) > 0 {
		out.MeanLagNs, out.MaxLagNs, out.LateOps = lagSum/int64(len(ops)), lagMax, lateOps
	}
	debug.SetGCPercent(-1)
	out.Before = before.snapshot()
	out.After = after.snapshot()
	if out.PeakInuse > out.Before.HeapInuse {
		out.PeakInuse -= out.Before.HeapInuse
	} else {
		out.PeakInuse = 0
	}
	for r := 1; r < *repeat; r++ {
		for i := range slotTable {
			slotTable[i] = nil
		}
		runtime.GC()
		t0 := time.Now()
		run(ops, 0, *work, *workKiB, *pace)
		elapsed = append(elapsed, time.Since(t0).Nanoseconds())
	}
	if *timelinePath != "" {
		f, err := os.Create(*timelinePath)
		if err != nil {
			fmt.Fprintln(os.Stderr, "go-oracle:", err)
			os.Exit(2)
		}
		fmt.Fprintln(f, "op,heap_objects,heap_unused,gc_cycles")
		for i := 0; i+4 <= timelineN; i += 4 {
			fmt.Fprintf(f, "%d,%d,%d,%d\n", timeline[i], timeline[i+1], timeline[i+2], timeline[i+3])
		}
		f.Close()
	}
	out.ElapsedNs = elapsed
	ns := append([]int64(nil), out.ElapsedNs...)
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	out.MedianNs = ns[len(ns)/2]
	if len(ops) > 0 {
		out.NsPerOp = float64(out.MedianNs) / float64(len(ops))
	}
	sink = nil
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(out); err != nil {
		os.Exit(1)
	}
}
