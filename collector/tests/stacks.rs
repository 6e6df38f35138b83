//! Call stacks of real programs under the real shim, named by the symbolizer: chains through a
//! dlopen'd library, through qsort calling back into the program, to an inlined leaf, through
//! C++ exception unwinding, and in threads that start and end, a fork child and signal
//! handlers. The programs (tests/c/stacks*.c, stacks_exc.cpp) are built -O2
//! -fomit-frame-pointer -g: only the call-frame information can unwind them.
//!
//! Stacks are turned into folded lines by the code `export --format folded` runs
//! (`analysis::stacks` and `analysis::folded`), without the on-disk cache.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use analysis::folded::{self, Weight};
use analysis::stacks::StackProfiler;
use symbolize::{Options, Place, Symbols};
use traces::TraceReader;

/// Builds `tests/c/<src>` with `compiler` into `dir/<out>` at -O2 without frame pointers.
fn build(compiler: &str, src: &str, dir: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(src);
    let exe = dir.join(out);
    let o = Command::new(compiler)
        .args(["-O2", "-fomit-frame-pointer", "-g", "-o"])
        .arg(&exe)
        .arg(&src)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("{compiler}: {e} (install gcc and g++)"));
    assert!(
        o.status.success(),
        "{compiler} {}: {}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    exe
}

/// A trace's stacks, named, with each stack's weights.
struct Named {
    table: traces::StackTable,
    symbols: Symbols,
    profile: analysis::stacks::StackProfile,
}

fn named(trace: &Path) -> Named {
    let r = TraceReader::open(trace).unwrap_or_else(|e| panic!("{}: {e}", trace.display()));
    let mut p = StackProfiler::new(r.header());
    for ev in r.events() {
        p.add(&ev.unwrap());
    }
    let profile = p.finish();
    let (table, problem) = r.stacks();
    assert!(problem.is_none(), "{problem:?}");
    let (modules, problem) = r.modules();
    assert!(problem.is_none(), "{problem:?}");
    let leaves = profile
        .stacks
        .iter()
        .filter_map(|(id, w)| id.map(|l| (l, w.first_seq)));
    let symbols = Symbols::for_stacks(&table, &modules, leaves, &Options::default());
    Named {
        table,
        symbols,
        profile,
    }
}

impl Named {
    /// Folded lines by allocating calls, each cut to start at `main` (what lies under `main`
    /// differs between C libraries), summed when the cut makes them equal.
    fn cut_at_main(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (line, n) in folded::lines(&self.profile, &self.table, &self.symbols, Weight::Allocs) {
            let cut = match line.find(";main;") {
                Some(i) => line[i + 1..].to_string(),
                None => line,
            };
            *out.entry(cut).or_default() += n;
        }
        out
    }

    fn folded(&self) -> Vec<(String, u64)> {
        folded::lines(&self.profile, &self.table, &self.symbols, Weight::Allocs)
    }
}

/// The lines of `lines` whose last frame is `leaf`.
fn ending_in<'a>(lines: &'a BTreeMap<String, u64>, leaf: &str) -> Vec<(&'a str, u64)> {
    lines
        .iter()
        .filter(|(l, _)| l.rsplit(';').next() == Some(leaf))
        .map(|(l, &n)| (l.as_str(), n))
        .collect()
}

