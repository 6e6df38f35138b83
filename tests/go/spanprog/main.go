// spanprog: a workload for allocscope's span-placement test (tests/go_spans.rs). Run with
// GOGC=off and GODEBUG=traceallocfree=1, it allocates objects of many size classes, with and
// without pointers, and some large objects, all kept alive, between trace.Start and trace.Stop,
// so that every span the runtime allocates in the window can be held against the model's.
//
// Usage: spanprog N TRACE.out   (N: rounds of the size list)
package main

import (
	"fmt"
	"os"
	"runtime/trace"
	"strconv"
)

type node struct {
	next *node
	pad  [3]uint64
}

// Kept alive to the end: with the GC off nothing is freed anyway, but the compiler must not
// keep objects on the stack.
var keepBytes [][]byte
var keepPtrs [][]*node

// sizes covers small classes (noscan and, below, scan), the malloc-header boundary (512 B)
// and large objects (> 32 KiB: their own spans).
var sizes = []int{
	8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256,
	288, 320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280,
	1408, 1536, 1792, 2048, 2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528,
	6784, 6912, 8192, 9472, 9728, 10240, 10880, 12288, 13568, 14336, 16384, 18432, 19072,
	20480, 21760, 24576, 27264, 28672, 32768, 40000, 65536, 100000, 300000, 1 << 20,
}

func work(rounds int) {
	x := uint32(12345)
	for r := 0; r < rounds; r++ {
		for i := range sizes {
			// A fixed pseudo-random walk over the list, so classes interleave.
			x = x*1664525 + 1013904223
			s := sizes[int(x>>8)%len(sizes)]
			n := 1
			if s <= 4096 {
				n = 8
			}
			for j := 0; j < n; j++ {
				if i%3 == 0 && s <= 32768 {
					// Pointer objects: a slice of pointers of about s bytes.
					keepPtrs = append(keepPtrs, make([]*node, s/8))
				} else {
					keepBytes = append(keepBytes, make([]byte, s))
				}
			}
		}
	}
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: spanprog N TRACE.out")
		os.Exit(2)
	}
	rounds, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	f, err := os.Create(os.Args[2])
	if err != nil {
		panic(err)
	}
	if err := trace.Start(f); err != nil {
		panic(err)
	}
	work(rounds)
	trace.Stop()
	if err := f.Close(); err != nil {
		panic(err)
	}
	fmt.Println(len(keepBytes) + len(keepPtrs))
}
