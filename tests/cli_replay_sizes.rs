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
    let mut args = vec![
        "replay",
        "w.csv",
        "--allocator",
        "go,system,jemalloc,mimalloc",
        "--json",
        "r.json",
    ];
    args.extend_from_slice(extra);
    let out = allocscope_capped(&args, dir.path());
    let stdout = common::ok(&out);
    assert_eq!(common::stderr(&out), "", "nothing on stderr");
    let json = std::fs::read_to_string(dir.path().join("r.json")).unwrap();
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
    // The two-line CSV (with an address: the importer's synthesis is another fix).
    let (stdout, r) = replay_json("op,id,size,addr\nmalloc,a,18446744073709551615,4096\n", &[]);
    assert_eq!(r["anomalies"]["failed_calls"], 1);
    assert_eq!(r["model"]["refused_allocs"], 1);
    assert_eq!(r["go_memstats"]["mallocs"], 0);
    assert_eq!(r["go_memstats"]["heap_sys"], 0);
    for (allocator, failed) in failed_allocs(&r) {
        assert_eq!(failed, 1, "{allocator}");
    }
    assert!(stdout.contains("1 failed calls"), "{stdout}");
    assert!(
        stdout.contains("failed allocations (no allocator could satisfy them"),
        "{stdout}"
    );
}

#[test]
fn the_replay_goes_on_after_a_failed_call() {
    // A realloc to 1 PiB fails and releases the old object (the trace says it was released);
    // the calls around it are replayed as usual, threads or not.
    let csv = "op,id,size,addr,old_id\n\
               malloc,a,100,4096,\n\
               malloc,b,1000,8192,\n\
               realloc,c,1125899906842624,12288,a\n\
               malloc,d,300000,16384,\n\
               free,b,0,,\n\
               free,d,0,,\n";
    for threads in [&[][..], &["--threads"][..]] {
        let (_, r) = replay_json(csv, threads);
        assert_eq!(r["anomalies"]["failed_calls"], 1, "{threads:?}");
        assert_eq!(r["go_memstats"]["mallocs"], 3, "{threads:?}");
        assert_eq!(r["go_memstats"]["large"]["mallocs"], 1, "{threads:?}");
        for (allocator, failed) in failed_allocs(&r) {
            assert_eq!(failed, 1, "{allocator} {threads:?}");
        }
    }
}
