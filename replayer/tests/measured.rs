//! Multithreaded measured replay: cross-thread frees never run before their allocation, and
//! the Go model's interleaving-independent results equal the single-thread ones.

use std::fmt::Write as _;

use replayer::measured::native::{Measure, Native, Touch};
use replayer::measured::{self, Allocator, Options};
use replayer::{Config, FreePolicy};

/// Four threads; every object is freed by the next thread (a cross-thread free), slots and
/// addresses are reused, sizes span small classes and large objects (no tiny: >= 16 bytes).
fn cross_thread_csv() -> String {
    let mut s = String::from("thread,op,id,size\n");
    let mut live: Vec<(u32, String)> = Vec::new();
    for i in 0..6000u32 {
        let t = i % 4;
        let size = [16, 24, 48, 100, 512, 3000, 40_000][(i % 7) as usize];
        writeln!(s, "{t},malloc,o{i},{size}").unwrap();
        live.push((t, format!("o{i}")));
        if i % 3 == 2 {
            let (owner, id) = live.remove((i as usize * 7) % live.len());
            writeln!(s, "{},free,{id},0", (owner + 1) % 4).unwrap();
        }
    }
    s
}

fn opts(threads: bool) -> Options {
    Options {
        allocators: vec![Allocator::Go, Allocator::Native(Native::System)],
        measure: Measure {
            touch: Touch::FirstByte,
            ..Measure::default()
        },
        repeat: 1,
        threads,
    }
}

#[test]
fn threaded_replay_matches_single_thread_memory_results() {
    let events = replayer::csv_events(cross_thread_csv().as_bytes()).unwrap();
    let cfg = Config {
        free_policy: FreePolicy::Immediate,
        procs: 4,
        ..Config::default()
    };
    let run = |threads| {
        measured::measure(
            "x",
            None,
            events.iter().cloned().map(Ok::<_, replayer::ReplayError>),
            &cfg,
            true,
            &opts(threads),
        )
        .unwrap()
    };
    let single = run(false);
    let multi = run(true);
    // `strict` above: any free before its allocation, double or unknown free is an error.
    assert_eq!(multi.anomalies, single.anomalies);
    let (s, m) = (&single.go_memstats, &multi.go_memstats);
    assert_eq!(m.mallocs, 6000);
    assert_eq!((m.mallocs, m.frees), (s.mallocs, s.frees));
    assert_eq!(m.by_size, s.by_size);
    assert_eq!(m.large, s.large);
    assert_eq!(m.heap_alloc, s.heap_alloc);
    let ms = multi.measurements.as_ref().unwrap();
    assert!(ms.threads);
    for a in &ms.allocators {
        assert_eq!(a.threads, 4, "{}", a.allocator);
        let op = &a.latency["op"];
        assert_eq!(op["malloc"].count, 6000, "{}", a.allocator);
        assert_eq!(op["free"].count, 2000, "{}", a.allocator);
    }
}
