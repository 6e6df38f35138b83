//! One anomaly rule (`traces::live`), three tools: `info`, `replay` and `report` of the real binary
//! must count the same failed calls, unknown, double, inherited and missed frees on the same
//! trace, and those counts must be the ones the rule gives by hand.

mod common;
use common::{allocscope, ok, stderr};

use std::path::Path;

use serde_json::{json, Value};
use traces::{Event, Header, Op, TraceWriter};

/// The anomaly counts each tool reports for `trace`, as (info, replay, report).
fn counts(trace: &str, dir: &Path) -> (Value, Value, Value) {
    let info: Value =
        serde_json::from_str(&ok(&allocscope(&["info", trace, "--json"], dir))).unwrap();
    ok(&allocscope(
        &[
            "replay",
            trace,
            "--json",
            "r.json",
            "--touch",
            "none",
            "--no-timing",
            "-q",
        ],
        dir,
    ));
    ok(&allocscope(
        &["report", trace, "--json", "rep.json", "-q"],
        dir,
    ));
    let read = |f: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    let mut replay = read("r.json")["anomalies"].clone();
    replay.as_object_mut().unwrap().remove("aligned_requests");
    let report = read("rep.json")["workload"]["anomalies"].clone();
    (info["stats"]["anomalies"].clone(), replay, report)
}

fn assert_all_count(trace: &str, dir: &Path, want: Value) {
    let (info, replay, report) = counts(trace, dir);
    assert_eq!(info, want, "info on {trace}");
    assert_eq!(replay, want, "replay on {trace}");
    assert_eq!(report, want, "report on {trace}");
}

fn anomalies(failed: u64, unknown: u64, double: u64, inherited: u64, missed: u64) -> Value {
    json!({
        "failed_calls": failed,
        "unknown_frees": unknown,
        "double_frees": double,
        "inherited_frees": inherited,
        "missed_frees": missed,
    })
}

/// Every kind but inherited frees (a CSV import is no fork child), with the cases the tools used
/// to count differently: a failed realloc of an unknown address, `realloc(p, 0)` marked failed,
/// a double free, requests no allocator could satisfy.
const CRAFTED: &str = "\
op,id,old_id,size,align,failed,addr,old_addr
malloc,a,,100,,,0x1000,
malloc,b,,200,,,0x2000,
free,a,,,,,,
free,,,,,,,0x1000
free,,,,,,,0x9990
malloc,x,,64,,1,,
malloc,huge,,18446744073709551615,,,,
posix_memalign,al,,64,9223372036854775808,,,
malloc,c,,50,,,0x2000,
malloc,p,,40,,,0x3000,
realloc,,p,0,,1,,
malloc,q,,40,,,0x4000,
realloc,q2,q,500,,1,,
realloc,r,,30,,1,,0x7777
free,q,,,,,,
free,huge,,,,,,
";

#[test]
fn info_replay_and_report_count_the_same_anomalies_on_a_crafted_trace() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("w.csv"), CRAFTED).unwrap();
    ok(&allocscope(&["import", "w.csv", "-o", "w.atrace"], d));
    // Failed: x, huge (2^64-1 bytes), al (2^63 alignment), the realloc of q to 500, the realloc
    // of the unknown 0x7777 (also an unknown free, with 0x9990). realloc(p, 0) is a free.
    assert_all_count("w.atrace", d, anomalies(5, 2, 1, 0, 1));

    let text = ok(&allocscope(&["info", "w.atrace"], d));
    assert!(text.contains("failed     5 calls"), "{text}");
    assert!(
        text.contains(
            "anomalies  4 (unknown frees 2, double frees 1, live address returned again 1)"
        ),
        "{text}"
    );
    assert!(!text.contains("fork child"), "{text}");
    let o = allocscope(&["replay", "w.atrace", "--strict", "-q"], d);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("strict mode: double free at event 3"),
        "{}",
        stderr(&o)
    );
}

fn event(seq: u64, op: Op, addr: u64, old_addr: u64, size: u64) -> Event {
    let mut e = Event::new(op);
    e.seq = seq;
    e.ts_ns = 1000 + seq * 10;
    e.addr = addr;
    e.old_addr = old_addr;
    e.size = size;
    e
}

