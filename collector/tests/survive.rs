//! What must survive under `record`: every call that returned before a SIGKILL, the events of pool
//! workers ended by SIGTERM, a correct order when reallocs move blocks under many threads, a fork
//! child's parentage, paths with spaces, and short-lived processes that stay short.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use traces::{Ending, Op, TraceReader};

/// The recorder thread of each worker: worker `t` mallocs `24 + t` bytes.
fn thread_of_worker(evs: &[traces::Event], t: u64) -> u32 {
    evs.iter()
        .find(|e| e.op == Op::Malloc && e.size == 24 + t)
        .unwrap_or_else(|| panic!("no malloc of worker {t}"))
        .thread
}

#[test]
fn sigkill_loses_no_call_that_returned() {
    let dir = tempfile::tempdir().unwrap();
    let exe = common::compile("killed", dir.path());
    let counts = dir.path().join("counts");
    std::fs::write(&counts, vec![0u8; 4096]).unwrap();
    let threads = 4u64;
    let args = [
        exe.into_os_string(),
        counts.clone().into_os_string(),
        threads.to_string().into(),
        "300000".into(),
    ];
    // The writer's timer never fires: what the writer did not write must come from the rings.
    let o = common::record(dir.path(), &args, |o| o.flush_ms = 60_000);
    assert_eq!(o.exit_code, 128 + 9, "killed by SIGKILL");
    let p = &o.processes[0];
    assert_eq!(
        (p.missing, p.problem.as_deref()),
        (0, None),
        "{:?}",
        o.warnings
    );
    let end = p.ended.as_ref().expect("record finished the trace");
    assert_eq!((end.how, end.signal), (Ending::Killed, Some(9)));
    assert!(
        end.recovered_events > 0,
        "{end:?}: nothing came from the rings"
    );
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("killed by signal 9 (SIGKILL)")),
        "{:?}",
        o.warnings
    );

    let evs = common::events(&p.path);
    assert_eq!(common::order_violations(&evs), 0);
    let published = std::fs::read(&counts).unwrap();
    for t in 0..threads {
        let done = u64::from_le_bytes(published[t as usize * 8..][..8].try_into().unwrap());
        // The worker's own calls: its mallocs of 24 + t bytes and the frees of those blocks, on
        // its thread (the thread also made a few calls inside libc, e.g. pthread_create).
        let thread = thread_of_worker(&evs, t);
        let mut mine = std::collections::HashSet::new();
        let mut recorded = 0u64;
        for e in evs.iter().filter(|e| e.thread == thread) {
            if e.op == Op::Malloc && e.size == 24 + t {
                mine.insert(e.addr);
                recorded += 1;
            } else if e.op == Op::Free && mine.remove(&e.old_addr) {
                recorded += 1;
            }
        }
        // Every call that returned was published after it returned; one more may have been
        // recorded and not yet published when the kill came.
        assert!(
            (done..=done + 1).contains(&recorded),
            "worker {t}: {done} calls returned, {recorded} recorded"
        );
    }
}

#[test]
fn pool_workers_ended_by_sigterm_keep_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pool.py");
    std::fs::write(
        &script,
        r#"
import multiprocessing as mp, os, sys, time

def init(q):
    global queue
    queue = q

def work(i):
    global keep
    keep = [bytearray(7_000_000 + i * 1000)] + [str(j) * 3 for j in range(20000)]
    queue.put(i)
    time.sleep(60)

if __name__ == "__main__":
    mp.set_start_method("fork")
    q = mp.Queue()
    pool = mp.Pool(4, initializer=init, initargs=(q,))
    pool.map_async(work, range(4))
    for _ in range(4):
        q.get(timeout=60)
    pool.terminate()  # SIGTERM to every worker
    pool.join()
    print("terminated")
"#,
    )
    .unwrap();
    let o = common::record(
        dir.path(),
        &common::os(&["python3", script.to_str().unwrap()]),
        |o| o.flush_ms = 60_000,
    );
    assert_eq!(o.exit_code, 0, "{:?}", o.warnings);
    let parent = &o.processes[0];
    let workers: Vec<_> = o
        .processes
        .iter()
        .filter(|p| {
            TraceReader::open(&p.path).unwrap().header().forked_from == Some(parent.pid)
                && p.ended.as_ref().is_some_and(|e| e.how == Ending::Died)
        })
        .collect();
    assert!(workers.len() >= 4, "{:#?}", o.processes);
    let mut found = [false; 4];
    for w in &workers {
        assert_eq!((w.missing, w.problem.as_deref()), (0, None));
        for e in common::events(&w.path) {
            let size = e.requested_bytes();
            for (i, f) in found.iter_mut().enumerate() {
                let want = 7_000_000 + i as u64 * 1000;
                if e.allocates() && (want..want + 64).contains(&size) {
                    *f = true;
                }
            }
        }
    }
    assert_eq!(found, [true; 4], "each worker's bytearray is in its trace");
}

#[test]
fn moving_reallocs_on_many_threads_never_show_an_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    let exe = common::compile("churn", dir.path());
    for run in 0..6 {
        let d = tempfile::tempdir().unwrap();
        let o = common::record(
            d.path(),
            &[exe.clone().into_os_string(), "16".into(), "20000".into()],
            |_| {},
        );
        assert_eq!(o.exit_code, 0);
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
        let evs = common::events(&o.processes[0].path);
        let reallocs = evs.iter().filter(|e| e.op == Op::Realloc).count();
        assert!(reallocs > 100_000, "{reallocs} reallocs");
        assert_eq!(common::order_violations(&evs), 0, "run {run}");
    }
}

