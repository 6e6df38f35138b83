//! Many threads, millions of events: none lost, writer backpressure exercised, global order right.
//! And a process killed with SIGKILL leaves a trace readable up to its last flush.

mod common;

use std::collections::HashMap;

use traces::Op;

const THREADS: u64 = 16;
const PER_THREAD: u64 = 150_000;

#[test]
fn millions_of_events_none_lost_with_backpressure() {
    let dir = tempfile::tempdir().unwrap();
    let exe = common::compile("stress", dir.path());
    let args = [
        exe.into_os_string(),
        THREADS.to_string().into(),
        PER_THREAD.to_string().into(),
    ];
    // A long flush interval: rings fill up and hooks must wait for the writer.
    let outcome = common::record(dir.path(), &args, |o| o.flush_ms = 2000);
    assert_eq!(outcome.exit_code, 0);
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    let p = &outcome.processes[0];
    assert_eq!(p.missing, 0, "lost events");
    assert_eq!(
        p.written,
        Some(p.events),
        "written by the recorder = read back"
    );
    assert!(p.waits > 0, "backpressure was exercised");
    let evs = common::events(&p.path);
    assert!(
        evs.len() as u64 >= THREADS * (2 * PER_THREAD + 64),
        "{} events",
        evs.len()
    );
    let mut mallocs: HashMap<u32, u64> = HashMap::new();
    let mut frees: HashMap<u32, u64> = HashMap::new();
    for e in &evs {
        match e.op {
            Op::Malloc => *mallocs.entry(e.thread).or_default() += 1,
            Op::Free if e.old_addr != 0 => *frees.entry(e.thread).or_default() += 1,
            _ => {}
        }
    }
    let workers: Vec<u32> = mallocs
        .iter()
        .filter(|(_, &n)| n >= PER_THREAD)
        .map(|(&t, _)| t)
        .collect();
    assert_eq!(workers.len() as u64, THREADS, "worker threads");
    for t in workers {
        assert_eq!(mallocs[&t], PER_THREAD, "thread {t} mallocs");
        assert_eq!(frees[&t], PER_THREAD, "thread {t} frees of its objects");
    }
    assert_eq!(common::order_violations(&evs), 0, "global order");
    // The quick summary (chunk directory only) agrees with the full read.
    let quick = collector::summarize(&p.path).unwrap();
    assert_eq!(
        (quick.events, quick.missing, quick.first_seq, quick.last_seq),
        (p.events, 0, p.first_seq, p.last_seq)
    );
    eprintln!(
        "stress: {} events, {} bytes, {:.2} bytes/event, {} waits",
        p.events,
        p.bytes,
        p.bytes_per_event(),
        p.waits
    );
}

#[test]
fn sigkill_leaves_a_readable_trace() {
    let dir = tempfile::tempdir().unwrap();
    let exe = common::compile("stress", dir.path());
    let args = [
        exe.into_os_string(),
        "4".into(),
        "20000".into(),
        "kill".into(),
    ];
    let outcome = common::record(dir.path(), &args, |o| o.flush_ms = 50);
    assert_eq!(outcome.exit_code, 128 + 9, "killed by SIGKILL");
    let p = &outcome.processes[0];
    assert_eq!(p.missing, 0);
    // Everything before the 500 ms pause was flushed (several 50 ms intervals passed).
    assert!(p.events >= 4 * (2 * 20_000 + 64), "{} events", p.events);
    let evs = common::events(&p.path);
    assert_eq!(evs.len() as u64, p.events);
    assert!(evs.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}

#[test]
fn short_lived_threads_and_frees_after_thread_exit() {
    let dir = tempfile::tempdir().unwrap();
    let exe = common::compile("threads", dir.path());
    let outcome = common::record(dir.path(), &[exe.into_os_string(), "30".into()], |_| {});
    assert_eq!(outcome.exit_code, 0);
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    let p = &outcome.processes[0];
    assert_eq!(p.missing, 0);
    let evs = common::events(&p.path);
    assert_eq!(common::order_violations(&evs), 0);
    // Each of the 300 threads: 3 mallocs of 5000 + t, and all 3 objects freed, on that thread.
    for t in 0..300u64 {
        let mine: Vec<_> = evs
            .iter()
            .filter(|e| e.op == Op::Malloc && e.size == 5000 + t)
            .collect();
        assert_eq!(mine.len(), 3, "thread {t} mallocs");
        let thread = mine[0].thread;
        assert!(mine.iter().all(|e| e.thread == thread));
        for m in mine {
            let freed = evs.iter().any(|e| {
                e.op == Op::Free && e.old_addr == m.addr && e.seq > m.seq && e.thread == thread
            });
            assert!(
                freed,
                "thread {t}: object {:#x} freed on its thread",
                m.addr
            );
        }
    }
}

#[test]
fn latency_is_measured_unless_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let exe = common::compile("threads", dir.path());
    let with = common::record(
        dir.path(),
        &[exe.clone().into_os_string(), "3".into()],
        |_| {},
    );
    let evs = common::events(&with.processes[0].path);
    // The clock's own cost is subtracted (cycle_clock), so the fastest calls (a tcache hit, a few
    // ns) read 0; slower ones do not.
    assert!(
        evs.iter().filter(|e| e.latency_ns > 0).count() > evs.len() / 10,
        "latencies measured"
    );
    assert!(
        evs.windows(2)
            .all(|w| w[0].ts_ns <= w[1].ts_ns || w[0].thread != w[1].thread),
        "per-thread time order"
    );

    let dir = tempfile::tempdir().unwrap();
    let without = common::record(dir.path(), &[exe.into_os_string(), "3".into()], |o| {
        o.latency = false
    });
    let evs = common::events(&without.processes[0].path);
    assert!(evs.len() > 90);
    assert!(
        evs.iter().all(|e| e.latency_ns == 0),
        "--no-latency records 0"
    );
    assert!(evs.last().unwrap().ts_ns > 0, "timestamps still taken");
}