/// Writes a real trace file of a fork child (pid 101 forked from 100).
fn write_fork_child(path: &Path, events: &[Event]) {
    let header = Header {
        recorder: "cli_anomalies test".into(),
        pid: 101,
        ppid: 100,
        forked_from: Some(100),
        ..Header::default()
    };
    let mut w = TraceWriter::create(path, &header).unwrap();
    for e in events {
        w.push(e).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn a_fork_childs_frees_of_inherited_blocks_are_counted_apart_in_every_tool() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut failed = event(8, Op::Malloc, 0, 0, 1 << 20);
    failed.failed = true;
    let mut realloc_zero = event(7, Op::Realloc, 0, 0x5000, 0);
    realloc_zero.failed = true;
    let events = [
        event(0, Op::Free, 0, 0x7000_0010, 0),          // inherited
        event(1, Op::Realloc, 0x5000, 0x7000_0020, 64), // inherited, moved into the child's heap
        event(2, Op::Malloc, 0x6000, 0, 32),
        event(3, Op::Free, 0, 0x6000, 0),
        event(4, Op::Free, 0, 0x6000, 0), // double free
        event(5, Op::Malloc, 0x6100, 0, 16),
        event(6, Op::Malloc, 0x6100, 0, 16), // missed free
        realloc_zero,                        // a free of 0x5000, not a failed call
        failed,
        event(9, Op::Free, 0, 0x7000_0030, 0), // inherited
    ];
    write_fork_child(&d.join("child.atrace"), &events);
    assert_all_count("child.atrace", d, anomalies(1, 0, 1, 3, 1));
    let text = ok(&allocscope(&["info", "child.atrace"], d));
    assert!(text.contains("a fork child of pid 100"), "{text}");
    assert!(
        text.contains("inherited  3 frees of blocks allocated before the fork"),
        "{text}"
    );

    // A correct fork child's trace, with realloc(p, 0) marked failed as old recorders did:
    // --strict accepts it (neither is an error), and replays the child's own objects.
    // Renumbered without gaps: a trace whose seqs have holes is missing events.
    let correct: Vec<Event> = [0, 1, 2, 3, 7]
        .iter()
        .map(|&i| events[i])
        .chain([event(10, Op::Malloc, 0x8000, 0, 48)])
        .enumerate()
        .map(|(n, mut e)| {
            e.seq = n as u64;
            e
        })
        .collect();
    write_fork_child(&d.join("ok.atrace"), &correct);
    assert_all_count("ok.atrace", d, anomalies(0, 0, 0, 2, 0));
    let o = allocscope(
        &[
            "replay",
            "ok.atrace",
            "--strict",
            "--free-policy",
            "immediate",
            "--json",
            "s.json",
            "-q",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("s.json")).unwrap()).unwrap();
    let m = &r["go_memstats"];
    // Three objects of the child's own heap allocated (the realloc's new block, 0x6000, 0x8000),
    // two of them freed; the inherited blocks are not the model's.
    assert_eq!(
        (m["mallocs"].as_u64(), m["frees"].as_u64()),
        (Some(3), Some(2))
    );
}

#[test]
fn the_bundled_samples_count_the_same_in_every_tool() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("traces/samples");
    for (name, want) in [
        // Two failed calls: malloc(2^64-1) and posix_memalign with alignment 3.
        ("v1-golden.atrace", anomalies(2, 0, 0, 0, 0)),
        // The same events in a fork child's trace: every free is of a block it allocated.
        ("v2-golden.atrace", anomalies(2, 0, 0, 0, 0)),
        ("python-dict.atrace", anomalies(0, 0, 0, 0, 0)),
    ] {
        let path = samples.join(name);
        assert_all_count(path.to_str().unwrap(), d, want);
    }
    let text = ok(&allocscope(
        &["info", samples.join("v2-golden.atrace").to_str().unwrap()],
        d,
    ));
    assert!(text.contains("a fork child of pid"), "{text}");
}
