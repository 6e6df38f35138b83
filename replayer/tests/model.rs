//! Scenario tables for the Go model: allocate these, free those, expect these spans and stats.

use replayer::config::{Config, FreePolicy, Pointers};
use replayer::malloc::{Heap, ZEROBASE_ADDR};
use replayer::mspan::SpanHome;
use replayer::pacer::MarkCosts;

const PAGE: u64 = 8192;

fn cfg() -> Config {
    Config {
        touch_memory: true,
        ..Config::default()
    }
}

fn heap(c: &Config) -> Heap {
    Heap::new(c).unwrap()
}

/// (size, noscan, n, heap_inuse, class size, class mallocs, tiny allocs, large mallocs)
type InuseRow = (u64, bool, u64, u64, u64, u64, u64, u64);

/// Fresh-heap HeapInuse after `n` allocations of `size` (the facts table, from a fresh heap:
/// Go's deltas there include spans the runtime had partly used, the model starts empty).
#[test]
fn heap_inuse_per_allocation_kind() {
    let table: &[InuseRow] = &[
        (8, true, 1000, PAGE, 16, 500, 500, 0),
        (24, true, 1000, 3 * PAGE, 24, 1000, 0, 0),
        (100, true, 1000, 14 * PAGE, 112, 1000, 0, 0),
        (1000, true, 1000, 125 * PAGE, 1024, 1000, 0, 0),
        (40000, true, 1000, 5000 * PAGE, 0, 0, 0, 1000),
        (8, false, 1000, PAGE, 8, 1000, 0, 0),
        (1024, false, 1000, 143 * PAGE, 1152, 1000, 0, 0),
        (32768, true, 10, 40 * PAGE, 0, 0, 0, 10),
        (32760, true, 10, 40 * PAGE, 32768, 10, 0, 0),
        (32761, false, 10, 40 * PAGE, 0, 0, 0, 10),
        (32761, true, 10, 40 * PAGE, 0, 0, 0, 10),
        (512, false, 15, PAGE, 512, 15, 0, 0),
        (513, false, 7, PAGE, 576, 7, 0, 0),
    ];
    for &(size, noscan, n, inuse, class_size, class_mallocs, tiny, large) in table {
        let c = cfg();
        let mut h = heap(&c);
        for _ in 0..n {
            h.malloc(size, noscan, 0).unwrap();
        }
        h.check_invariants();
        let m = h.memstats();
        let what = format!("{n} x {size} B {}", if noscan { "noscan" } else { "scan" });
        assert_eq!(m.heap_inuse, inuse, "{what}: HeapInuse");
        assert_eq!(m.tiny_allocs, tiny, "{what}: tiny");
        assert_eq!(m.large.mallocs, large, "{what}: large");
        assert_eq!(m.mallocs, n, "{what}: Mallocs counts every object");
        if class_size != 0 {
            let b = m.by_size.iter().find(|b| b.size == class_size).unwrap();
            assert_eq!(b.mallocs, class_mallocs, "{what}: BySize");
        }
        assert_eq!(
            m.heap_sys % (4 << 20),
            0,
            "{what}: the heap grows in 4 MiB chunks"
        );
        assert!(
            m.heap_sys >= m.heap_inuse && m.heap_sys - m.heap_inuse < (4 << 20) + 64 * PAGE,
            "{what}"
        );
    }
}

#[test]
fn tiny_packing_follows_alignment_and_replacement_rules() {
    let mut h = heap(&cfg());
    let a = h.malloc(1, true, 0).unwrap(); // off 0..1
    let b = h.malloc(2, true, 0).unwrap(); // aligned to 2: 2..4
    let c = h.malloc(4, true, 0).unwrap(); // aligned to 4: 4..8
    let d = h.malloc(8, true, 0).unwrap(); // aligned to 8: 8..16
    assert_eq!((b - a, c - a, d - a), (2, 4, 8));
    // Full block: a new one; 12 < 16 so it replaces the current block.
    let e = h.malloc(12, true, 0).unwrap();
    assert_eq!(e, a + 16);
    // 5 bytes do not fit after 12 (off 12 + 5 > 16): new block; 5 < 12 so it becomes current.
    let f = h.malloc(5, true, 0).unwrap();
    assert_eq!(f, a + 32);
    let g = h.malloc(3, true, 0).unwrap();
    assert_eq!(g, f + 5);
    // 15 bytes never fit: new block, but it does not replace the current one (15 > 8).
    let i = h.malloc(15, true, 0).unwrap();
    assert_eq!(i, a + 48);
    let j = h.malloc(2, true, 0).unwrap();
    assert_eq!(j, f + 8);
    let m = h.memstats();
    assert_eq!(m.tiny_allocs, 5);
    assert_eq!(m.by_size[1].mallocs, 4);
    assert_eq!(m.heap_alloc, 64);
    h.check_invariants();
}

