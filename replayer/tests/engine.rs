//! The replay engine end to end: trace events in, report out.

use replayer::config::{Config, FreePolicy, Pointers};
use replayer::ReplayError;
use traces::{Event, Op, PtrKind};

fn ev(op: Op, addr: u64, old_addr: u64, size: u64) -> Event {
    let mut e = Event::new(op);
    e.addr = addr;
    e.old_addr = old_addr;
    e.size = size;
    e
}

fn ok(v: Vec<Event>) -> impl Iterator<Item = Result<Event, ReplayError>> {
    v.into_iter().map(Ok)
}

#[test]
fn anomalies_are_counted_not_fatal_and_strict_makes_them_errors() {
    let mut failed = ev(Op::Malloc, 0, 0, 100);
    failed.failed = true;
    let events = vec![
        ev(Op::Malloc, 0x1000, 0, 100),
        ev(Op::Free, 0, 0x1000, 0),
        ev(Op::Free, 0, 0x1000, 0), // double free
        ev(Op::Free, 0, 0x9999, 0), // unknown
        failed,
        ev(Op::Free, 0, 0, 0), // free(NULL): fine
        ev(Op::Malloc, 0x2000, 0, 24),
        ev(Op::Malloc, 0x2000, 0, 24), // the free of the first was not recorded
    ];
    let cfg = Config::default();
    let r = replayer::replay("t", ok(events.clone()), &cfg, false).unwrap();
    let a = &r.anomalies.trace;
    assert_eq!(
        (
            a.failed_calls,
            a.unknown_frees,
            a.double_frees,
            a.missed_frees
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(r.go_memstats.mallocs, 3);
    let e = replayer::replay("t", ok(events), &cfg, true).unwrap_err();
    assert!(
        matches!(
            e,
            ReplayError::Strict {
                what: "double free",
                event: 2
            }
        ),
        "{e}"
    );
}

#[test]
fn realloc_is_alloc_copy_free() {
    let events = vec![
        ev(Op::Malloc, 0x1000, 0, 100),
        ev(Op::Realloc, 0x2000, 0x1000, 5000),
        ev(Op::Realloc, 0x3000, 0, 100), // realloc(NULL, n) = malloc
        ev(Op::Realloc, 0, 0x3000, 0),   // realloc(p, 0) = free
    ];
    let cfg = Config {
        free_policy: FreePolicy::Immediate,
        ..Config::default()
    };
    let r = replayer::replay("t", ok(events), &cfg, true).unwrap();
    let m = &r.go_memstats;
    assert_eq!(m.mallocs, 3);
    assert_eq!(m.frees, 2);
    assert_eq!(m.heap_objects, 1);
    assert_eq!(m.heap_alloc, 5376);
    assert_eq!(r.model.peak.live_requested, 5100);
}

#[test]
fn realloc_to_zero_marked_failed_is_a_free_that_strict_accepts() {
    // Old recorders marked glibc's realloc(p, 0) (frees p, returns NULL) as a failed call.
    let mut zero = ev(Op::Realloc, 0, 0x1000, 0);
    zero.failed = true;
    let events = vec![ev(Op::Malloc, 0x1000, 0, 100), zero];
    let cfg = Config {
        free_policy: FreePolicy::Immediate,
        ..Config::default()
    };
    let r = replayer::replay("t", ok(events), &cfg, true).unwrap();
    assert_eq!(r.anomalies.trace, traces::live::Anomalies::default());
    assert_eq!((r.go_memstats.mallocs, r.go_memstats.frees), (1, 1));
    assert_eq!(r.go_memstats.heap_objects, 0);
}

#[test]
fn trace_errors_stay_typed_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.atrace");
    let mut w = traces::TraceWriter::create(&path, &traces::Header::default()).unwrap();
    for i in 0..1000u64 {
        let mut e = ev(Op::Malloc, 0x1000 + 64 * i, 0, 48);
        e.seq = i;
        w.push(&e).unwrap();
        if i % 100 == 99 {
            w.flush().unwrap();
        }
    }
    drop(w);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 40]).unwrap();
    let e = replayer::replay_file(&path, &Config::default(), false).unwrap_err();
    let source = std::error::Error::source(&e).expect("the trace error is the source");
    let trace = source
        .downcast_ref::<traces::TraceError>()
        .expect("a typed TraceError");
    assert!(trace.is_truncation(), "{trace}");
    assert_eq!(e.to_string(), path.display().to_string());
}

