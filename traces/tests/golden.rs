//! Golden sample files, one per format version: what a version wrote must stay readable, with
//! exactly the events it held. A new format version adds a new sample; old ones are never edited
//! (see the compatibility policy in FORMAT.md).

use std::path::{Path, PathBuf};

use traces::{
    EndStatus, Ending, Event, Header, Module, Op, PtrKind, TraceReader, TraceWriter, WriterOptions,
};

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// The events of v1-golden.csv, imported in memory.
fn csv_events() -> Vec<Event> {
    let csv = std::fs::read(samples().join("v1-golden.csv")).unwrap();
    let mut w = TraceWriter::new(Vec::new(), &Header::default()).unwrap();
    traces::csv::import(&csv[..], &mut w).unwrap();
    let bytes = w.finish().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.atrace");
    std::fs::write(&path, bytes).unwrap();
    TraceReader::open(&path)
        .unwrap()
        .events()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn v1_golden_sample_still_reads() {
    let r = TraceReader::open(&samples().join("v1-golden.atrace")).unwrap();
    assert_eq!(r.header().format_version, 1);
    // A version 1 index has no end status: the file was finished, which `Complete` stands for.
    assert_eq!(r.end_status(), Some(&EndStatus::complete()));
    assert_eq!(r.header().recorder, "allocscope golden sample v1");
    assert_eq!(r.header().command, ["golden", "--threads", "3"]);
    assert_eq!(
        (r.header().pid, r.header().ppid, r.header().page_size),
        (4242, 1, 4096)
    );
    // Three threads of 7 events in per-thread chunks of 2: 12 chunks, out of seq order in the file.
    assert_eq!(r.chunks().len(), 12);
    let events: Vec<Event> = r.events().map(Result::unwrap).collect();
    assert_eq!(events.len(), 21);

    // Facts written down independently of the CSV importer.
    let calloc = &events[1];
    assert_eq!(
        (calloc.op, calloc.nmemb, calloc.size, calloc.addr),
        (Op::Calloc, 4, 16, 0x55550040)
    );
    assert_eq!(
        (calloc.kind, calloc.callsite, calloc.thread),
        (PtrKind::Noscan, Some(7), 1)
    );
    let aligned = &events[3];
    assert_eq!(
        (aligned.op, aligned.align, aligned.kind),
        (Op::PosixMemalign, 64, PtrKind::Scan)
    );
    let failed = &events[9];
    assert!(failed.failed && failed.addr == 0 && failed.size == u64::MAX);
    let bad_align = &events[10];
    assert!(bad_align.failed && bad_align.align == 3);
    let ra = &events[8];
    assert_eq!(
        (ra.op, ra.old_addr, ra.nmemb, ra.size),
        (Op::Reallocarray, 0x55552100, 10, 8)
    );
    assert_eq!(
        events.iter().map(|e| e.latency_ns as u64).sum::<u64>(),
        1_558
    );
    assert_eq!(events.iter().map(|e| e.ts_ns).max(), Some(2_900));
    let ops: std::collections::BTreeSet<Op> = events.iter().map(|e| e.op).collect();
    assert_eq!(ops.len(), Op::ALL.len(), "the sample covers every op");

    assert!(
        events == csv_events(),
        "golden events differ from v1-golden.csv"
    );
}

/// Rewrites the golden sample for the current format version. Run by hand, only when adding a
/// new version's sample: `cargo test -p traces --test golden -- --ignored`.
#[test]
#[ignore]
fn write_golden_sample() {
    let events = csv_events();
    let header = Header {
        recorder: format!("allocscope golden sample v{}", traces::FORMAT_VERSION),
        command: vec!["golden".into(), "--threads".into(), "3".into()],
        pid: 4242,
        ppid: 1,
        start_unix_ns: 1_790_000_000_000_000_000,
        page_size: 4096,
        hostname: "golden".into(),
        forked_from: Some(4000),
        ..Header::default()
    };
    let path = samples().join(format!("v{}-golden.atrace", traces::FORMAT_VERSION));
    let _ = std::fs::remove_file(&path);
    let opts = WriterOptions {
        chunk_events: 2,
        zstd_level: 19,
        stacks: true,
    };
    let file = std::fs::File::create(&path).unwrap();
    let mut w = TraceWriter::with_options(file, &header, opts).unwrap();
    // Modules and the stack nodes the events name (call sites 3 and 7), before the events.
    w.write_modules(&golden_modules()).unwrap();
    w.write_stacks(1, &golden_nodes()).unwrap();
    // Per-thread chunks of two events, written when full, as the collector does.
    let mut bufs: Vec<Vec<Event>> = vec![Vec::new(); 3];
    for e in &events {
        let b = &mut bufs[e.thread as usize];
        b.push(*e);
        if b.len() == 2 {
            w.write_chunk(b, 0).unwrap();
            b.clear();
        }
    }
    for b in bufs.iter().filter(|b| !b.is_empty()) {
        w.write_chunk(b, 0).unwrap();
    }
    w.finish_with(&golden_end()).unwrap();
}

/// The modules of the version 3 sample.
fn golden_modules() -> Vec<Module> {
    vec![
        Module {
            id: 0,
            path: "/usr/bin/golden".into(),
            build_id: "0123456789abcdef".into(),
            bias: 0x5555_0000_0000,
            ranges: vec![(0x5555_0000_1000, 0x5555_0000_9000, 0x1000)],
            loaded_seq: 0,
            unloaded_seq: None,
        },
        Module {
            id: 1,
            path: "/usr/lib/libgolden.so".into(),
            build_id: String::new(),
            bias: 0x7f00_0000_0000,
            ranges: vec![(0x7f00_0000_2000, 0x7f00_0000_4000, 0x2000)],
            loaded_seq: 5,
            unloaded_seq: Some(15),
        },
    ]
}

/// Nodes 1..=7 of the version 3 sample: (parent, return address). Node 3 is main -> a -> b; node
/// 7 is main -> c (in the library) -> d -> e -> f.
fn golden_nodes() -> Vec<(u32, u64)> {
    vec![
        (0, 0x5555_0000_1100),
        (1, 0x5555_0000_2200),
        (2, 0x5555_0000_3300),
        (1, 0x7f00_0000_2100),
        (4, 0x7f00_0000_2200),
        (5, 0x7f00_0000_2300),
        (6, 0x7f00_0000_2400),
    ]
}

/// The end status the version 2 and 3 samples were finished with.
fn golden_end() -> EndStatus {
    EndStatus {
        how: Ending::Killed,
        signal: Some(9),
        recovered_events: 3,
        ..EndStatus::default()
    }
}

#[test]
fn v2_golden_sample_still_reads() {
    let r = TraceReader::open(&samples().join("v2-golden.atrace")).unwrap();
    assert_eq!(r.header().format_version, 2);
    assert_eq!(r.header().recorder, "allocscope golden sample v2");
    assert_eq!(r.header().forked_from, Some(4000));
    assert_eq!(r.end_status(), Some(&golden_end()));
    assert_eq!(r.chunks().len(), 12);
    let events: Vec<Event> = r.events().map(Result::unwrap).collect();
    assert!(
        events == csv_events(),
        "golden events differ from v1-golden.csv"
    );
}

#[test]
fn v3_golden_sample_still_reads() {
    let r = TraceReader::open(&samples().join("v3-golden.atrace")).unwrap();
    assert_eq!(r.header().format_version, 3);
    assert_eq!(r.header().recorder, "allocscope golden sample v3");
    assert_eq!(r.end_status(), Some(&golden_end()));
    assert_eq!(r.chunks().len(), 12, "event chunks");
    let (modules, problem) = r.modules();
    assert_eq!((modules, problem.is_none()), (golden_modules(), true));
    let (stacks, problem) = r.stacks();
    assert!(problem.is_none());
    assert_eq!(stacks.len(), 7);
    assert_eq!(
        stacks.frames(3).collect::<Vec<_>>(),
        [0x5555_0000_3300, 0x5555_0000_2200, 0x5555_0000_1100]
    );
    assert_eq!(stacks.depth(7), 5);
    let events: Vec<Event> = r.events().map(Result::unwrap).collect();
    assert!(
        events == csv_events(),
        "golden events differ from v1-golden.csv"
    );
    assert_eq!(events[1].callsite, Some(7));
}