#[test]
fn malloc_header_and_zerobase() {
    let mut h = heap(&cfg());
    let x = h.malloc(1024, false, 0).unwrap();
    let span = h.mheap().span(h.mheap().span_of(x).unwrap());
    assert_eq!(span.elem_bytes(), 1152);
    assert_eq!(
        x - span.base_addr(),
        8,
        "object starts after the 8-byte header"
    );
    assert_eq!(
        h.mheap().arena().read_u64(x - 8),
        replayer::malloc::FAKE_TYPE_PTR
    );
    assert_eq!(h.malloc(0, true, 0).unwrap(), ZEROBASE_ADDR);
    h.free(ZEROBASE_ADDR);
    assert_eq!(h.memstats().mallocs, 1);
}

#[test]
fn immediate_policy_reuses_slots_and_frees_empty_spans() {
    let c = Config {
        free_policy: FreePolicy::Immediate,
        ..cfg()
    };
    let mut h = heap(&c);
    let a = h.malloc(64, true, 0).unwrap();
    let b = h.malloc(64, true, 0).unwrap();
    h.free(a);
    assert_eq!(
        h.malloc(64, true, 0).unwrap(),
        a,
        "freed slot comes back first"
    );
    // Fill spans of 48-byte objects, free all: the uncached spans return to the heap.
    let objs: Vec<u64> = (0..1000).map(|_| h.malloc(48, true, 0).unwrap()).collect();
    let before = h.memstats().heap_inuse;
    for &o in &objs {
        h.free(o);
    }
    h.check_invariants();
    let m = h.memstats();
    assert!(m.heap_inuse < before, "{} < {before}", m.heap_inuse);
    assert_eq!(
        m.heap_inuse,
        2 * PAGE,
        "the 64-byte span and the cached 48-byte span stay"
    );
    assert_eq!(m.num_gc, 0);
    h.free(b);
    // Large objects go back to the page heap at once; 16 pages or more skip the page cache, and
    // first fit reuses the hole.
    let l = h.malloc(200_000, true, 0).unwrap();
    let l2 = h.malloc(200_000, true, 0).unwrap();
    h.free(l);
    assert_eq!(h.memstats().large.frees, 1);
    assert_eq!(
        h.malloc(150_000, true, 0).unwrap(),
        l,
        "first fit reuses the hole"
    );
    // Under 16 pages come from the P's page cache while it has room, not from the hole.
    h.free(l2);
    let small_large = h.malloc(100_000, true, 0).unwrap();
    assert_ne!(small_large, l2);
    h.check_invariants();
}

#[test]
fn gc_policy_frees_only_after_a_cycle_and_sweep() {
    let c = Config {
        bg_sweep: false,
        ..cfg()
    };
    let mut h = heap(&c);
    let a = h.malloc(64, true, 0).unwrap();
    h.free(a);
    let b = h.malloc(64, true, 0).unwrap();
    assert_ne!(a, b, "a dead object's slot is not reused before a GC");
    assert_eq!(h.memstats().frees, 0);
    h.gc_cycle(0);
    assert_eq!(h.memstats().num_gc, 1);
    // The span was cached: releasing it at mark termination swept it.
    let sp = h.mheap().span(h.mheap().span_of(a).unwrap());
    assert_eq!(sp.sweepgen(), h.mheap().sweepgen());
    assert!(matches!(sp.home(), SpanHome::Partial(_)));
    assert_eq!(h.memstats().frees, 1);
    assert_eq!(
        h.malloc(64, true, 0).unwrap(),
        a,
        "after the sweep the slot is reused first"
    );
    h.check_invariants();
}