#[test]
fn pointer_assumption_and_threads() {
    let mut a = ev(Op::Malloc, 0x1000, 0, 1024);
    a.kind = PtrKind::Scan;
    a.thread = 3;
    let b = ev(Op::Malloc, 0x2000, 0, 8);
    let run = |pointers, procs| {
        let cfg = Config {
            pointers,
            procs,
            ..Config::default()
        };
        replayer::replay("t", ok(vec![a, b]), &cfg, true).unwrap()
    };
    let by = |r: &replayer::ReplayReport, size| {
        r.go_memstats
            .by_size
            .iter()
            .find(|b| b.size == size)
            .unwrap()
            .mallocs
    };
    // noscan: 1024 in its own class, 8 bytes tiny.
    let r = run(Pointers::Noscan, 1);
    assert_eq!((by(&r, 1024), by(&r, 16)), (1, 1));
    // trace: the event says scan, so the malloc header moves it to 1152.
    let r = run(Pointers::Trace, 1);
    assert_eq!((by(&r, 1152), by(&r, 16)), (1, 1));
    // scan: both; 8-byte pointer objects are never tiny.
    let r = run(Pointers::Scan, 4);
    assert_eq!((by(&r, 1152), by(&r, 8)), (1, 1));
    assert_eq!(r.go_memstats.tiny_allocs, 0);
    // By default the trace's kinds count (DESIGN.md: pointer-free unless the trace says).
    assert_eq!(Config::default().pointers, Pointers::Trace);
    let r = replayer::replay("t", ok(vec![a, b]), &Config::default(), true).unwrap();
    assert_eq!((by(&r, 1152), by(&r, 16)), (1, 1));
}

#[test]
fn a_csv_noscan_column_counts_by_default() {
    // Ten 8-byte pointer objects (class 8: never tiny) and ten pointer-free ones (tiny).
    let mut csv = String::from("op,id,size,noscan\n");
    for i in 0..20 {
        csv.push_str(&format!("malloc,{i},8,{}\n", (i >= 10) as u8));
    }
    let replay = |pointers| {
        let cfg = Config {
            pointers,
            gogc: -1,
            ..Config::default()
        };
        let r = replayer::replay_csv("w.csv", csv.as_bytes(), &cfg, true).unwrap();
        let eight = r.go_memstats.by_size.iter().find(|b| b.size == 8).unwrap();
        (eight.mallocs, r.go_memstats.tiny_allocs)
    };
    // Tiny allocations are Go's count: objects that joined a block already open (two 8-byte
    // objects per 16-byte block).
    assert_eq!(replay(Config::default().pointers), (10, 5));
    assert_eq!(replay(Pointers::Noscan), (0, 10));
    assert_eq!(replay(Pointers::Scan), (20, 0));
}

fn churn_events(n: u64) -> Vec<Event> {
    let mut out = Vec::new();
    let mut live: Vec<u64> = Vec::new();
    let mut x = 0x2545F4914F6CDD1Du64;
    let mut next_addr = 0x10_0000u64;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x % 5 < 2 && !live.is_empty() {
            let a = live.swap_remove((x >> 9) as usize % live.len());
            out.push(ev(Op::Free, 0, a, 0));
        } else {
            let size = if x.is_multiple_of(97) {
                50_000
            } else {
                1 + (x >> 20) % 700
            };
            let mut e = ev(Op::Malloc, next_addr, 0, size);
            e.thread = (x % 3) as u32;
            next_addr += 0x10_0000;
            live.push(e.addr);
            out.push(e);
        }
    }
    out
}

#[test]
fn replays_are_deterministic() {
    let events = churn_events(200_000);
    for policy in [FreePolicy::Gc, FreePolicy::Immediate] {
        let cfg = Config {
            free_policy: policy,
            procs: 2,
            gogc: 50,
            ..Config::default()
        };
        let a = replayer::replay("t", ok(events.clone()), &cfg, true).unwrap();
        let b = replayer::replay("t", ok(events.clone()), &cfg, true).unwrap();
        assert_eq!(a.go_memstats, b.go_memstats);
        assert_eq!(a.model, b.model);
        let mem = |r: &replayer::ReplayReport| {
            r.metrics
                .iter()
                .filter(|(k, _)| !k.ends_with("_ns") && !k.ends_with("_per_s"))
                .map(|(k, v)| (k.clone(), *v))
                .collect::<Vec<_>>()
        };
        assert_eq!(mem(&a), mem(&b));
        if policy == FreePolicy::Gc {
            assert!(a.go_memstats.num_gc > 5, "num_gc {}", a.go_memstats.num_gc);
        }
    }
}

