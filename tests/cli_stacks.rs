//! Call stacks through the real binary: `record` real programs (built -O2
//! -fomit-frame-pointer), `export --format folded` with each weight (checked against `info`'s
//! figures and drawn by inferno), `export --format pprof` read by `go tool pprof`, python3's
//! stacks against heaptrack's on the same program, separate debug files (`--debug-dir`,
//! build-ids that differ) and the symbol cache.
//!
//! Every run gets its own XDG_CACHE_HOME: the tests never read or write the user's cache.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use common::{allocscope_own_cache as run, build_c as build};

/// Records stacks.c (plugin loaded, settled, never closed) into `dir/s.atrace`; returns the
/// program's output.
fn record_stacks(dir: &Path) -> String {
    let plugin = build(
        "cc",
        "stacks_plugin.c",
        dir,
        "libplugin.so",
        &["-fPIC", "-shared"],
    );
    build("cc", "stacks.c", dir, "stacks", &["-ldl"]);
    let plugin = plugin.to_str().unwrap();
    common::ok(&run(
        dir,
        &[
            "record", "-o", "s.atrace", "--", "./stacks", plugin, "settle",
        ],
    ))
}

/// Folded lines (frames, weight) of `text`; panics on a line that is not `FRAMES N`.
fn parse_folded(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .map(|l| {
            let (frames, n) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            (
                frames.to_string(),
                n.parse().unwrap_or_else(|_| panic!("{l:?}")),
            )
        })
        .collect()
}

/// `export --format folded --weight W` of `trace`, cut to start at `main`, summed.
fn folded_from_main(dir: &Path, trace: &str, weight: &str) -> BTreeMap<String, u64> {
    let out = common::ok(&run(
        dir,
        &["export", trace, "--format", "folded", "--weight", weight],
    ));
    let mut m = BTreeMap::new();
    for (line, n) in parse_folded(&out) {
        let cut = match line.find(";main;") {
            Some(i) => line[i + 1..].to_string(),
            None => line,
        };
        *m.entry(cut).or_default() += n;
    }
    m
}

/// The sum of the weights of `lines`.
fn total(lines: &BTreeMap<String, u64>) -> u64 {
    lines.values().sum()
}

/// Weights summed by the last frame of each line.
fn by_leaf(lines: &[(String, u64)]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (l, n) in lines {
        *m.entry(l.rsplit(';').next().unwrap().to_string())
            .or_default() += n;
    }
    m
}

fn info_json(dir: &Path, trace: &str) -> serde_json::Value {
    serde_json::from_str(&common::ok(&run(dir, &["info", "--json", trace]))).unwrap()
}

