//! Every entry point, 8 threads, cross-thread frees, fork and exec: the trace holds exactly the calls
//! the program logged (count, per-thread order, sizes, alignments, addresses, failures), in an order
//! where no address is allocated while live or released while not.

mod common;

use std::collections::HashMap;
use std::path::Path;

use traces::{Event, Op};

#[derive(Debug, PartialEq, Eq, Clone)]
struct Call {
    op: Op,
    addr: u64,
    old_addr: u64,
    size: u64,
    nmemb: u64,
    align: u64,
    failed: bool,
}

impl From<&Event> for Call {
    fn from(e: &Event) -> Call {
        Call {
            op: e.op,
            addr: e.addr,
            old_addr: e.old_addr,
            size: e.size,
            nmemb: e.nmemb,
            align: e.align,
            failed: e.failed,
        }
    }
}

/// Log lines by who ("t0".."t7", "child", "exec").
fn read_logs(path: &Path) -> HashMap<String, Vec<Call>> {
    let mut out: HashMap<String, Vec<Call>> = HashMap::new();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 8, "log line {line:?}");
        let n = |i: usize| f[i].parse::<u64>().unwrap();
        let call = Call {
            op: Op::from_name(f[1]).unwrap(),
            addr: n(2),
            old_addr: n(3),
            size: n(4),
            nmemb: n(5),
            align: n(6),
            failed: f[7] == "1",
        };
        out.entry(f[0].to_string()).or_default().push(call);
    }
    out
}

/// True when `want` appears in `have` in order (other calls, made by libc, may come between).
fn is_subsequence(want: &[Call], have: &[Call]) -> bool {
    let mut it = have.iter();
    want.iter().all(|w| it.any(|h| h == w))
}

#[test]
fn every_entry_point_threads_fork_exec() {
    let dir = tempfile::tempdir().unwrap();
    let exe = common::compile("calls", dir.path());
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let outcome = common::record(
        dir.path(),
        &[exe.into_os_string(), logs.clone().into_os_string()],
        |_| {},
    );
    assert_eq!(
        outcome.exit_code, 0,
        "the program saw a changed result (see its stderr)"
    );
    assert!(
        outcome.warnings.is_empty(),
        "warnings: {:?}",
        outcome.warnings
    );
    assert_eq!(
        outcome.processes.len(),
        3,
        "parent, forked child, exec'd image: {:?}",
        outcome.processes
    );
    for p in &outcome.processes {
        assert_eq!(p.missing, 0, "{}: lost events", p.path.display());
        assert!(p.problem.is_none(), "{}: {:?}", p.path.display(), p.problem);
    }

    // Parent: each worker thread's events are exactly its log.
    let parent = &outcome.processes[0];
    assert_eq!(parent.path, dir.path().join("trace.atrace"));
    let evs = common::events(&parent.path);
    assert_eq!(evs.len() as u64, parent.events);
    assert!(
        evs.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "contiguous seq"
    );
    let threads = read_logs(&logs.join("threads.log"));
    let mut by_thread: HashMap<u32, Vec<Call>> = HashMap::new();
    for e in &evs {
        by_thread.entry(e.thread).or_default().push(Call::from(e));
    }
    let mut total = 0;
    for i in 0..8u64 {
        let want = &threads[&format!("t{i}")];
        let (_, have) = by_thread
            .iter()
            .find(|(_, calls)| {
                calls
                    .first()
                    .is_some_and(|c| c.op == Op::Malloc && c.size == 100_000 + i)
            })
            .unwrap_or_else(|| panic!("no recorder thread starts with worker {i}'s first call"));
        for (k, (h, w)) in have.iter().zip(want).enumerate() {
            assert_eq!(h, w, "worker {i}, call {k}");
        }
        // glibc itself calls free(NULL) a couple of times as a thread exits.
        let extra = &have[want.len().min(have.len())..];
        assert!(
            extra.iter().all(|c| c.op == Op::Free && c.old_addr == 0),
            "worker {i}: extra events {extra:?}"
        );
        assert!(
            have.len() >= want.len(),
            "worker {i}: {} events for {} calls",
            have.len(),
            want.len()
        );
        total += want.len();
    }
    assert!(total > 8 * 200 * 20, "the workers made {total} calls");
    assert_eq!(common::order_violations(&evs), 0, "global order");

    // Forked child and exec'd image: their logged calls, in order, among libc's own.
    let child_log = read_logs(&logs.join("child.log"));
    let exec_log = read_logs(&logs.join("exec.log"));
    let child = &outcome
        .processes
        .iter()
        .find(|p| p.pid != parent.pid && !p.command.iter().any(|a| a == "exec"))
        .expect("child trace");
    let execd = &outcome
        .processes
        .iter()
        .find(|p| p.command.iter().any(|a| a == "exec"))
        .expect("exec'd trace");
    assert_eq!(child.pid, execd.pid);
    assert_eq!(
        child.path,
        dir.path().join(format!("trace.atrace.{}", child.pid))
    );
    let child_calls: Vec<Call> = common::events(&child.path).iter().map(Call::from).collect();
    assert!(
        is_subsequence(&child_log["child"], &child_calls),
        "child calls in its trace"
    );
    let exec_evs = common::events(&execd.path);
    let exec_calls: Vec<Call> = exec_evs.iter().map(Call::from).collect();
    assert!(
        is_subsequence(&exec_log["exec"], &exec_calls),
        "exec'd calls in its trace"
    );
    assert_eq!(common::order_violations(&exec_evs), 0, "exec'd image order");
}