#[test]
fn chains_through_dlopen_qsort_and_an_inlined_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = build(
        "cc",
        "stacks_plugin.c",
        dir.path(),
        "libplugin.so",
        &["-fPIC", "-shared"],
    );
    let exe = build("cc", "stacks.c", dir.path(), "stacks", &["-ldl"]);
    let cmd = [
        exe.into_os_string(),
        plugin.into_os_string(),
        "settle".into(),
    ];
    let o = common::record(dir.path(), &cmd, |_| {});
    assert_eq!(o.exit_code, 0, "{:?}", o.warnings);
    let n = named(&o.processes[0].path);
    let lines = n.cut_at_main();
    let got = |chain: &str| lines.get(chain).copied();
    assert_eq!(
        got("main;run_plugin;plugin_entry;plugin_leaf"),
        Some(7),
        "{lines:#?}"
    );
    assert_eq!(got("main;build_list;make_node"), Some(5), "{lines:#?}");
    assert_eq!(got("main;grow"), Some(3), "{lines:#?}");

    // qsort calls back into the program: every comparator allocation has the whole chain,
    // through glibc's sort (its frames named from libc's symbols) back to main.
    let cmp = ending_in(&lines, "cmp_alloc");
    assert!(!cmp.is_empty(), "{lines:#?}");
    for (line, _) in &cmp {
        let frames: Vec<&str> = line.split(';').collect();
        assert_eq!(&frames[..2], ["main", "sort_things"], "{line}");
        assert!(frames[2].contains("qsort"), "{line}");
        assert!(frames.len() > 4, "{line}");
    }
    let evs = common::events(&o.processes[0].path);
    let comparisons = evs
        .iter()
        .filter(|e| e.op == traces::Op::Malloc && e.size == 16 && e.callsite.is_some())
        .count() as u64;
    assert_eq!(cmp.iter().map(|&(_, n)| n).sum::<u64>(), comparisons);

    // The inlined leaf: one address, two frames, the inlined one first with its own line.
    let (&leaf, w) = n
        .profile
        .stacks
        .iter()
        .find_map(|(id, w)| {
            let leaf = id.as_ref()?;
            let names = folded::frame_names(*id, w.first_seq, &n.table, &n.symbols);
            (names.first()? == "make_node").then_some((leaf, w))
        })
        .expect("a stack ending in make_node");
    let places = n.symbols.stack(&n.table, leaf, w.first_seq);
    let Place::Module { frames, .. } = places[0] else {
        panic!("{:?}", places[0]);
    };
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(
        (frames[0].function.as_str(), frames[0].inlined),
        ("make_node", true)
    );
    assert_eq!(
        (frames[1].function.as_str(), frames[1].inlined),
        ("build_list", false)
    );
    assert!(
        frames[0]
            .file
            .as_deref()
            .is_some_and(|f| f.ends_with("stacks.c"))
            && frames[0].line.is_some(),
        "{frames:?}"
    );
    assert!(n.symbols.notes().is_empty(), "{:?}", n.symbols.notes());
}

/// Recorder problem: a library loaded with dlopen and used at once (before the recorder's
/// writer rescans the modules, ~100 ms) gets stacks cut at its first frame (no unwind
/// information installed for it yet), and its dlclose replaces its module record with one
/// without ranges or build-id, so even whole stacks could not be named. The module's path is
/// also the relative one given to dlopen.
#[test]
fn a_library_used_at_once_and_closed_keeps_its_stacks() {
    let dir = tempfile::tempdir().unwrap();
    build(
        "cc",
        "stacks_plugin.c",
        dir.path(),
        "libplugin.so",
        &["-fPIC", "-shared"],
    );
    let exe = build("cc", "stacks.c", dir.path(), "stacks", &["-ldl"]);
    // A relative path, as programs often give dlopen (relative to this test's directory, where
    // the recorded program runs).
    let cwd = std::env::current_dir().unwrap();
    let up = "../".repeat(cwd.components().count() - 1);
    let lib = format!("{up}{}", dir.path().join("libplugin.so").display());
    let lib = lib.replacen("//", "/", 1);
    let cmd = [exe.into_os_string(), lib.into()];
    let o = common::record(dir.path(), &cmd, |_| {});
    assert_eq!(o.exit_code, 0, "{:?}", o.warnings);
    let n = named(&o.processes[0].path);
    let lines = n.cut_at_main();
    assert_eq!(
        lines.get("main;run_plugin;plugin_entry;plugin_leaf"),
        Some(&7),
        "{lines:#?}"
    );
}

#[test]
fn cxx_allocations_while_an_exception_unwinds() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build("c++", "stacks_exc.cpp", dir.path(), "exc", &[]);
    let o = common::record(dir.path(), &[exe.into_os_string()], |_| {});
    assert_eq!(o.exit_code, 0, "{:?}", o.warnings);
    let lines = named(&o.processes[0].path).cut_at_main();
    // Each chain, then the allocator's own frames (operator new, and operator new[] when
    // libstdc++ does not jump straight to it).
    let chain = |prefix: &str, then: &str| -> u64 {
        lines
            .iter()
            .filter(|(l, _)| {
                l.strip_prefix(prefix).is_some_and(|rest| {
                    !rest.is_empty() && rest.split(';').all(|f| f.starts_with(then))
                })
            })
            .map(|(_, &n)| n)
            .sum()
    };
    // The exception object, allocated by the throw.
    assert_eq!(
        chain(
            "main;outer(int);middle(int);thrower(int);",
            "__cxa_allocate_exception"
        ),
        5,
        "{lines:#?}"
    );
    // The destructor the unwinder runs from middle's landing pad: thrower's frame is gone.
    assert_eq!(
        chain(
            "main;outer(int);middle(int);Guard::~Guard();",
            "operator new"
        ),
        5,
        "{lines:#?}"
    );
    // The catch handler.
    assert_eq!(chain("main;outer(int);", "operator new"), 5, "{lines:#?}");
}