#[test]
fn folded_export_gives_exact_chains_and_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let printed = record_stacks(d);
    let comparisons: u64 = printed
        .lines()
        .find_map(|l| l.strip_prefix("comparisons "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{printed}"));

    let allocs = folded_from_main(d, "s.atrace", "allocs");
    let get = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    assert_eq!(
        get(&allocs, "main;run_plugin;plugin_entry;plugin_leaf"),
        7,
        "{allocs:#?}"
    );
    assert_eq!(get(&allocs, "main;build_list;make_node"), 5);
    assert_eq!(get(&allocs, "main;grow"), 3);
    let cmp: u64 = allocs
        .iter()
        .filter(|(l, _)| l.starts_with("main;sort_things;") && l.ends_with(";cmp_alloc"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(cmp, comparisons, "{allocs:#?}");

    let bytes = folded_from_main(d, "s.atrace", "bytes");
    assert_eq!(
        get(&bytes, "main;run_plugin;plugin_entry;plugin_leaf"),
        7 * 32
    );
    assert_eq!(get(&bytes, "main;build_list;make_node"), 5 * 24);
    assert_eq!(get(&bytes, "main;grow"), 1000 + 2000 + 3000);
    // Still live at the end: the 5 nodes and the grown block; the plugin's blocks and the
    // comparator's were freed.
    let leaked = folded_from_main(d, "s.atrace", "leaked");
    assert_eq!(get(&leaked, "main;build_list;make_node"), 5 * 24);
    assert_eq!(get(&leaked, "main;grow"), 3000);
    assert_eq!(get(&leaked, "main;run_plugin;plugin_entry;plugin_leaf"), 0);
    let peak = folded_from_main(d, "s.atrace", "peak");

    // The weights add up to what `info` counts over the same trace.
    let info = info_json(d, "s.atrace");
    let st = &info["stats"];
    let stacks = &info["stacks"];
    assert_eq!(
        total(&allocs),
        stacks["allocations_with_stack"].as_u64().unwrap()
            + stacks["allocations_without_stack"].as_u64().unwrap()
    );
    assert_eq!(total(&bytes), st["total_requested_bytes"].as_u64().unwrap());
    assert_eq!(
        total(&leaked),
        st["live_requested_bytes_at_end"].as_u64().unwrap()
    );
    assert_eq!(
        total(&peak),
        st["peak_live_requested_bytes"].as_u64().unwrap()
    );

    // inferno reads it: every line becomes frames of a flame graph with the right counts.
    let text = common::ok(&run(d, &["export", "s.atrace", "--format", "folded"]));
    let mut opts = inferno::flamegraph::Options::default();
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut opts, text.lines(), &mut svg).unwrap();
    let svg = String::from_utf8(svg).unwrap();
    assert!(
        svg.contains("<title>plugin_leaf (7 samples"),
        "no plugin_leaf"
    );
    assert!(svg.contains("<title>grow (3 samples"), "no grow");
    let all = format!("<title>all ({} samples", thousands(total(&allocs)));
    assert!(svg.contains(&all), "no {all}");
}

/// `n` with commas between thousands, as inferno prints counts.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn pprof_export_reads_in_go_tool_pprof_with_the_folded_figures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    record_stacks(d);
    let r = run(
        d,
        &[
            "export",
            "s.atrace",
            "--format",
            "pprof",
            "-o",
            "heap.pb.gz",
        ],
    );
    common::ok(&r);
    assert!(
        std::fs::read(d.join("heap.pb.gz"))
            .unwrap()
            .starts_with(&[0x1f, 0x8b]),
        "gzip"
    );
    for (sample, weight) in [
        ("alloc_space", "bytes"),
        ("alloc_objects", "allocs"),
        ("inuse_space", "leaked"),
    ] {
        let text = common::ok(&run(
            d,
            &[
                "export", "s.atrace", "--format", "folded", "--weight", weight,
            ],
        ));
        let folded = by_leaf(&parse_folded(&text));
        let top = common::pprof_top(d, "heap.pb.gz", sample);
        assert_eq!(
            top, folded,
            "{sample} (pprof) against --weight {weight} (folded)"
        );
    }
}

#[test]
fn weight_is_for_folded_only() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        dir.path(),
        &["export", "x.atrace", "--format", "csv", "--weight", "bytes"],
    );
    assert_eq!(r.status.code(), Some(2));
    assert!(common::stderr(&r).contains("--weight applies to --format folded"));
}

