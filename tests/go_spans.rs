//! Span placement against the real runtime (issue 13, "the moonshot"): a real Go program
//! (tests/go/spanprog: objects of every size class with and without pointers, and large ones,
//! all kept) built with the toolchain CI installs, run with GOGC=off and
//! GODEBUG=traceallocfree=1, imported, replayed with `--gogc off --span-log`, and the model's
//! span allocations held against the runtime's (`export --format spans`): page (from the
//! lowest span), pages and span class, in order.
//!
//! The replay starts from the runtime's heap when tracing began (replayer/src/spanlog.rs). With
//! one P (GOMAXPROCS=1, as here) every span matched in 7 of 8 runs measured and 99.89% in the
//! other (tiny blocks packed differently); with several Ps the share swings from 1.5% to 100%
//! from run to run (replayer/FIDELITY.md, "Span placement", says why). The test holds 99% of
//! the runtime's span allocations matched in order (a longest common subsequence), and prints
//! the first rows that differ.

mod common;

use std::path::Path;

use common::{allocscope, go, ok, stderr};

/// `(op, page, npages, span_class)` rows of a span CSV (`n,event,op,page,npages,span_class`).
fn spans(path: &Path) -> Vec<(String, i64, u64, i32)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("n,event,op,page,npages,span_class"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 6, "{l}");
            (
                f[2].to_string(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
                f[5].parse().unwrap(),
            )
        })
        .collect()
}

/// Rows of one op, without it.
fn of_op(rows: &[(String, i64, u64, i32)], op: &str) -> Vec<(i64, u64, i32)> {
    rows.iter()
        .filter(|r| r.0 == op)
        .map(|r| (r.1, r.2, r.3))
        .collect()
}

/// Length of the longest common subsequence (two rows of the table: memory O(len)).
fn lcs<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[test]
fn the_models_spans_are_the_runtimes_with_gc_off() {
    let Some(bin) = go::spanprog() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = std::process::Command::new(&bin)
        .args(["100", "go.out"])
        .current_dir(d)
        .env("GOGC", "off")
        .env("GOMAXPROCS", "1")
        .env(go::ALLOC_FREE.0, go::ALLOC_FREE.1)
        .output()
        .unwrap();
    assert!(o.status.success(), "spanprog: {}", stderr(&o));
    ok(&allocscope(&["import", "go.out", "-o", "t.atrace"], d));
    ok(&allocscope(
        &["export", "t.atrace", "--format", "spans", "-o", "real.csv"],
        d,
    ));
    ok(&allocscope(
        &[
            "replay",
            "t.atrace",
            "--gogc",
            "off",
            "--span-log",
            "model.csv",
            "--no-timing",
            "-q",
        ],
        d,
    ));
    let real = spans(&d.join("real.csv"));
    let model = spans(&d.join("model.csv"));

    // The spans the runtime had when tracing began are where the model's replay starts.
    assert_eq!(of_op(&real, "exists"), of_op(&model, "exists"));
    // GC off: nothing is freed.
    assert!(of_op(&real, "free").is_empty() && of_op(&model, "free").is_empty());

    let (ra, ma) = (of_op(&real, "alloc"), of_op(&model, "alloc"));
    assert!(
        ra.len() > 3000,
        "the workload allocates spans: {}",
        ra.len()
    );
    let matched = lcs(&ra, &ma);
    let share = matched as f64 / ra.len() as f64;
    eprintln!(
        "span allocations: runtime {}, model {}, {matched} matched in order ({:.2}%)",
        ra.len(),
        ma.len(),
        100.0 * share
    );
    if let Some(i) = ra.iter().zip(&ma).position(|(r, m)| r != m) {
        eprintln!("first difference, alloc row {i} (page, pages, span class):");
        for k in i.saturating_sub(2)..(i + 5).min(ra.len().max(ma.len())) {
            eprintln!("  {k}: runtime {:?}, model {:?}", ra.get(k), ma.get(k));
        }
    }
    assert!(
        share >= 0.99 && ra.len().abs_diff(ma.len()) * 100 <= ra.len(),
        "{matched} of {} span allocations matched ({:.2}%; the model made {})",
        ra.len(),
        100.0 * share,
        ma.len()
    );
}

#[test]
fn span_log_outside_go_traces_and_its_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("w.csv"),
        "op,id,size\nmalloc,a,100\nmalloc,b,40000\nfree,b,0\nmalloc,c,100\n",
    )
    .unwrap();
    // A CSV workload: the model's own spans, from an empty heap; `immediate` frees the large
    // object's span at once.
    ok(&allocscope(
        &[
            "replay",
            "w.csv",
            "--free-policy",
            "immediate",
            "--span-log",
            "s.csv",
            "-q",
            "--no-timing",
        ],
        d,
    ));
    let rows = spans(&d.join("s.csv"));
    let (large_pages, large_noscan) = (40000u64.div_ceil(8192), 1);
    assert_eq!(
        rows,
        vec![
            ("alloc".to_string(), 0, 1, 19), // size class 9 (112 B) << 1 | noscan
            ("alloc".to_string(), 1, large_pages, large_noscan),
            ("free".to_string(), 1, large_pages, large_noscan),
        ]
    );
    let text = std::fs::read_to_string(d.join("s.csv")).unwrap();
    assert!(
        text.lines().nth(3).unwrap().starts_with("2,2,free,"),
        "{text}"
    );

    // Other allocators have no spans; the trace is not an output.
    for (args, says) in [
        (
            vec!["--allocator", "go,system", "--span-log", "x.csv"],
            "--allocator system",
        ),
        (vec!["--span-log", "w.csv"], "w.csv"),
    ] {
        let mut all = vec!["replay", "w.csv", "-q"];
        all.extend(args);
        let o = allocscope(&all, d);
        assert!(!o.status.success(), "{all:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{err}");
    }
    assert!(!d.join("x.csv").exists());
}
