//! `allocscope replay` as a measurement: allocators side by side, perf counters (software ones
//! counted, hardware ones "not supported" on machines without a PMU), latency outputs, threads.

use std::fmt::Write as _;
use std::process::Command;

fn allocscope(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_allocscope"))
        .args(args)
        .output()
        .expect("run allocscope")
}

/// 400 objects of 64 KiB (fresh memory for every allocator), some calloc'd and realloc'd,
/// half freed.
fn fresh_memory_csv() -> String {
    let mut s = String::from("op,id,size,old_id\n");
    for i in 0..400 {
        let op = if i % 4 == 1 { "calloc" } else { "malloc" };
        writeln!(s, "{op},o{i},65536,").unwrap();
        if i % 8 == 3 {
            writeln!(s, "realloc,r{i},70000,o{i}").unwrap();
        }
    }
    for i in (0..400).step_by(2) {
        if i % 8 != 3 {
            writeln!(s, "free,o{i},0,").unwrap();
        }
    }
    s
}

#[test]
fn four_allocators_counters_and_latency_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("w.csv");
    std::fs::write(&csv, fresh_memory_csv()).unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let out = allocscope(&[
        "replay",
        &csv.display().to_string(),
        "--allocator",
        "go,system,jemalloc,mimalloc",
        "--touch",
        "whole",
        "--repeat",
        "2",
        "--json",
        &p("r.json"),
        "--hlog",
        &p("hlog"),
        "--latency-csv",
        &p("lat.csv"),
        "--timeline",
        &p("tl.csv"),
        "--timeline-every",
        "50",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("mimalloc") && text.contains("p99 ns"),
        "{text}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("r.json")).unwrap()).unwrap();
    let allocs = r["measurements"]["allocators"].as_array().unwrap();
    let names: Vec<&str> = allocs
        .iter()
        .map(|a| a["allocator"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["go", "system", "jemalloc", "mimalloc"]);
    for a in allocs {
        let name = a["allocator"].as_str().unwrap();
        assert_eq!(a["runs"], 2, "{name}");
        assert_eq!(a["latency"]["op"]["malloc"]["count"], 2 * 300, "{name}");
        assert_eq!(a["latency"]["op"]["calloc"]["count"], 2 * 100, "{name}");
        assert_eq!(a["latency"]["op"]["realloc"]["count"], 2 * 50, "{name}");
        assert!(a["time_ns"]["median"].as_f64().unwrap() > 0.0);
        let total = &a["counters"]["total"];
        assert!(total["task_clock_ns"].as_u64().unwrap() > 0, "{name}");
        for hw in ["cycles", "instructions", "dtlb_load_misses"] {
            let v = &total[hw];
            assert!(
                v.is_u64() || v.as_str().unwrap().starts_with("not supported"),
                "{name} {hw}: {v}"
            );
        }
        assert!(a["peak_rss_bytes"].as_u64().unwrap() > 4 << 20, "{name}");
    }
    // The Go model: fresh arena memory touched whole faults pages in (counters from the median
    // run, each run has a fresh arena), per path latency, GC phase counters reported.
    let go = &allocs[0];
    assert!(go["counters"]["total"]["page_faults"].as_u64().unwrap() > 100);
    assert!(go["counters"]["gc"].is_object());
    assert!(go["latency"]["path"]["large"]["count"].as_u64().unwrap() > 0);
    for k in [
        "p50_ns",
        "p99_ns",
        "ns_per_op",
        "peak_rss",
        "system_ns_per_op",
    ] {
        assert!(r["metrics"][k].is_number(), "metric {k}");
    }
    assert_eq!(r["go_memstats"]["mallocs"], 450);
    for f in [
        "hlog/go.hlog",
        "hlog/system.hlog",
        "hlog/mimalloc.hlog",
        "lat.csv",
        "tl.csv",
    ] {
        assert!(std::fs::metadata(p(f)).unwrap().len() > 100, "{f}");
    }
    let lat = std::fs::read_to_string(p("lat.csv")).unwrap();
    assert!(lat.starts_with("allocator,group,name,count"));
    assert!(lat.contains("go,path,large,") && lat.contains("jemalloc,size,large,"));
    let tl = std::fs::read_to_string(p("tl.csv")).unwrap();
    assert!(tl.lines().any(|l| l.starts_with("go,50,")), "{tl}");
}

#[test]
fn bad_measurement_flags_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("w.csv");
    std::fs::write(&csv, "op,id,size\nmalloc,a,10\n").unwrap();
    for (flag, val) in [
        ("--allocator", "tcmalloc"),
        ("--touch", "some"),
        ("--pin", "4096"),
    ] {
        let out = allocscope(&["replay", &csv.display().to_string(), flag, val]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