/// The real python3 executable (not a pyenv shim, which heaptrack would trace instead).
fn python() -> String {
    let o = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .expect("python3");
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// heaptrack_print's "MOST CALLS TO ALLOCATION FUNCTIONS": (function, calls), first `n`.
fn heaptrack_top(report: &str, n: usize) -> Vec<(String, u64)> {
    let section = report
        .split("MOST CALLS TO ALLOCATION FUNCTIONS")
        .nth(1)
        .unwrap_or_else(|| panic!("{report}"));
    let mut out = Vec::new();
    let mut lines = section.lines();
    while let Some(l) = lines.next() {
        if !l.trim().is_empty() && l.chars().all(|c| c.is_ascii_uppercase() || c == ' ') {
            break; // the next section ("PEAK MEMORY CONSUMERS")
        }
        if let Some((calls, rest)) = l.split_once(" calls to allocation functions with ") {
            assert!(rest.ends_with("from"), "{l}");
            let f = lines.next().unwrap().trim().to_string();
            out.push((f, calls.parse().unwrap()));
            if out.len() == n {
                break;
            }
        }
    }
    out
}

#[test]
fn python_stacks_reach_libpython_and_agree_with_heaptrack() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("work.py"),
        "d = {}\nfor i in range(30000):\n    d[str(i)] = [i] * 3\nprint(len(d))\n",
    )
    .unwrap();
    let py = python();
    let env = [("PYTHONMALLOC", "malloc"), ("PYTHONHASHSEED", "0")];
    let rec = Command::new(env!("CARGO_BIN_EXE_allocscope"))
        .args(["record", "-o", "py.atrace", "--", &py, "work.py"])
        .current_dir(d)
        .envs(env)
        .output()
        .unwrap();
    assert_eq!(common::ok(&rec).trim(), "30000");
    let ht = Command::new("heaptrack")
        .args(["-o", "ht", &py, "work.py"])
        .current_dir(d)
        .envs(env)
        .output()
        .unwrap_or_else(|e| panic!("heaptrack: {e} (run `bash .ci/setup`)"));
    common::ok(&ht);
    let ht_file = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("ht."))
        .expect("heaptrack's data file");
    let report = common::ok(
        &Command::new("heaptrack_print")
            .arg("-f")
            .arg(&ht_file)
            .output()
            .unwrap(),
    );
    let theirs = heaptrack_top(&report, 5);
    assert_eq!(theirs.len(), 5, "{report}");

    let text = common::ok(&run(d, &["export", "py.atrace", "--format", "folded"]));
    let lines = parse_folded(&text);
    let mut ours: Vec<(String, u64)> = by_leaf(&lines).into_iter().collect();
    ours.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ours.truncate(5);
    let names = |v: &[(String, u64)]| {
        let mut n: Vec<String> = v.iter().map(|(f, _)| f.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(
        names(&ours),
        names(&theirs),
        "ours {ours:?}, heaptrack {theirs:?}"
    );
    for (f, n) in &theirs {
        let mine = ours.iter().find(|(g, _)| g == f).unwrap().1;
        assert!(
            mine.abs_diff(*n) * 100 <= *n,
            "{f}: {mine} calls here, {n} in heaptrack"
        );
    }

    // The stacks go through libpython (no frame pointers: unwound from .eh_frame) and are
    // named there.
    let r = traces::TraceReader::open(&d.join("py.atrace")).unwrap();
    let (modules, _) = r.modules();
    assert!(
        modules.iter().any(|m| m.path.contains("libpython")),
        "this test needs a python3 with libpython as a shared library"
    );
    assert!(
        lines
            .iter()
            .any(|(l, _)| l.contains(";_PyEval_EvalFrameDefault;")),
        "no interpreter frames"
    );
}

/// Runs `allocscope ARGS` in its own process group, killing the whole group (the recorded
/// program too) after `secs`: None when it had to.
fn run_with_deadline(dir: &Path, args: &[&str], secs: u64) -> Option<Output> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(env!("CARGO_BIN_EXE_allocscope"))
        .args(args)
        .current_dir(dir)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while start.elapsed().as_secs() < secs {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: kill(2) on the process group this test created (the child leads it).
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    let _ = child.wait();
    None
}

/// Recorder problem: every Rust program deadlocks at start under the shim. Rust's runtime
/// calls pthread_getattr_np for the main thread, which holds the thread's lock while it
/// fopen()s /proc/self/maps; that malloc is the thread's first stack capture, and the shim asks
/// pthread_getattr_np for the stack bounds, waiting on the same lock.
#[test]
fn rust_names_come_out_demangled() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("collector/tests/c/stacks_rust.rs");
    let o = Command::new("rustc")
        .args(["-O", "-g", "-o"])
        .arg(d.join("rs"))
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rec = run_with_deadline(d, &["record", "-o", "r.atrace", "--", "./rs"], 60)
        .expect("record of a Rust program did not finish in 60 s (deadlock)");
    assert_eq!(common::ok(&rec).trim(), "vectors 9");
    let text = common::ok(&run(d, &["export", "r.atrace", "--format", "folded"]));
    let chain: u64 = parse_folded(&text)
        .iter()
        .filter(|(l, _)| {
            l.contains("stacks_rust::main;stacks_rust::level_one;stacks_rust::level_two;")
        })
        .map(|(_, n)| n)
        .sum();
    assert_eq!(chain, 9, "{text}");
    assert!(
        !text.contains("_ZN") && !text.contains("17h"),
        "mangled names: {text}"
    );
}

/// Runs a tool; panics with its output when it fails.
fn tool(dir: &Path, program: &str, args: &[&str]) {
    let o = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    common::ok(&o);
}

/// The build-id of an ELF file, from `readelf -n`.
fn build_id(dir: &Path, file: &str) -> String {
    let o = Command::new("readelf")
        .args(["-n", file])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = common::ok(&o);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("{text}"))
        .to_string()
}

#[test]
fn a_stripped_program_is_named_from_its_debug_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    record_stacks_stripped(d);
    let plain = run(d, &["export", "s.atrace", "--format", "folded"]);
    let text = common::ok(&plain);
    // Without its symbols the program's frames show as file name and address.
    assert!(!text.contains(";grow "), "{text}");
    assert!(text.lines().any(|l| l.contains("stacks+0x")), "{text}");
    assert!(
        common::stderr(&plain).contains("addresses have no symbol"),
        "{}",
        common::stderr(&plain)
    );

    // Found by name in --debug-dir, and by build-id under DIR/.build-id.
    std::fs::create_dir(d.join("by-name")).unwrap();
    std::fs::copy(d.join("stacks.debug"), d.join("by-name/stacks.debug")).unwrap();
    let id = build_id(d, "stacks");
    let by_id = d.join("by-id/.build-id").join(&id[..2]);
    std::fs::create_dir_all(&by_id).unwrap();
    std::fs::copy(
        d.join("stacks.debug"),
        by_id.join(format!("{}.debug", &id[2..])),
    )
    .unwrap();
    for dbg in ["by-name", "by-id"] {
        let lines = folded_with(d, &["--debug-dir", dbg]);
        assert_eq!(
            lines.get("main;grow"),
            Some(&3),
            "--debug-dir {dbg}: {lines:#?}"
        );
        assert_eq!(lines.get("main;build_list;make_node"), Some(&5), "{dbg}");
    }

    // A debug file of another build is not used, and a note says so.
    std::fs::create_dir(d.join("other")).unwrap();
    build(
        "cc",
        "stacks.c",
        &d.join("other"),
        "stacks",
        &["-ldl", "-DOTHER_BUILD=1", "-O1"],
    );
    tool(
        d,
        "objcopy",
        &["--only-keep-debug", "other/stacks", "other/stacks.debug"],
    );
    std::fs::remove_file(d.join("other/stacks")).unwrap();
    let o = run(
        d,
        &[
            "export",
            "s.atrace",
            "--format",
            "folded",
            "--debug-dir",
            "other",
        ],
    );
    assert!(!common::ok(&o).contains(";grow "));
    let err = common::stderr(&o);
    assert_eq!(err.matches("is not the recording's").count(), 1, "{err}");
}