#[test]
fn json_has_the_architecture_schema() {
    let cfg = Config::default();
    let r = replayer::replay("t.atrace", ok(churn_events(20_000)), &cfg, true).unwrap();
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["trace"]["path"], "t.atrace");
    for k in [
        "allocator",
        "free_policy",
        "gogc",
        "gomemlimit",
        "tiny",
        "tiny_block",
        "page_size",
        "pointers",
        "procs",
        "size_classes",
    ] {
        assert!(v["config"].get(k).is_some(), "config.{k}");
    }
    for k in [
        "heap_alloc",
        "heap_inuse",
        "heap_idle",
        "heap_released",
        "heap_sys",
        "mallocs",
        "frees",
        "heap_objects",
        "tiny_allocs",
        "num_gc",
        "next_gc",
    ] {
        assert!(v["go_memstats"][k].is_u64(), "go_memstats.{k}");
    }
    assert_eq!(
        v["go_memstats"]["by_size"].as_array().unwrap().len(),
        67,
        "every class"
    );
    assert!(v["go_memstats"]["large"]["bytes"].is_u64());
    for k in [
        "peak_heap",
        "peak_heap_alloc",
        "peak_live_requested",
        "waste_pct",
        "num_gc",
        "heap_sys",
    ] {
        assert!(v["metrics"][k].is_number(), "metrics.{k}");
    }
    for k in ["classes", "pages", "gc_cycles", "peak"] {
        assert!(v["model"].get(k).is_some(), "model.{k}");
    }
    assert!(
        v["model"]["gc_cycles"].as_array().unwrap().len() as u64
            == v["go_memstats"]["num_gc"].as_u64().unwrap()
    );
    let w = v["metrics"]["waste_pct"].as_f64().unwrap();
    assert!(w > 0.0 && w < 20.0, "waste_pct {w}");
}

#[test]
fn config_knobs_change_the_model() {
    let events = churn_events(50_000);
    let base = replayer::replay("t", ok(events.clone()), &Config::default(), true).unwrap();
    let no_tiny = Config {
        tiny: false,
        ..Config::default()
    };
    let r = replayer::replay("t", ok(events.clone()), &no_tiny, true).unwrap();
    assert_eq!(r.go_memstats.tiny_allocs, 0);
    assert_eq!(r.go_memstats.mallocs, base.go_memstats.mallocs);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("classes.csv");
    // A coarse table: powers of two only.
    let mut t = String::from("class,bytes_per_obj,bytes_per_span\n");
    for (i, s) in [16u32, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
        .iter()
        .enumerate()
    {
        t.push_str(&format!("{},{s},{}\n", i + 1, (*s).max(8192)));
    }
    std::fs::write(&csv, t).unwrap();
    let coarse = Config {
        size_classes: csv.display().to_string(),
        ..Config::default()
    };
    let r = replayer::replay("t", ok(events.clone()), &coarse, true).unwrap();
    assert_eq!(r.go_memstats.by_size.len(), 10);
    assert!(r.metrics["waste_pct"] > base.metrics["waste_pct"]);
    let limited = Config {
        gogc: -1,
        gomemlimit: Some(8 << 20),
        ..Config::default()
    };
    let r = replayer::replay("t", ok(events), &limited, true).unwrap();
    assert!(r.go_memstats.num_gc > 0);
}

/// A trace that allocates more than any heap could hold (issue 17: `malloc(2^64-1)` grew the
/// model to 18 GB): a failed call in the report, nothing allocated; a realloc to such a size
/// still releases the old object, as the trace says it was released.
#[test]
fn allocations_no_heap_could_hold_are_failed_calls() {
    let mut realloc = ev(Op::Realloc, 0x3000, 0x2000, 1 << 50);
    realloc.size = 1 << 50;
    let events = vec![
        ev(Op::Malloc, 0x1000, 0, 1 << 62),
        ev(Op::Malloc, 0x2000, 0, 100),
        realloc,
        ev(Op::Free, 0, 0x1000, 0),
        ev(Op::Free, 0, 0x3000, 0),
    ];
    let cfg = Config {
        free_policy: FreePolicy::Immediate,
        ..Config::default()
    };
    let r = replayer::replay("t", ok(events), &cfg, false).unwrap();
    assert_eq!(r.anomalies.trace.failed_calls, 2);
    assert_eq!(r.model.refused_allocs, 2);
    let m = &r.go_memstats;
    assert_eq!((m.mallocs, m.frees, m.heap_alloc), (1, 1, 0));
    assert!(m.heap_sys <= 4 << 20, "heap_sys {}", m.heap_sys);
    assert!(
        r.summary().contains("2 of the failed calls"),
        "{}",
        r.summary()
    );
}