#[test]
fn threads_a_fork_child_and_signal_handlers() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build("cc", "stacks_edge.c", dir.path(), "edge", &["-pthread"]);
    let o = common::record(dir.path(), &[exe.into_os_string()], |_| {});
    assert_eq!(o.exit_code, 0, "{:?}", o.warnings);
    assert_eq!(o.processes.len(), 2, "{:?}", o.processes);
    let parent = named(&o.processes[0].path).folded();
    let child = named(&o.processes[1].path).cut_at_main();
    let sum_ending = |lines: &[(String, u64)], tail: &str| -> u64 {
        lines
            .iter()
            .filter(|(l, _)| l.ends_with(tail))
            .map(|(_, n)| n)
            .sum()
    };
    // Threads: 4 x (1 + 100) allocations in thread_body, from the thread's start.
    assert_eq!(
        sum_ending(&parent, ";start_thread;thread_body"),
        404,
        "{parent:#?}"
    );
    // The thread-specific data destructor, run while each thread exits.
    assert_eq!(sum_ending(&parent, ";at_thread_exit"), 4, "{parent:#?}");
    // The fork child's own trace.
    assert_eq!(child.get("main;child_work"), Some(&10), "{child:#?}");
    // A handler on the thread's stack: its frame, then the signal trampoline, where the
    // unwinder stops. On the alternate signal stack the shim reads nothing: no stack.
    assert_eq!(
        sum_ending(&parent, "__restore_rt;on_signal"),
        1,
        "{parent:#?}"
    );
    let evs = common::events(&o.processes[0].path);
    let handler_allocs: Vec<_> = evs.iter().filter(|e| e.size == 300).collect();
    assert_eq!(handler_allocs.len(), 2, "{handler_allocs:?}");
}

/// A stack cut at the depth limit leaves its outer frames for the next capture to take over only
/// when the next one is cut there too: every allocation whose whole stack fits reaches `main`.
#[test]
fn stacks_that_fit_reach_main_after_deeper_ones_were_cut() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build("cc", "stacks_deep.c", dir.path(), "deep", &[]);
    let o = common::record(dir.path(), &[exe.into_os_string()], |_| {});
    assert_eq!(o.exit_code, 0, "{:?}", o.warnings);
    let lines = named(&o.processes[0].path).cut_at_main();
    // climb(k) allocates in the k + 1st climb frame (the leaf is malloc's caller); below main lie
    // a handful of frames of the C library's start code: up to 50 deep fits in the default 64.
    for k in 0..50 {
        let chain = format!("main{}", ";climb".repeat(k + 1));
        assert_eq!(lines.get(&chain), Some(&1), "climb({k}): {lines:#?}");
    }
    // The deepest are cut: they do not reach main.
    let cut: u64 = lines
        .iter()
        .filter(|(l, _)| !l.starts_with("main;"))
        .map(|(_, &n)| n)
        .sum();
    assert!(cut >= 30, "{lines:#?}");
}

/// Threads with the smallest stacks (16 KiB) and an allocation on an alternate signal stack:
/// the program runs as untraced, every call is recorded (the shim builds a thread's unwinding
/// state only where there is room, and never unwinds near the end of a stack).
#[test]
fn threads_with_the_smallest_stacks_run_as_untraced() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build("cc", "stacks_small.c", dir.path(), "small", &["-pthread"]);
    let o = common::record(dir.path(), &[exe.into_os_string()], |_| {});
    assert_eq!(o.exit_code, 0, "{:?}", o.warnings);
    let evs = common::events(&o.processes[0].path);
    let workers = evs
        .iter()
        .filter(|e| e.op == traces::Op::Malloc && (16..66).contains(&e.size) && e.thread != 0)
        .count();
    assert_eq!(workers, 8 * 50);
    assert!(evs
        .iter()
        .any(|e| e.op == traces::Op::Malloc && e.size == 40));
}
