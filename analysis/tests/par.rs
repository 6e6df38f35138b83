//! The parallel-decode pass gives exactly the report the sequential pass gives.

use analysis::analyze::{analyze_file, Analyzer, TraceInfo};
use replayer::sizeclass::SizeClasses;
use traces::{Event, Header, Op, TraceReader, TraceWriter, WriterOptions};

/// A deterministic workload of `n` events: allocations of mixed sizes, frees of recent ones.
fn write_trace(path: &std::path::Path, n: u64) {
    let options = WriterOptions {
        chunk_events: 4096,
        ..WriterOptions::default()
    };
    let file = std::fs::File::create(path).unwrap();
    let mut w = TraceWriter::with_options(file, &Header::default(), options).unwrap();
    let mut live: Vec<u64> = Vec::new();
    let mut x = 7u64;
    let mut next_addr = 0x1000u64;
    for seq in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut ev = if live.len() > 3 && (x >> 40) & 1 == 0 {
            let i = (x >> 20) as usize % live.len().min(8);
            let addr = live.swap_remove(live.len() - 1 - i);
            let mut e = Event::new(Op::Free);
            e.old_addr = addr;
            e
        } else {
            let mut e = Event::new(Op::Malloc);
            e.size = 1 + (x >> 33) % 5000;
            e.addr = next_addr;
            next_addr += 8192;
            live.push(e.addr);
            e
        };
        ev.seq = seq;
        ev.thread = (x >> 60) as u32 % 3;
        ev.ts_ns = seq * 100;
        ev.latency_ns = 20 + (x >> 50) as u32 % 50;
        w.push(&ev).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn parallel_decode_matches_the_sequential_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.atrace");
    write_trace(&path, 100_000);
    let reader = TraceReader::open(&path).unwrap();
    assert!(reader.chunks().len() >= 24, "several batches of chunks");
    assert!(analysis::par::ordered_chunks(&reader).is_some());

    let mut an = Analyzer::new(SizeClasses::go());
    let mut events = 0;
    for ev in reader.events() {
        an.add(&ev.unwrap());
        events += 1;
    }
    let info = TraceInfo {
        path: path.display().to_string(),
        events,
        synthetic_clock: reader.header().clock == traces::ClockSource::Synthetic,
    };
    let seq = serde_json::to_value(an.finish(info, None)).unwrap();
    let par =
        serde_json::to_value(analyze_file(&path, SizeClasses::go(), None, false).unwrap()).unwrap();
    assert_eq!(seq["trace"]["events"].as_u64(), Some(100_000));
    assert_eq!(seq, par);
}

#[test]
fn a_missing_trace_is_an_error() {
    let e = analyze_file(
        std::path::Path::new("/nonexistent/x.atrace"),
        SizeClasses::go(),
        None,
        false,
    )
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/x.atrace"), "{e}");
}