#[test]
fn a_fork_child_names_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let exe = common::compile("forked", dir.path());
    let o = common::record(dir.path(), &[exe.into_os_string()], |_| {});
    assert_eq!(o.exit_code, 0);
    assert_eq!(o.processes.len(), 2, "{:?}", o.processes);
    let (parent, child) = (&o.processes[0], &o.processes[1]);
    let h = |p: &Path| TraceReader::open(p).unwrap().header().clone();
    assert_eq!(h(&parent.path).forked_from, None);
    assert_eq!(h(&child.path).forked_from, Some(parent.pid));
    for p in [parent, child] {
        assert_eq!(p.ended.as_ref().map(|e| e.how), Some(Ending::Exited));
    }
    // The child's frees of inherited blocks are in its trace.
    let frees = common::events(&child.path)
        .iter()
        .filter(|e| e.op == Op::Free && e.old_addr != 0)
        .count();
    assert!(frees >= 60, "{frees} frees");
}

#[test]
fn paths_with_spaces_and_newlines_work() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("my traces\nhere %20");
    std::fs::create_dir(&odd).unwrap();
    let exe = common::compile("forked", dir.path());
    let opts = collector::RecordOptions {
        output: Some(odd.join("a trace.atrace")),
        command: vec![exe.into_os_string()],
        verify: true,
        ..collector::RecordOptions::default()
    };
    let o = collector::record(&opts, |_| {}).unwrap();
    assert_eq!(o.exit_code, 0);
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    assert_eq!(o.processes.len(), 2);
    assert_eq!(o.processes[0].path, odd.join("a trace.atrace"));
    assert!(o
        .processes
        .iter()
        .all(|p| p.events > 0 && p.written == Some(p.events)));
}

/// Wall time, measured inside the shell, of 100 runs of `/bin/true` (200 process images: each
/// fork child of bash execs), traced or not.
fn loop_seconds(dir: &Path, traced: bool, n: usize) -> f64 {
    let out = dir.join(format!("time-{traced}-{n}"));
    let script = format!(
        "TIMEFORMAT=%R; {{ time (for i in $(seq 100); do /bin/true; done) ; }} 2> '{}'",
        out.display()
    );
    let command = common::os(&["bash", "-c", &script]);
    if traced {
        let opts = collector::RecordOptions {
            output: Some(dir.join(format!("loop-{n}.atrace"))),
            command,
            ..collector::RecordOptions::default()
        };
        assert_eq!(collector::record(&opts, |_| {}).unwrap().exit_code, 0);
    } else {
        assert!(Command::new("bash")
            .args(["-c", &script])
            .status()
            .unwrap()
            .success());
    }
    std::fs::read_to_string(&out)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn short_lived_processes_stay_short() {
    let dir = tempfile::tempdir().unwrap();
    let (mut plain, mut traced) = (Vec::new(), Vec::new());
    for n in 0..3 {
        plain.push(loop_seconds(dir.path(), false, n));
        traced.push(loop_seconds(dir.path(), true, n));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let extra_per_image = (median(&mut traced) - median(&mut plain)) / 200.0;
    // The target (1 ms) is measured by benches/record_overhead.sh on a quiet machine; this catches
    // a per-process wait such as the 20 ms clock calibration every process once paid.
    assert!(
        extra_per_image < Duration::from_millis(8).as_secs_f64(),
        "{:.2} ms more per traced process ({plain:?} s untraced, {traced:?} s traced)",
        extra_per_image * 1e3
    );
}

/// The Go toolchain the tests use: $ALLOCSCOPE_GO (what CI installs), else `go` on PATH.
fn go() -> std::path::PathBuf {
    std::env::var_os("ALLOCSCOPE_GO")
        .map(Into::into)
        .unwrap_or_else(|| "go".into())
}

#[test]
fn a_cgo_program_gets_the_go_runtime_hint() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.go"),
        r#"package main

// #include <stdlib.h>
import "C"

import (
	"fmt"
	"unsafe"
)

func main() {
	p := C.malloc(64)
	C.free(unsafe.Pointer(p))
	s := make([][]byte, 0)
	for i := 0; i < 100000; i++ {
		s = append(s, make([]byte, 100))
	}
	fmt.Println(len(s))
}
"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("go.mod"), "module cgoprobe\n\ngo 1.19\n").unwrap();
    let exe = dir.path().join("cgoprobe");
    let built = Command::new(go())
        .args(["build", "-o"])
        .arg(&exe)
        .current_dir(dir.path())
        .env("CGO_ENABLED", "1")
        .env("GOCACHE", dir.path().join("gocache"))
        .env("GOPATH", dir.path().join("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .output()
        .unwrap_or_else(|e| {
            panic!("this test needs Go: run `bash .ci/setup` or set ALLOCSCOPE_GO ({e})")
        });
    assert!(
        built.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let o = common::record(dir.path(), &[exe.into_os_string()], |_| {});
    assert_eq!(o.exit_code, 0);
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("runs a Go program") && w.contains("GODEBUG=traceallocfree=1")),
        "{:?}",
        o.warnings
    );
}
