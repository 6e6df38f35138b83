// allocprog: workloads for allocscope's Go trace tests. It runs one workload between
// trace.Start and trace.Stop and prints, as JSON on stdout, what the runtime itself counted
// over that window (runtime/metrics read after runtime.ReadMemStats, which flushes every P's
// cache so the counts are exact), for the tests to hold the imported trace's replay against.
//
// Usage: allocprog MODE N TRACE.out   (MODE: json, maps, http, tiny, none)
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
)

type record struct {
	ID    int               `json:"id"`
	Name  string            `json:"name"`
	Tags  []string          `json:"tags"`
	Attrs map[string]string `json:"attrs"`
	Score float64           `json:"score"`
}

var sink any
var keep []*record

func jsonWork(n int) {
	for i := 0; i < n; i++ {
		r := &record{ID: i, Name: "item-" + strconv.Itoa(i), Score: float64(i) / 3}
		for j := 0; j < i%5; j++ {
			r.Tags = append(r.Tags, "t"+strconv.Itoa(j))
		}
		r.Attrs = map[string]string{"k": strconv.Itoa(i % 17)}
		b, err := json.Marshal(r)
		if err != nil {
			panic(err)
		}
		var back record
		if err := json.Unmarshal(b, &back); err != nil {
			panic(err)
		}
		sink = b
		if i%50 == 0 {
			keep = append(keep, r)
		}
	}
}

func mapsWork(n int) {
	m := map[int][]byte{}
	idx := map[string]int{}
	for i := 0; i < n; i++ {
		m[i] = make([]byte, 16+i%200)
		idx[strconv.Itoa(i)] = i
		if i >= 2000 {
			delete(m, i-2000)
			delete(idx, strconv.Itoa(i-2000))
		}
		if i%5000 == 4999 {
			// Start over: the old maps become garbage.
			m2 := make(map[int][]byte, len(m))
			for k, v := range m {
				m2[k] = v
			}
			m = m2
		}
	}
	sink = m
	sink = idx
}

func tinyWork(n int) {
	var out []*int32
	for i := 0; i < n; i++ {
		v := new(int32)
		*v = int32(i)
		if i%3 == 0 {
			out = append(out, v)
		}
		if len(out) > 1000 {
			out = out[:0]
		}
	}
	sink = out
}

func httpWork(n int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		resp := map[string]any{"len": len(body), "path": r.URL.Path, "words": strings.Fields(string(body))}
		json.NewEncoder(w).Encode(resp)
	})}
	go srv.Serve(ln)
	url := "http://" + ln.Addr().String() + "/echo"
	client := &http.Client{}
	var wg sync.WaitGroup
	const workers = 8
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < n/workers; i++ {
				body := strings.NewReader(strings.Repeat("word ", 1+(i+w)%40))
				resp, err := client.Post(url, "text/plain", body)
				if err != nil {
					panic(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				sink = b
			}
		}(w)
	}
	wg.Wait()
	srv.Close()
}

type snapshot struct {
	buckets []float64
	counts  []uint64
	tiny    uint64
	allocs  uint64
	gcs     uint64
}

var names = []string{
	"/gc/heap/allocs-by-size:bytes",
	"/gc/heap/tiny/allocs:objects",
	"/gc/heap/allocs:objects",
	"/gc/cycles/total:gc-cycles",
	"/gc/gogc:percent",
	"/sched/gomaxprocs:threads",
}

func read() (snapshot, []metrics.Sample) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms) // flushes every P's cache: the counts below are whole
	s := make([]metrics.Sample, len(names))
	for i, n := range names {
		s[i].Name = n
	}
	metrics.Read(s)
	h := s[0].Value.Float64Histogram()
	return snapshot{h.Buckets, h.Counts, s[1].Value.Uint64(), s[2].Value.Uint64(), s[3].Value.Uint64()}, s
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: allocprog MODE N TRACE.out")
		os.Exit(2)
	}
	mode := os.Args[1]
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		panic(err)
	}
	f, err := os.Create(os.Args[3])
	if err != nil {
		panic(err)
	}
	if err := trace.Start(f); err != nil {
		panic(err)
	}
	before, _ := read()
	switch mode {
	case "json":
		jsonWork(n)
	case "maps":
		mapsWork(n)
	case "tiny":
		tinyWork(n)
	case "http":
		httpWork(n)
	case "none":
	default:
		panic("unknown mode " + mode)
	}
	after, s := read()
	trace.Stop()
	if err := f.Close(); err != nil {
		panic(err)
	}
	type bucket struct {
		Lo, Hi float64
		Count  uint64
	}
	var by []bucket
	for i := range after.counts {
		if d := after.counts[i] - before.counts[i]; d > 0 {
			hi := after.buckets[i+1]
			if math.IsInf(hi, 1) {
				hi = -1 // JSON has no infinity: -1 is "no upper bound"
			}
			by = append(by, bucket{after.buckets[i], hi, d})
		}
	}
	out := map[string]any{
		"by_size":    by,
		"tiny":       after.tiny - before.tiny,
		"allocs":     after.allocs - before.allocs,
		"gcs":        after.gcs - before.gcs,
		"gogc":       s[4].Value.Uint64(),
		"gomaxprocs": s[5].Value.Uint64(),
		"keep":       len(keep),
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		panic(err)
	}
}