#[test]
fn gc_reclaims_empty_spans_and_large_objects() {
    let c = cfg();
    let mut h = heap(&c);
    let objs: Vec<u64> = (0..2000).map(|_| h.malloc(256, true, 0).unwrap()).collect();
    let large = h.malloc(1 << 20, true, 0).unwrap();
    let inuse = h.memstats().heap_inuse;
    assert_eq!(inuse, (2000u64.div_ceil(32) + 128) * PAGE);
    for &o in &objs {
        h.free(o);
    }
    h.free(large);
    h.gc_cycle(0);
    h.check_invariants();
    let m = h.memstats();
    // Background sweep frees every empty span; the page heap keeps the pages as idle.
    assert_eq!(m.heap_inuse, 0);
    assert_eq!(m.heap_alloc, 0);
    assert_eq!(m.frees, 2001);
    assert_eq!(m.heap_idle, m.heap_sys);
}

#[test]
fn pacer_triggers_cycles_at_the_heap_minimum() {
    let mut h = heap(&cfg());
    // Churn: 64 KiB live, 40 MiB allocated in total.
    let mut ring = vec![0u64; 64];
    for i in 0..40 * 1024 {
        let slot = i % 64;
        if ring[slot] != 0 {
            h.free(ring[slot]);
        }
        ring[slot] = h.malloc(1024, true, 0).unwrap();
    }
    h.check_invariants();
    let m = h.memstats();
    // Goal 4 MiB, trigger 61/64 of it (noscan: small runway): ~40 MiB / ~3.9 MiB.
    assert!((9..=11).contains(&m.num_gc), "num_gc {}", m.num_gc);
    assert!(m.heap_inuse <= 4 << 20, "heap_inuse {}", m.heap_inuse);
    assert_eq!(m.next_gc, 4 << 20);
}

#[test]
fn a_heap_that_shrank_is_collected_at_its_new_size() {
    let mut h = heap(&Config {
        touch_memory: false,
        ..cfg()
    });
    // Grow to 64 MiB live, then free it all.
    let big: Vec<u64> = (0..16 * 1024)
        .map(|_| h.malloc(4096, true, 0).unwrap())
        .collect();
    for a in big {
        h.free(a);
    }
    let before = h.memstats().num_gc;
    // 200 MiB of churn with 64 KiB live: its first cycle comes at the big heap's trigger and
    // finds the heap empty; from then on the goal is the heap minimum (4 MiB), not the point
    // the last cycle triggered at (Go's resetLive forgets it; the model kept it and collected
    // once per 100 MiB).
    let mut ring = [0u64; 16];
    for i in 0..50 * 1024 {
        let slot = i % 16;
        if ring[slot] != 0 {
            h.free(ring[slot]);
        }
        ring[slot] = h.malloc(4096, true, 0).unwrap();
    }
    h.check_invariants();
    let m = h.memstats();
    assert!(
        m.num_gc - before >= 20,
        "{} cycles in the churn",
        m.num_gc - before
    );
    assert_eq!(m.next_gc, 4 << 20);
}

#[test]
fn gogc_off_never_collects_and_memory_limit_does() {
    let c = Config { gogc: -1, ..cfg() };
    let mut h = heap(&c);
    for _ in 0..10_000 {
        let x = h.malloc(1024, true, 0).unwrap();
        h.free(x);
    }
    assert_eq!(h.memstats().num_gc, 0);
    let c = Config {
        gogc: -1,
        gomemlimit: Some(8 << 20),
        ..cfg()
    };
    let mut h = heap(&c);
    for _ in 0..20_000 {
        let x = h.malloc(1024, true, 0).unwrap();
        h.free(x);
    }
    let m = h.memstats();
    assert!(m.num_gc >= 2, "num_gc {}", m.num_gc);
    assert!(m.heap_inuse < 8 << 20);
    h.check_invariants();
}

#[test]
fn pointers_and_procs_from_config() {
    let c = Config {
        procs: 2,
        pointers: Pointers::Scan,
        ..cfg()
    };
    let mut h = heap(&c);
    let a = h.malloc(16, false, 0).unwrap();
    let b = h.malloc(16, false, 1).unwrap();
    // Two Ps: two cached spans, each from its P's page cache block.
    assert_ne!(h.mheap().span_of(a), h.mheap().span_of(b));
    assert_eq!(h.memstats().heap_inuse, 2 * PAGE);
    h.check_invariants();
}

#[test]
fn green_tea_layout_reserves_inline_mark_bits() {
    let c = Config {
        green_tea: true,
        ..cfg()
    };
    let mut h = heap(&c);
    for _ in 0..504 {
        h.malloc(16, true, 0).unwrap();
    }
    assert_eq!(h.memstats().heap_inuse, PAGE);
    h.malloc(16, true, 0).unwrap();
    assert_eq!(h.memstats().heap_inuse, 2 * PAGE);
}

