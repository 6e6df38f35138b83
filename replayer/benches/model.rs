//! ns per allocation of the Go model on simple workloads, and (when a Go toolchain is found,
//! as in tests/fidelity.rs) the real Go runtime doing the same work with the go-oracle,
//! printed side by side. Run: `cargo bench -p replayer --bench model`.
//!
//! Workloads (CSV, replayed through the same op-stream engine `allocscope replay` uses):
//! - `alloc_free_64`: malloc(64) then free, repeatedly (the fast path and, under `gc`, sweeping);
//! - `tiny_8`: 8-byte pointer-free objects, a ring of 1000 live;
//! - `churn_mixed`: 1..2000-byte objects (a few large), a ring of 10 000 live, GC on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use replayer::config::{Config, FreePolicy};
use replayer::engine::{compile, run, Compiled};
use replayer::malloc::Heap;

const OPS: u64 = 200_000;

fn ring_csv(n: u64, ring: usize, size: impl Fn(u64) -> u64) -> String {
    let mut csv = String::from("op,id,size,noscan\n");
    for i in 0..n {
        if i as usize >= ring {
            csv.push_str(&format!("free,o{},0,1\n", i - ring as u64));
        }
        csv.push_str(&format!("malloc,o{i},{},1\n", size(i)));
    }
    csv
}

fn workloads() -> Vec<(&'static str, String)> {
    vec![
        ("alloc_free_64", ring_csv(OPS / 2, 1, |_| 64)),
        ("tiny_8", ring_csv(OPS / 2, 1000, |_| 8)),
        (
            "churn_mixed",
            ring_csv(OPS / 2, 10_000, |i| {
                let x = i.wrapping_mul(0x9E3779B97F4A7C15) >> 40;
                if x % 100 == 0 {
                    40_000
                } else {
                    1 + x % 2000
                }
            }),
        ),
    ]
}

fn compiled(csv: &str, cfg: &Config) -> Compiled {
    let events = replayer::csv_events(csv.as_bytes()).unwrap();
    let heap = Heap::new(cfg).unwrap();
    compile(events.into_iter().map(Ok), cfg, &heap.mheap.classes, false).unwrap()
}

fn configs() -> Vec<(&'static str, Config)> {
    vec![
        ("gc", Config::default()),
        (
            "immediate",
            Config {
                free_policy: FreePolicy::Immediate,
                ..Config::default()
            },
        ),
        (
            "gc_addresses_only",
            Config {
                touch_memory: false,
                ..Config::default()
            },
        ),
    ]
}

fn bench_model(c: &mut Criterion) {
    let mut g = c.benchmark_group("model");
    g.measurement_time(Duration::from_secs(4)).sample_size(20);
    for (name, csv) in workloads() {
        for (cname, cfg) in configs() {
            let ops = compiled(&csv, &cfg);
            g.throughput(Throughput::Elements(ops.ops.len() as u64));
            g.bench_with_input(BenchmarkId::new(name, cname), &ops, |b, ops| {
                // Measured on a warm heap (one run of the workload first), as the Go oracle's
                // median of repeats is: page faults of a fresh heap are not per-allocation cost.
                b.iter_batched(
                    || {
                        let mut heap = Heap::new(&cfg).unwrap();
                        run(&mut heap, ops).unwrap();
                        heap
                    },
                    |mut heap| {
                        run(&mut heap, ops).unwrap();
                        heap
                    },
                    criterion::BatchSize::LargeInput,
                )
            });
        }
    }
    g.finish();
}

fn find_go() -> Option<PathBuf> {
    if let Ok(g) = std::env::var("ALLOCSCOPE_GO") {
        return Some(PathBuf::from(g));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-go/bin/go");
    if venv.exists() {
        return Some(venv);
    }
    Command::new("go")
        .arg("version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "go".into())
}

/// The same workloads on the real Go runtime: median of 7 timed runs of the op loop.
fn go_side_by_side() {
    let Some(go) = find_go() else {
        eprintln!("(no Go toolchain: skipping the Go runtime timings)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("oracle");
    let st = Command::new(&go)
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("go-oracle"))
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .status()
        .unwrap();
    assert!(st.success(), "go build of the oracle failed");
    println!("\nGo runtime, same workloads (go-oracle, GOMAXPROCS=1, median of 7 runs):");
    for (name, csv) in workloads() {
        let path = dir.path().join(format!("{name}.csv"));
        std::fs::write(&path, &csv).unwrap();
        for gogc in ["off", "100"] {
            let o = Command::new(&bin)
                .args(["-gogc", gogc, "-repeat", "7"])
                .arg(&path)
                .env("GOMAXPROCS", "1")
                .output()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            println!(
                "go/{name}/GOGC={gogc}: {:.1} ns/op ({} ops, {})",
                v["ns_per_op"].as_f64().unwrap(),
                v["ops"],
                v["go_version"].as_str().unwrap_or("?")
            );
        }
    }
}

criterion_group!(benches, bench_model);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::args().any(|a| a == "--bench") {
        go_side_by_side();
    }
}