/// Records stacks.c stripped of every symbol (its debug information kept aside in
/// `dir/stacks.debug`, linked by build-id only) into `dir/s.atrace`.
fn record_stacks_stripped(d: &Path) {
    build(
        "cc",
        "stacks_plugin.c",
        d,
        "libplugin.so",
        &["-fPIC", "-shared"],
    );
    build("cc", "stacks.c", d, "stacks", &["-ldl"]);
    tool(
        d,
        "objcopy",
        &["--only-keep-debug", "stacks", "stacks.debug"],
    );
    tool(d, "strip", &["--strip-all", "stacks"]);
    let plugin = d.join("libplugin.so");
    common::ok(&run(
        d,
        &[
            "record",
            "-o",
            "s.atrace",
            "--",
            "./stacks",
            plugin.to_str().unwrap(),
            "settle",
        ],
    ));
}

/// Folded lines by allocs of `dir/s.atrace` with extra flags, cut at main.
fn folded_with(d: &Path, flags: &[&str]) -> BTreeMap<String, u64> {
    let mut args = vec!["export", "s.atrace", "--format", "folded"];
    args.extend_from_slice(flags);
    let mut m = BTreeMap::new();
    for (line, n) in parse_folded(&common::ok(&run(d, &args))) {
        let cut = line
            .find(";main;")
            .map_or(line.clone(), |i| line[i + 1..].to_string());
        *m.entry(cut).or_default() += n;
    }
    m
}

#[test]
fn a_program_rebuilt_since_the_recording_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    record_stacks(d);
    let recorded = build_id(d, "stacks");
    // Rebuilt in place with other code: another build-id, wrong addresses.
    build("cc", "stacks.c", d, "stacks", &["-ldl", "-O1"]);
    assert_ne!(build_id(d, "stacks"), recorded);
    let o = run(d, &["export", "s.atrace", "--format", "folded"]);
    let text = common::ok(&o);
    let err = common::stderr(&o);
    assert_eq!(
        err.matches("differs from the recording's").count(),
        1,
        "{err}"
    );
    assert!(err.contains(&recorded), "{err}");
    // Its frames are addresses; the C library's are still named.
    assert!(!text.contains(";grow "), "{text}");
    assert!(text.lines().any(|l| l.contains("stacks+0x")), "{text}");
    assert!(text.contains("__libc_start_call_main"), "{text}");
}

#[test]
fn the_second_export_reads_names_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    record_stacks(d);
    let first = run(d, &["export", "s.atrace", "--format", "folded"]);
    let second = run(d, &["export", "s.atrace", "--format", "folded"]);
    assert_eq!(common::ok(&first), common::ok(&second));
    let figures = |o: &Output| -> (u64, u64) {
        let err = common::stderr(o);
        let line = err
            .lines()
            .find(|l| l.starts_with("allocscope: symbolized "))
            .unwrap_or_else(|| panic!("{err}"));
        let num = |after: &str| -> u64 {
            line.split(after)
                .next()
                .unwrap()
                .rsplit([' ', '('])
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        (num(" addresses"), num(" from the cache"))
    };
    let (addrs, cached) = figures(&first);
    assert!(addrs > 10, "{addrs}");
    assert_eq!(cached, 0);
    assert_eq!(figures(&second), (addrs, addrs));
    assert!(
        std::fs::read_dir(d.join("cache/allocscope/symbols"))
            .unwrap()
            .count()
            > 0
    );
    // Without the cache: computed again.
    let third = run(
        d,
        &[
            "export",
            "s.atrace",
            "--format",
            "folded",
            "--no-symbol-cache",
        ],
    );
    assert_eq!(common::ok(&third), common::ok(&first));
    assert_eq!(figures(&third), (addrs, 0));
}
