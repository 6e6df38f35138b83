//! Bad stacks through the real binary: damaged stack and module chunks in a real recording,
//! crafted traces whose events name nodes the table does not hold, whose modules claim absurd
//! ranges or name a FIFO. The events are still exported (stacks shown as unknown or as
//! addresses), the problem is one line, and nothing hangs, panics or grows without bound.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use traces::chunk::ChunkKind;
use traces::{Event, Header, Module, Op, TraceReader, TraceWriter};

/// Runs `allocscope ARGS` in `dir` (symbol cache off), within 60 s and 256 MiB.
fn run(dir: &Path, args: &[&str]) -> common::Measured {
    let mut all = args.to_vec();
    if args[0] == "export" {
        all.push("--no-symbol-cache");
    }
    let m = common::allocscope_measured(&all, dir, &[], Duration::from_secs(60));
    assert!(m.code.is_some(), "{args:?} ended by a signal: {}", m.stderr);
    assert!(
        m.max_rss_bytes < 256 << 20,
        "{args:?}: {} MiB",
        m.max_rss_bytes >> 20
    );
    assert!(!m.stderr.contains("panicked"), "{}", m.stderr);
    m
}

/// Records a small C program with known stacks into `dir/t.atrace`.
fn record(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("collector/tests/c/stacks_edge.c");
    let o = Command::new("cc")
        .args(["-O2", "-g", "-pthread", "-o"])
        .arg(dir.join("edge"))
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = common::allocscope_measured(
        &["record", "-o", "t.atrace", "--", "./edge"],
        dir,
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(m.code, Some(0), "{}", m.stderr);
}

/// Flips a byte in the payload of the first chunk of `kind`; returns the chunk's offset.
fn damage(path: &Path, kind: ChunkKind) -> u64 {
    let r = TraceReader::open(path).unwrap();
    let c = *r
        .aux_chunks()
        .iter()
        .find(|c| c.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} chunk"));
    drop(r);
    let mut bytes = std::fs::read(path).unwrap();
    let at = c.offset as usize + 64 + c.compressed_len as usize / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
    c.offset
}

/// (frames, weight) of folded output.
fn lines(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .map(|l| {
            let (f, n) = l.rsplit_once(' ').unwrap();
            (f.to_string(), n.parse().unwrap())
        })
        .collect()
}

fn total(text: &str) -> u64 {
    lines(text).iter().map(|(_, n)| n).sum()
}

#[test]
fn a_damaged_stack_chunk_leaves_the_events_with_unknown_stacks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    record(d);
    let good = run(d, &["export", "t.atrace", "--format", "folded"]);
    assert_eq!(good.code, Some(0), "{}", good.stderr);
    let offset = damage(&d.join("t.atrace"), ChunkKind::Stacks);
    let bad = run(d, &["export", "t.atrace", "--format", "folded"]);
    assert_eq!(bad.code, Some(0), "{}", bad.stderr);
    // One line says which chunk, at which offset.
    let warnings: Vec<&str> = bad
        .stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", bad.stderr);
    assert!(warnings[0].contains(&offset.to_string()), "{}", warnings[0]);
    // Every event is still there; the stacks the chunk held are unknown.
    assert_eq!(total(&bad.stdout), total(&good.stdout));
    assert!(bad.stdout.contains("[unknown stack] "), "{}", bad.stdout);
    // info says the same once, and still counts the events.
    let info = run(d, &["info", "t.atrace"]);
    assert_eq!(info.code, Some(0), "{}", info.stderr);
    assert_eq!(
        info.stderr
            .lines()
            .filter(|l| l.contains("warning"))
            .count(),
        1
    );
}

#[test]
fn a_damaged_module_chunk_leaves_frames_as_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    record(d);
    let good = run(d, &["export", "t.atrace", "--format", "folded"]);
    let offset = damage(&d.join("t.atrace"), ChunkKind::Modules);
    let bad = run(d, &["export", "t.atrace", "--format", "folded"]);
    assert_eq!(bad.code, Some(0), "{}", bad.stderr);
    let warnings: Vec<&str> = bad
        .stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", bad.stderr);
    assert!(warnings[0].contains(&offset.to_string()), "{}", warnings[0]);
    assert_eq!(total(&bad.stdout), total(&good.stdout));
    // No module: every frame is a bare address.
    for (frames, _) in lines(&bad.stdout) {
        if frames != "[no stack]" {
            assert!(frames.split(';').all(|f| f.starts_with("0x")), "{frames}");
        }
    }
}

/// A trace with: an event naming node 99 (the table holds 3), a module with an absurd range,
/// a module whose path is a FIFO, and the nodes that fall in them.
fn crafted(dir: &Path) {
    let fifo = dir.join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let mut w = TraceWriter::create(&dir.join("c.atrace"), &Header::default()).unwrap();
    w.write_modules(&[
        Module {
            id: 0,
            path: "/lib/absurd.so".into(),
            ranges: vec![(0x9000, 0x1000, 0)],
            ..Module::default()
        },
        Module {
            id: 1,
            path: fifo.display().to_string(),
            build_id: "00112233445566778899".into(),
            bias: 0x40_0000,
            ranges: vec![(0x40_1000, 0x40_2000, 0x1000)],
            ..Module::default()
        },
    ])
    .unwrap();
    // 1: in no module (the absurd one is left out); 2: in the FIFO's range; 3: below 2.
    w.write_stacks(1, &[(0, 0x5000), (1, 0x40_1234), (2, 0x40_1300)])
        .unwrap();
    for (seq, site) in [(0, Some(3)), (1, Some(99)), (2, None), (3, Some(3))] {
        let mut e = Event::new(Op::Malloc);
        e.seq = seq;
        e.addr = 0x10_0000 + seq * 64;
        e.size = 10;
        e.callsite = site;
        w.push(&e).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn crafted_stacks_and_modules_give_unknown_frames_not_failures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crafted(d);
    let m = run(d, &["export", "c.atrace", "--format", "folded"]);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    assert_eq!(
        lines(&m.stdout),
        [
            ("0x5000;fifo+0x1233;fifo+0x12ff".to_string(), 2),
            ("[no stack]".to_string(), 1),
            ("[unknown stack]".to_string(), 1),
        ],
        "{}",
        m.stdout
    );
    assert!(m.stderr.contains("absurd range"), "{}", m.stderr);
    assert_eq!(m.stderr.matches("absurd range").count(), 1, "{}", m.stderr);
    // The pprof export of the same trace too.
    let p = run(
        d,
        &["export", "c.atrace", "--format", "pprof", "-o", "c.pb.gz"],
    );
    assert_eq!(p.code, Some(0), "{}", p.stderr);
    assert!(d.join("c.pb.gz").metadata().unwrap().len() > 0);
    // info counts the node outside the modules.
    let info = run(d, &["info", "--json", "c.atrace"]);
    let v: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
    assert_eq!(v["stacks"]["frames_outside_modules"], 1, "{}", info.stdout);
    assert_eq!(v["stacks"]["stacks_ending_outside_modules"], 1);
    assert_eq!(v["stacks"]["unknown_stacks"], 1);
}
