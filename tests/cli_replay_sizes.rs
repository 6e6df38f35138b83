//! `allocscope replay` of allocations no allocator could satisfy (issue 17): `malloc(2^64-1)`
//! grew the Go model to 18 GB and made the baselines panic on an invalid `Layout`. They are
//! failed calls now, as C's malloc answers them: counted and reported, nothing allocated, in
//! bounded memory.

mod common;

use std::process::Command;

use serde_json::Value;

/// Runs `allocscope ARGS` in `dir` with its address space capped at 1 GiB (the replay of these
/// traces needs a small fraction of it; the model once grew to 18 GB).
fn allocscope_capped(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_allocscope"))
        .args(args)
        .current_dir(dir);
    cmd.output().unwrap()
}

fn replay_json(csv: &str, extra: &[&str]) -> (String, Value) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.csv"), csv).unwrap();
    replay_file(dir.path(), "w.csv", extra)
}

/// A recorded trace whose events say the real allocator granted impossible sizes (a crafted
/// or damaged recording: the import refuses such requests itself, so only a trace has them).
fn replay_events(events: &[traces::Event], extra: &[&str]) -> (String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let mut w =
        traces::TraceWriter::create(&dir.path().join("t.atrace"), &traces::Header::default())
            .unwrap();
    for e in events {
        w.push(e).unwrap();
    }
    w.finish().unwrap();
    replay_file(dir.path(), "t.atrace", extra)
}

fn event(seq: u64, op: traces::Op, addr: u64, old: u64, size: u64) -> traces::Event {
    let mut e = traces::Event::new(op);
    (e.seq, e.addr, e.old_addr, e.size) = (seq, addr, old, size);
    e
}

fn replay_file(dir: &std::path::Path, file: &str, extra: &[&str]) -> (String, Value) {
    let mut args = vec![
        "replay",
        file,
        "--allocator",
        "go,system,jemalloc,mimalloc",
        "--json",
        "r.json",
    ];
    args.extend_from_slice(extra);
    let out = allocscope_capped(&args, dir);
    let stdout = common::ok(&out);
    assert_eq!(common::stderr(&out), "", "nothing on stderr");
    let json = std::fs::read_to_string(dir.join("r.json")).unwrap();
    (stdout, serde_json::from_str(&json).unwrap())
}

fn failed_allocs(r: &Value) -> Vec<(String, u64)> {
    r["measurements"]["allocators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["allocator"].as_str().unwrap().to_string(),
                a["failed_allocs"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn malloc_of_2_to_the_64_is_a_failed_call_in_every_allocator() {
    // The two-line CSV: the importer answers it as malloc would (NULL), so the replay
    // sees a failed call and allocates nothing anywhere.
    let (stdout, r) = replay_json("op,id,size\nmalloc,a,18446744073709551615\n", &[]);
    assert_eq!(r["anomalies"]["failed_calls"], 1);
    assert_eq!(r["go_memstats"]["mallocs"], 0);
    assert_eq!(r["go_memstats"]["heap_sys"], 0);
    for (allocator, failed) in failed_allocs(&r) {
        assert_eq!(
            failed, 0,
            "{allocator}: the call failed in the trace already"
        );
    }
    assert!(stdout.contains("1 failed call"), "{stdout}");

    // A trace that says the allocator granted 2^64-1 bytes: every allocator refuses it.
    let (stdout, r) = replay_events(&[event(0, traces::Op::Malloc, 0x1000, 0, u64::MAX)], &[]);
    assert_eq!(r["anomalies"]["failed_calls"], 1);
    assert_eq!(r["model"]["refused_allocs"], 1);
    assert_eq!(r["go_memstats"]["mallocs"], 0);
    assert_eq!(r["go_memstats"]["heap_sys"], 0);
    for (allocator, failed) in failed_allocs(&r) {
        assert_eq!(failed, 1, "{allocator}");
    }
    assert!(
        stdout.contains("failed allocations (no allocator could satisfy them"),
        "{stdout}"
    );
}

#[test]
fn the_replay_goes_on_after_a_failed_call() {
    // A realloc to 1 PiB the trace says succeeded: it fails in every allocator and releases the
    // old object (the trace says it was released); the calls around it are replayed as usual,
    // threads or not.
    use traces::Op::{Free, Malloc, Realloc};
    let events = [
        event(0, Malloc, 4096, 0, 100),
        event(1, Malloc, 8192, 0, 1000),
        event(2, Realloc, 12288, 4096, 1 << 50),
        event(3, Malloc, 16384, 0, 300_000),
        event(4, Free, 0, 8192, 0),
        event(5, Free, 0, 16384, 0),
    ];
    for threads in [&[][..], &["--threads"][..]] {
        let (_, r) = replay_events(&events, threads);
        assert_eq!(r["anomalies"]["failed_calls"], 1, "{threads:?}");
        assert_eq!(r["go_memstats"]["mallocs"], 3, "{threads:?}");
        assert_eq!(r["go_memstats"]["large"]["mallocs"], 1, "{threads:?}");
        for (allocator, failed) in failed_allocs(&r) {
            assert_eq!(failed, 1, "{allocator} {threads:?}");
        }
    }
}