#[test]
fn random_churn_keeps_invariants_under_both_policies() {
    for policy in [FreePolicy::Gc, FreePolicy::Immediate] {
        let c = Config {
            free_policy: policy,
            procs: 2,
            ..cfg()
        };
        let mut h = heap(&c);
        let mut live: Vec<u64> = Vec::new();
        let mut x: u64 = 0x9E3779B97F4A7C15;
        for i in 0..60_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) && !live.is_empty() {
                let k = (x >> 8) as usize % live.len();
                h.free(live.swap_remove(k));
            } else {
                let size = match x % 11 {
                    0 => 40_000 + (x >> 20) % 100_000,
                    1..=3 => 1 + (x >> 20) % 15,
                    _ => 16 + (x >> 20) % 3000,
                };
                live.push(
                    h.malloc(size, !(x >> 40).is_multiple_of(4), (i % 2) as usize)
                        .unwrap(),
                );
            }
            if i % 10_000 == 0 {
                h.check_invariants();
            }
        }
        h.check_invariants();
        let m = h.memstats();
        assert!(m.heap_objects > 0);
    }
}

/// A churn CSV: 2000-byte objects, a live set of `live` objects, `n` allocations, one every
/// `ns_per_alloc` of trace time (0 = no timestamps).
fn timed_churn(n: u64, live: u64, ns_per_alloc: u64) -> String {
    let mut csv = String::from("op,id,size,ts_ns\n");
    for i in 0..n {
        let t = i * ns_per_alloc;
        if i >= live {
            csv.push_str(&format!("free,o{},0,{t}\n", i - live));
        }
        csv.push_str(&format!("malloc,o{i},2000,{t}\n"));
    }
    csv
}

fn timed_cfg() -> Config {
    Config {
        procs: 2,
        touch_memory: false,
        mark: MarkCosts {
            mark_latency_ns: 2_000_000,
            mark_ns_per_object: 0.0,
            mark_ns_per_scan_byte: 0.0,
            mark_ns_per_root_byte: 0.0,
            ..MarkCosts::default()
        },
        globals_bytes: 1 << 20,
        ..Config::default()
    }
}

#[test]
fn timed_mark_lasts_its_latency_and_measures_cons_mark() {
    // 4000 live 2000-byte objects (8 MB), one allocation per 4 µs: a 2 ms mark sees 500
    // allocations, about 1 MB.
    let csv = timed_churn(60_000, 4000, 4000);
    let rep = replayer::replay_csv("timed", csv.as_bytes(), &timed_cfg(), true).unwrap();
    let cycles = &rep.model.gc_cycles;
    assert!(cycles.len() >= 5, "{cycles:?}");
    // From the third cycle on (the heap has reached its live size).
    for c in &cycles[2..] {
        // The mark ends at the first op at or after 2 ms.
        assert!(
            (2_000_000..2_004_000).contains(&c.mark_ns),
            "mark lasted {} ns: {c:?}",
            c.mark_ns
        );
        let allocated = c.heap_live_at_mark_end - c.heap_live_before;
        // 500 allocations of the 2048-byte class, give or take a span refill.
        assert!(
            (1_000_000..1_100_000).contains(&allocated),
            "{allocated} bytes allocated during the mark: {c:?}"
        );
    }
    // Go's endCycle: cons/mark = allocated * (0.25 + idle) / (scan work * 0.75). Idle work is 0
    // (no marking CPU in this config), scan work is stacks + globals (pointer-free heap). The
    // value kept is the largest of this cycle's and the last four.
    let c = &cycles[2];
    let scan_work = (Config::default().stacks_bytes + (1 << 20)) as f64;
    let allocated = (c.heap_live_at_mark_end - c.heap_live_before) as f64;
    let expected = allocated * 0.25 / (scan_work * 0.75);
    assert!(
        c.cons_mark >= expected * 0.999,
        "cons/mark {} below this cycle's {expected}",
        c.cons_mark
    );
}

