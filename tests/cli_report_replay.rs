//! `report` with a replay of the same trace: replayed latency beside recorded, free slots in
//! in-use spans, and the heap over the replay from `replay --timeline`.

mod common;
use common::allocscope;

#[test]
fn report_shows_the_replay_beside_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/traces/samples/python-dict.atrace"
    );
    let o = allocscope(
        &[
            "replay",
            sample,
            "--allocator",
            "go,system",
            "--json",
            "r.json",
            "--timeline",
            "tl.csv",
            "--timeline-every",
            "20000",
            "-q",
        ],
        d,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = allocscope(
        &[
            "report",
            sample,
            "--replay",
            "r.json",
            "--replay-timeline",
            "tl.csv",
            "-o",
            "out",
        ],
        d,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("Replayed latency"), "{text}");
    assert!(
        text.contains("go malloc") && text.contains("system malloc"),
        "{text}"
    );
    assert!(text.contains("free slots in in-use spans"), "{text}");
    // Recorded latencies above 2 µs are kept (they were once clamped there).
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("out/report.json")).unwrap()).unwrap();
    assert!(report["metrics"]["recorded_max_ns"].as_f64().unwrap() > 2_100.0);
    assert!(report["metrics"]["free_slot_bytes"].as_f64().is_some());
    let svg = std::fs::read_to_string(d.join("out/replay_timeline.svg")).unwrap();
    assert!(svg.contains("HeapInuse") && svg.contains("GC cycle"));
    let html = std::fs::read_to_string(d.join("out/index.html")).unwrap();
    assert!(
        html.contains("Heap over the replay") && html.contains("Recorded and replayed latency")
    );
}
