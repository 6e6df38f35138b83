//! ns per allocation of the Go model on simple workloads, and (when a Go toolchain is found,
//! as in tests/fidelity.rs) the real Go runtime doing the same work with the go-oracle,
//! printed side by side. Run: `cargo bench -p replayer --bench model`.
//!
//! Workloads (CSV, replayed through the same op-stream engine `allocscope replay` uses):
//! - `alloc_free_64`: malloc(64) then free, repeatedly (the fast path and, under `gc`, sweeping);
//! - `tiny_8`: 8-byte pointer-free objects, a ring of 1000 live;
//! - `churn_mixed`: 1..2000-byte objects (a few large), a ring of 10 000 live, GC on.
//!
//! Each timed run starts on a warm heap prepared as the go-oracle prepares its repeats: one run
//! of the workload, then every object it left live is freed and a GC cycle runs (the oracle
//! clears its slot table and calls `runtime.GC()`). Configurations: `gc` (the default free
//! policy, replayed as `engine::run` does: one byte written per 4 KiB page of each new object),
//! `gc_no_touch` (nothing written into objects, as the oracle's program: only the allocator's own
//! zeroing), `immediate`, `gc_addresses_only` (no real memory at all).
//!
//! Go side, three figures per workload: `GOGC=off`, the oracle's median of 7 runs in one
//! process; `GOGC=100`, the median of 7 processes of one run each (GC on throughout, but each a
//! first run on a fresh heap); `GOGC=100 -repeat 7`, the oracle's own median, whose 6 repeats
//! after the first run with the GC off (go-oracle sets GC percent -1 before its repeat loop).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use replayer::config::{Config, FreePolicy};
use replayer::engine::{compile, run, Compiled, Stepper, Touch};
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

/// A workload: its name, its CSV, and the ids it leaves live at the end.
struct Workload {
    name: &'static str,
    csv: String,
    /// Objects still live after the last op (`o{id}` for the last `ring` ids).
    live_at_end: std::ops::Range<u64>,
}

fn workload(name: &'static str, ring: usize, size: impl Fn(u64) -> u64) -> Workload {
    let n = OPS / 2;
    Workload {
        name,
        csv: ring_csv(n, ring, size),
        live_at_end: n.saturating_sub(ring as u64)..n,
    }
}

fn workloads() -> Vec<Workload> {
    vec![
        workload("alloc_free_64", 1, |_| 64),
        workload("tiny_8", 1000, |_| 8),
        workload("churn_mixed", 10_000, |i| {
            let x = i.wrapping_mul(0x9E3779B97F4A7C15) >> 40;
            if x % 100 == 0 {
                40_000
            } else {
                1 + x % 2000
            }
        }),
    ]
}

/// The workload followed by frees of everything it left live (the warm-up run).
fn drained_csv(w: &Workload) -> String {
    let mut csv = w.csv.clone();
    for id in w.live_at_end.clone() {
        csv.push_str(&format!("free,o{id},0,1\n"));
    }
    csv
}

fn compiled(csv: &str, cfg: &Config) -> Compiled {
    let events = replayer::csv_events(csv.as_bytes()).unwrap();
    let heap = Heap::new(cfg).unwrap();
    compile(
        events.into_iter().map(Ok),
        None,
        cfg,
        heap.mheap().classes(),
        false,
    )
    .unwrap()
}

fn configs() -> Vec<(&'static str, Config)> {
    vec![
        ("gc", Config::default()),
        ("gc_no_touch", Config::default()),
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

/// A heap after one run of the workload with everything it left freed and collected (see the
/// module comment).
fn warm_heap(cfg: &Config, drained: &Compiled) -> Heap {
    let mut heap = Heap::new(cfg).unwrap();
    run(&mut heap, drained).unwrap();
    if cfg.free_policy == FreePolicy::Gc {
        heap.gc_cycle(0);
    }
    heap
}

/// The timed part: the op loop, with `touch` as the replay's touch policy.
fn replay(heap: &mut Heap, ops: &Compiled, touch: Touch) {
    let mut st = Stepper::new(ops.slots, touch);
    for (i, op) in ops.ops.iter().enumerate() {
        st.step(heap, i, op, ops.time_of(i)).unwrap();
    }
}

fn bench_model(c: &mut Criterion) {
    let mut g = c.benchmark_group("model");
    g.measurement_time(Duration::from_secs(4)).sample_size(20);
    for w in workloads() {
        let drained_text = drained_csv(&w);
        for (cname, cfg) in configs() {
            let ops = compiled(&w.csv, &cfg);
            let drained = compiled(&drained_text, &cfg);
            // `run` touches one byte per page; `gc_no_touch` writes nothing.
            let touch = if cname == "gc_no_touch" {
                Touch::None
            } else {
                Touch::Pages
            };
            g.throughput(Throughput::Elements(ops.ops.len() as u64));
            g.bench_with_input(BenchmarkId::new(w.name, cname), &ops, |b, ops| {
                b.iter_batched(
                    || warm_heap(&cfg, &drained),
                    |mut heap| {
                        replay(&mut heap, ops, touch);
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
    println!("\nGo runtime, same workloads (go-oracle, GOMAXPROCS=1):");
    let oracle = |path: &Path, gogc: &str, repeat: &str| -> serde_json::Value {
        let o = Command::new(&bin)
            .args(["-gogc", gogc, "-repeat", repeat])
            .arg(path)
            .env("GOMAXPROCS", "1")
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).unwrap()
    };
    for w in workloads() {
        let path = dir.path().join(format!("{}.csv", w.name));
        std::fs::write(&path, &w.csv).unwrap();
        let v = oracle(&path, "off", "7");
        println!(
            "go/{}/GOGC=off: {:.1} ns/op (median of 7 runs; {} ops, {})",
            w.name,
            v["ns_per_op"].as_f64().unwrap(),
            v["ops"],
            v["go_version"].as_str().unwrap_or("?")
        );
        // GC on in every timed run: one run per process, median over 7 processes.
        let mut on: Vec<f64> = (0..7)
            .map(|_| oracle(&path, "100", "1")["ns_per_op"].as_f64().unwrap())
            .collect();
        on.sort_by(f64::total_cmp);
        println!(
            "go/{}/GOGC=100: {:.1} ns/op (median of 7 processes x 1 run, GC on; range {:.1}..{:.1})",
            w.name, on[3], on[0], on[6]
        );
        let v = oracle(&path, "100", "7");
        println!(
            "go/{}/GOGC=100 -repeat 7: {:.1} ns/op (first run GC on, the 6 repeats GC off)",
            w.name,
            v["ns_per_op"].as_f64().unwrap()
        );
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