#[test]
fn a_faster_program_grows_the_heap_more_during_marks() {
    // The same ops at 4x the allocation rate: more is allocated during each timed mark, so
    // more survives it and the peak is higher (as with Go's concurrent mark).
    let slow = timed_churn(60_000, 4000, 2000);
    let fast = timed_churn(60_000, 4000, 500);
    let cfg = timed_cfg();
    let slow = replayer::replay_csv("slow", slow.as_bytes(), &cfg, true).unwrap();
    let fast = replayer::replay_csv("fast", fast.as_bytes(), &cfg, true).unwrap();
    let marked = |r: &replayer::ReplayReport| r.model.gc_cycles.last().unwrap().heap_marked;
    assert!(
        marked(&fast) > marked(&slow) + (4 << 20),
        "marked fast {} slow {}",
        marked(&fast),
        marked(&slow)
    );
    assert!(fast.model.peak.heap_inuse > slow.model.peak.heap_inuse);
}

#[test]
fn without_timestamps_the_mark_is_measured_in_bytes() {
    let csv = timed_churn(60_000, 4000, 0);
    let rep = replayer::replay_csv("untimed", csv.as_bytes(), &timed_cfg(), true).unwrap();
    assert!(!rep.model.gc_cycles.is_empty());
    assert!(rep.model.gc_cycles.iter().all(|c| c.mark_ns == 0));
}

#[test]
fn drawn_mark_latencies_are_deterministic_and_used() {
    let csv = timed_churn(60_000, 4000, 4000);
    let base = timed_cfg();
    let cfg = Config {
        mark: MarkCosts {
            mark_latencies_ns: vec![500_000, 4_000_000],
            ..base.mark.clone()
        },
        ..base
    };
    let a = replayer::replay_csv("a", csv.as_bytes(), &cfg, true).unwrap();
    let b = replayer::replay_csv("b", csv.as_bytes(), &cfg, true).unwrap();
    assert_eq!(a.model.gc_cycles, b.model.gc_cycles);
    let short = a.model.gc_cycles.iter().filter(|c| c.mark_ns < 1_000_000);
    let long = a.model.gc_cycles.iter().filter(|c| c.mark_ns >= 4_000_000);
    assert!(
        short.count() > 0 && long.count() > 0,
        "{:?}",
        a.model.gc_cycles
    );
}

/// Requests no heap could hold are failed calls, as C's malloc answers NULL (issue 17): nothing
/// is allocated, they are counted, and the heap stays consistent and usable. (A table with
/// 64 KiB pages keeps the page map of a full 256 GiB heap small: 16 MiB.)
#[test]
fn requests_past_the_address_space_are_failed_calls() {
    use replayer::arena::MAX_HEAP_BYTES;
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("classes.csv");
    std::fs::write(
        &table,
        "class,bytes_per_obj,bytes_per_span\n1,16,65536\n2,128,65536\n3,4096,65536\n",
    )
    .unwrap();
    let c = Config {
        size_classes: table.display().to_string(),
        page_size: 65536,
        touch_memory: false,
        gogc: -1,
        ..cfg()
    };
    let mut h = heap(&c);
    // Larger than the address space: refused at once, whatever the size.
    for size in [u64::MAX, u64::MAX - 65535, MAX_HEAP_BYTES + 1] {
        assert_eq!(h.malloc(size, true, 0).unwrap(), ZEROBASE_ADDR, "{size}");
    }
    assert_eq!(h.memstats().heap_sys, 0);
    // The whole address space in one object fits an empty heap; then nothing can grow.
    let big = h.malloc(MAX_HEAP_BYTES, true, 0).unwrap();
    assert_ne!(big, ZEROBASE_ADDR);
    assert_eq!(h.memstats().heap_sys, MAX_HEAP_BYTES);
    assert_eq!(h.malloc(100, true, 0).unwrap(), ZEROBASE_ADDR, "small");
    assert_eq!(h.malloc(8, true, 0).unwrap(), ZEROBASE_ADDR, "tiny");
    assert_eq!(h.malloc(70_000, false, 0).unwrap(), ZEROBASE_ADDR, "large");
    h.check_invariants();
    h.free(ZEROBASE_ADDR);
    let m = h.memstats();
    assert_eq!(
        (m.mallocs, m.heap_objects),
        (1, 1),
        "refused calls allocate nothing"
    );
    assert_eq!(h.refused_allocs(), 6);
    // Once the big object is collected, the same requests are served.
    h.free(big);
    h.gc_cycle(0);
    for size in [100, 8, 70_000] {
        assert_ne!(h.malloc(size, true, 0).unwrap(), ZEROBASE_ADDR, "{size}");
    }
    assert_eq!(h.refused_allocs(), 6);
    h.check_invariants();
}
