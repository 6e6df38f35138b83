//! Fidelity of imported Go traces against the run they came from: real Go programs
//! (tests/go/allocprog: a JSON encoder, a map-heavy program, goroutines on a loopback HTTP
//! server) built with the toolchain CI installs, traced with GODEBUG=traceallocfree=1, imported
//! with `--go-frees cycle-start` and replayed with the defaults an imported trace gets (its
//! pointer kinds, GOMAXPROCS, Go 1.26+'s span layout), under the recorded GOGC (100).
//!
//! Held to what the program's runtime/metrics counted over the traced window:
//! - per size class, the replay's mallocs less the snapshot's objects (allocated before the
//!   window) equal the runtime's, within its own few allocations at the window's edges;
//! - every allocation that took Go's tiny path (16-byte blocks taken plus tiny allocations)
//!   within 1%, and tiny allocations alone within the bound measured per workload below (the
//!   trace gives the runtime's packing, not the objects' sizes; a replay's GC cycles, where Go
//!   drops each P's block, come where the model puts them);
//! - the first GC cycle starts with the heap within 10% of the trace's own GC event.
//!
//! GC cycles under the recorded GOGC are within one cycle of the trace for each program. (Frees
//! moved to their cycle's start made the count jump with the model's trigger: a model cycle a few
//! bytes early found a whole cycle's garbage alive, its next goal grew, and the JSON encoder's
//! replay ran 6 cycles of 9, the HTTP server's 5 to 7 of 7. Spread over the interval where the
//! objects died, they give 8–9 of 8–9 and 7 of 7; `gotrace/src/out.rs`.) The model's heap at
//! each cycle's start still runs 10–25% above the trace's for the JSON encoder: printed, not
//! held (issue #12).

mod common;

use std::path::Path;

use common::{allocscope, go, ok};
use serde_json::Value;

fn json_of(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The side file's records.
fn side(trace: &Path) -> Vec<Value> {
    std::fs::read_to_string(format!("{}.go.jsonl", trace.display()))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

struct Bounds {
    /// Tiny allocations: the most the replay may differ from the runtime, as a share.
    tiny_share: f64,
    /// GC cycles: the most the replay may differ from the trace.
    cycles: u64,
}

fn check(mode: &str, n: u32, bounds: Bounds) {
    let Some(bin) = go::allocprog() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let real = go::run(&bin, mode, n, &d.join("go.out"), &[go::ALLOC_FREE]);
    ok(&allocscope(
        &[
            "import",
            "go.out",
            "-o",
            "t.atrace",
            "--go-frees",
            "cycle-start",
        ],
        d,
    ));
    ok(&allocscope(
        &[
            "replay",
            "t.atrace",
            "--no-timing",
            "--json",
            "r.json",
            "-q",
        ],
        d,
    ));
    let replay = json_of(&d.join("r.json"));
    let records = side(&d.join("t.atrace"));
    let summary = records.last().unwrap();
    assert_eq!(summary["k"], "summary");
    let gm = &replay["go_memstats"];

    // Snapshot objects per class size.
    let sizes: Vec<u64> = gm["by_size"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["size"].as_u64().unwrap())
        .collect();
    let mut snapshot = vec![0i64; sizes.len() + 1];
    for pair in summary["snapshot_by_class"].as_array().unwrap() {
        let class = (pair[0].as_u64().unwrap() >> 1) as usize;
        snapshot[class] += pair[1].as_i64().unwrap();
    }
    let mut lines = vec![format!(
        "{mode}: class size: replay (less snapshot) vs runtime"
    )];
    let mut tiny_path_replay = gm["tiny_allocs"].as_i64().unwrap();
    let mut tiny_path_real = real["tiny"].as_i64().unwrap();
    let mut compared = 0;
    for b in real["by_size"].as_array().unwrap() {
        let hi = b["Hi"].as_f64().unwrap();
        if hi < 0.0 {
            continue; // large objects share one bucket
        }
        let size = hi as u64 - 1;
        let class = sizes.iter().position(|&s| s == size).expect("a class size") + 1;
        let ours = gm["by_size"][class - 1]["mallocs"].as_i64().unwrap() - snapshot[class];
        let theirs = b["Count"].as_i64().unwrap();
        lines.push(format!("  {size:>6}: {ours:>8} vs {theirs:>8}"));
        if size == 16 {
            tiny_path_replay += ours;
            tiny_path_real += theirs;
            continue;
        }
        assert!(
            (ours - theirs).abs() <= 8 + theirs / 100,
            "{mode}: class of {size} bytes: replay {ours}, runtime {theirs}\n{}",
            lines.join("\n")
        );
        compared += 1;
    }
    assert!(compared >= 8, "{mode}: {}", lines.join("\n"));
    let (tiny_replay, tiny_real) = (
        gm["tiny_allocs"].as_f64().unwrap(),
        real["tiny"].as_f64().unwrap(),
    );
    let gc_begins: Vec<u64> = records
        .iter()
        .filter(|r| r["k"] == "gc" && r["op"] == "begin")
        .map(|r| r["heap_live"].as_u64().unwrap())
        .collect();
    let replay_cycles: Vec<u64> = replay["model"]["gc_cycles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["heap_live_before"].as_u64().unwrap())
        .collect();
    lines.push(format!(
        "  tiny allocs {tiny_replay} vs {tiny_real}; tiny path {tiny_path_replay} vs {tiny_path_real}"
    ));
    lines.push(format!(
        "  GC cycles: replay {} vs trace {} (runtime {}); heap at each start: replay {replay_cycles:?} vs trace {gc_begins:?}",
        replay_cycles.len(),
        gc_begins.len(),
        real["gcs"]
    ));
    let report = lines.join("\n");
    eprintln!("{report}");
    assert!(
        (tiny_path_replay - tiny_path_real).abs() <= 8 + tiny_path_real / 100,
        "{report}"
    );
    assert!(
        (tiny_replay - tiny_real).abs() <= 8.0 + tiny_real * bounds.tiny_share,
        "{report}"
    );
    // The runtime counts cycles completed in the window; the trace has the begin of every cycle
    // that started in it: one still running when the window closed (or already running when it
    // opened) makes them differ by one.
    assert!(
        (gc_begins.len() as u64).abs_diff(real["gcs"].as_u64().unwrap()) <= 1,
        "{report}"
    );
    assert!(
        (replay_cycles.len() as u64).abs_diff(gc_begins.len() as u64) <= bounds.cycles,
        "{report}"
    );
    if let (Some(&ours), Some(&theirs)) = (replay_cycles.first(), gc_begins.first()) {
        assert!(ours.abs_diff(theirs) * 10 <= theirs, "{report}");
    }
}

#[test]
fn json_encoder() {
    check(
        "json",
        20000,
        Bounds {
            tiny_share: 0.15,
            cycles: 1,
        },
    );
}

#[test]
fn map_heavy() {
    check(
        "maps",
        50000,
        Bounds {
            tiny_share: 0.02,
            cycles: 1,
        },
    );
}

#[test]
fn loopback_http_server() {
    check(
        "http",
        2000,
        Bounds {
            tiny_share: 0.05,
            cycles: 1,
        },
    );
}
