//! The .atrace format against real files on disk: round trips, interleaved threads, truncation at
//! every byte, corruption, and the index.

use std::path::Path;

use proptest::prelude::*;
use traces::{Event, Header, Op, PtrKind, TraceError, TraceReader, TraceWriter, WriterOptions};

fn header() -> Header {
    Header {
        recorder: "test".into(),
        command: vec!["prog".into(), "arg".into()],
        pid: 42,
        ppid: 1,
        page_size: 4096,
        hostname: "host".into(),
        ..Header::default()
    }
}

/// A plausible multi-thread event stream: `threads` threads, alternating mallocs and frees.
fn workload(n: u64, threads: u32) -> Vec<Event> {
    let mut live: Vec<Vec<u64>> = vec![Vec::new(); threads as usize];
    (0..n)
        .map(|i| {
            let t = (i.wrapping_mul(2654435761) >> 7) as u32 % threads;
            let mine = &mut live[t as usize];
            let mut ev = if mine.len() > 3 && i % 3 == 0 {
                let mut e = Event::new(Op::Free);
                e.old_addr = mine.remove(0);
                e
            } else {
                let mut e = Event::new(if i % 17 == 0 { Op::Calloc } else { Op::Malloc });
                e.addr = 0x7f00_0000_0000 + (t as u64) * 0x100_0000 + i * 64;
                e.size = 8 + (i * 7919) % 500;
                if e.op == Op::Calloc {
                    e.nmemb = 3;
                }
                mine.push(e.addr);
                e
            };
            ev.seq = i;
            ev.thread = t;
            ev.ts_ns = 1_000 + i * 90;
            ev.latency_ns = 15 + (i % 40) as u32;
            ev
        })
        .collect()
}

/// Writes events as per-thread chunks of `per_chunk` events, like the collector does.
fn write_per_thread(path: &Path, events: &[Event], per_chunk: usize, finish: bool) {
    let mut w = TraceWriter::create(path, &header()).unwrap();
    let threads = events.iter().map(|e| e.thread).max().map_or(0, |t| t + 1);
    let mut bufs: Vec<Vec<Event>> = vec![Vec::new(); threads as usize];
    for ev in events {
        let b = &mut bufs[ev.thread as usize];
        b.push(*ev);
        if b.len() == per_chunk {
            w.write_chunk(b, 0).unwrap();
            b.clear();
        }
    }
    for b in bufs.iter().filter(|b| !b.is_empty()) {
        w.write_chunk(b, 0).unwrap();
    }
    if finish {
        w.finish().unwrap();
    } else {
        w.flush().unwrap();
    }
}

fn read_all(path: &Path) -> (Vec<Event>, Vec<TraceError>) {
    let r = TraceReader::open(path).unwrap();
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for item in r.events() {
        match item {
            Ok(e) => events.push(e),
            Err(e) => errors.push(e),
        }
    }
    (events, errors)
}

#[test]
fn per_thread_chunks_merge_back_into_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.atrace");
    let events = workload(20_000, 8);
    write_per_thread(&path, &events, 300, true);
    let r = TraceReader::open(&path).unwrap();
    assert_eq!(r.directory(), traces::reader::Directory::Index);
    assert_eq!(r.event_count(), 20_000);
    assert_eq!(r.header().pid, 42);
    assert_eq!(r.header().format_version, traces::FORMAT_VERSION);
    let (back, errors) = read_all(&path);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(back == events, "events differ after the round trip");
}

#[test]
fn files_are_private_and_never_overwritten_or_followed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.atrace");
    write_per_thread(&path, &workload(10, 1), 10, true);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        TraceWriter::create(&path, &header()).is_err(),
        "existing file overwritten"
    );
    let target = dir.path().join("target");
    let link = dir.path().join("link.atrace");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(
        TraceWriter::create(&link, &header()).is_err(),
        "symlink followed"
    );
    assert!(!target.exists());
}

#[test]
fn without_index_the_reader_scans_and_finds_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.atrace");
    let events = workload(5_000, 3);
    write_per_thread(&path, &events, 200, false);
    let r = TraceReader::open(&path).unwrap();
    assert_eq!(r.directory(), traces::reader::Directory::Scanned);
    // No end record: the one problem is that the recording was cut, said after the events.
    assert!(
        matches!(r.problems(), [TraceError::Cut { last: None, .. }]),
        "{:?}",
        r.problems()
    );
    let (back, errors) = read_all(&path);
    assert!(back == events, "events differ after the round trip");
    match &errors[..] {
        [e @ TraceError::Cut { last, .. }] => {
            assert_eq!(*last, Some((4_999, events[4_999].ts_ns)));
            assert!(e.is_truncation());
            assert!(e.to_string().contains("the recording was cut"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncation_at_every_byte_recovers_every_complete_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.atrace");
    let events = workload(400, 2);
    write_per_thread(&full, &events, 50, true);
    let bytes = std::fs::read(&full).unwrap();
    let complete = TraceReader::open(&full).unwrap().chunks().to_vec();
    let cut = dir.path().join("cut.atrace");
    for len in 0..bytes.len() {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let r = match TraceReader::open(&cut) {
            Ok(r) => r,
            Err(e) => {
                // Only a cut inside the file header may fail to open, and it says so.
                assert!(
                    len < complete[0].offset as usize,
                    "cut at {len} failed to open: {e}"
                );
                assert!(
                    matches!(e, TraceError::Truncated { .. } | TraceError::NotATrace),
                    "{e}"
                );
                if len > 0 {
                    assert!(e.is_truncation(), "cut at {len}: {e}");
                }
                continue;
            }
        };
        // Every chunk that ends before the cut is found.
        let whole: Vec<_> = complete
            .iter()
            .filter(|c| c.offset + 64 + c.compressed_len as u64 <= len as u64)
            .collect();
        assert_eq!(r.chunks().len(), whole.len(), "cut at {len}");
        let (back, errors) = read_all(&cut);
        let expected: usize = whole.iter().map(|c| c.count as usize).sum();
        assert_eq!(back.len(), expected, "cut at {len}");
        assert!(back.windows(2).all(|w| w[0].seq < w[1].seq));
        let at_chunk_boundary = len as u64 == complete[0].offset
            || complete
                .iter()
                .any(|c| c.offset + 64 + c.compressed_len as u64 == len as u64);
        if len < bytes.len() && !at_chunk_boundary {
            assert!(
                errors.iter().any(TraceError::is_truncation),
                "cut at {len} not reported: {errors:?}"
            );
        }
    }
}

#[test]
fn flipped_bytes_are_reported_with_an_offset_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.atrace");
    write_per_thread(&full, &workload(600, 2), 100, true);
    let bytes = std::fs::read(&full).unwrap();
    let bad = dir.path().join("bad.atrace");
    let mut reported = 0;
    for i in (0..bytes.len()).step_by(7) {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        std::fs::write(&bad, &b).unwrap();
        match TraceReader::open(&bad) {
            Err(_) => reported += 1,
            Ok(r) => {
                let errors: Vec<_> = r.events().filter_map(Result::err).collect();
                let events = r.events().filter(Result::is_ok).count();
                // Either the damage hit something a reader need not trust (the index, which is
                // rebuilt by a scan), or it is reported.
                if !errors.is_empty() {
                    reported += 1;
                    for e in &errors {
                        assert!(!e.to_string().is_empty());
                    }
                } else {
                    assert_eq!(events, 600, "flip at {i} lost events silently");
                }
            }
        }
    }
    assert!(
        reported > bytes.len() / 7 / 2,
        "only {reported} flips were noticed"
    );
}

#[test]
fn wrong_magic_and_future_version_are_refused_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.atrace");
    write_per_thread(&path, &workload(10, 1), 10, true);
    let mut bytes = std::fs::read(&path).unwrap();
    let other = dir.path().join("o.atrace");
    std::fs::write(&other, b"hello, this is a text file and not a trace at all").unwrap();
    assert!(matches!(
        TraceReader::open(&other),
        Err(TraceError::NotATrace)
    ));
    bytes[10] = 99; // minimum reader version
    std::fs::write(&other, &bytes).unwrap();
    let err = TraceReader::open(&other).err().unwrap();
    assert!(err.to_string().contains("upgrade allocscope"), "{err}");
}

#[test]
fn a_length_field_cannot_make_the_reader_allocate_gigabytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.atrace");
    write_per_thread(&path, &workload(10, 1), 10, false);
    let mut bytes = std::fs::read(&path).unwrap();
    // Metadata length: 4 GiB - 1.
    bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = TraceReader::open(&path).err().unwrap();
    assert!(err.to_string().contains("exceeds"), "{err}");
}

#[test]
fn push_writes_a_single_ordered_stream_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.atrace");
    let events = workload(10_000, 4);
    let file = std::fs::File::create(&path).unwrap();
    let opts = WriterOptions {
        chunk_events: 777,
        zstd_level: 1,
        ..WriterOptions::default()
    };
    let mut w = TraceWriter::with_options(file, &header(), opts).unwrap();
    for e in &events {
        w.push(e).unwrap();
    }
    w.finish().unwrap();
    let r = TraceReader::open(&path).unwrap();
    assert_eq!(r.chunks().len(), 10_000_usize.div_ceil(777));
    assert!(
        read_all(&path).0 == events,
        "events differ after the round trip"
    );
    // Parallel per-chunk statistics see every event once.
    let counts = r.par_map_chunks(|evs| evs.len()).unwrap();
    assert_eq!(counts.iter().sum::<usize>(), 10_000);
}

fn arb_event() -> impl Strategy<Value = Event> {
    (
        0u8..10,
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        (
            any::<u64>(),
            any::<bool>(),
            any::<u32>(),
            0u8..3,
            proptest::option::of(any::<u32>()),
        ),
        (0u32..64, any::<u64>(), 1u64..4),
    )
        .prop_map(
            |(op, addr, old, size, (align, failed, lat, kind, cs), (thread, ts, gap))| {
                let op = Op::from_code(op).unwrap();
                let mut e = Event::new(op);
                if op.returns_object() {
                    e.addr = addr;
                    e.size = size;
                }
                if op.takes_address() {
                    e.old_addr = old;
                }
                if op.has_nmemb() {
                    e.nmemb = align >> 3;
                }
                if op.has_align() {
                    e.align = align;
                }
                e.failed = failed;
                e.latency_ns = lat;
                e.kind = PtrKind::from_code(kind).unwrap();
                e.callsite = cs;
                e.thread = thread;
                e.ts_ns = ts;
                e.seq = gap; // turned into increasing seqs below
                e
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_event_stream_round_trips(
        mut events in proptest::collection::vec(arb_event(), 1..600),
        per_chunk in 1usize..80,
    ) {
        let mut seq = 0u64;
        for e in &mut events {
            seq += e.seq;
            e.seq = seq;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.atrace");
        write_per_thread(&path, &events, per_chunk, true);
        let (back, errors) = read_all(&path);
        // The seqs have holes (steps of 1 to 3 from a first seq of 1 to 3): read, and reported
        // once as missing events.
        let holes = events.last().unwrap().seq + 1 - events.len() as u64;
        if holes == 0 {
            prop_assert!(errors.is_empty(), "{:?}", errors);
        } else {
            prop_assert_eq!(errors.len(), 1);
            let missing = matches!(&errors[0], TraceError::Missing { events, .. } if *events == holes);
            prop_assert!(missing, "{:?}", errors);
        }
        prop_assert_eq!(back, events);
    }
}

#[test]
fn the_same_seq_in_two_chunks_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dup.atrace");
    let mut events = workload(6, 1);
    let mut w = TraceWriter::create(&path, &header()).unwrap();
    w.write_chunk(&events[0..3], 0).unwrap();
    events[3].seq = 2; // chunk 2 starts at a seq chunk 1 already holds
    w.write_chunk(&events[3..6], 0).unwrap();
    w.finish().unwrap();
    let (back, errors) = read_all(&path);
    assert_eq!(back.len(), 5);
    // The repeat is skipped and reported once; seq 3, which no chunk holds, is missing.
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].to_string().contains("appears in two chunks"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].to_string().starts_with("event 3 is missing"),
        "{}",
        errors[1]
    );
}

/// Callers iterate from inside rayon's pool (a `--sweep` replays configurations in parallel): the
/// reader must not wait on pool work there, even with a single pool thread.
#[test]
fn iterating_inside_a_one_thread_rayon_pool_does_not_deadlock() {
    use rayon::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.atrace");
    let events = workload(30_000, 3);
    write_per_thread(&path, &events, 500, true);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let counts: Vec<usize> = pool.install(|| {
        (0..4)
            .into_par_iter()
            .map(|_| {
                TraceReader::open(&path)
                    .unwrap()
                    .events()
                    .filter(Result::is_ok)
                    .count()
            })
            .collect()
    });
    assert_eq!(counts, [30_000; 4]);
}

/// A checkpoint finishes the file as it stands; the next chunk replaces that index, and a writer
/// that stops then leaves a cut file, which `resume` reopens and finishes.
#[test]
fn checkpoints_and_resume_keep_every_chunk_and_the_last_end_status() {
    use traces::reader::Directory;
    use traces::{EndStatus, Ending};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.atrace");
    let events = workload(60, 1);
    let mut w = TraceWriter::create(&path, &header()).unwrap();
    w.write_chunk(&events[0..10], 10).unwrap();
    w.write_chunk(&events[10..20], 20).unwrap();
    w.checkpoint(&EndStatus::new(Ending::Exited)).unwrap();
    let r = TraceReader::open(&path).unwrap();
    assert_eq!(r.directory(), Directory::Index);
    assert_eq!(r.end_status().map(|e| e.how), Some(Ending::Exited));
    assert_eq!(r.event_count(), 20);

    // A late chunk replaces the index; a second checkpoint lists all three chunks.
    w.write_chunk(&events[20..30], 30).unwrap();
    w.checkpoint(&EndStatus::new(Ending::Exited)).unwrap();
    let r = TraceReader::open(&path).unwrap();
    assert_eq!((r.directory(), r.chunks().len()), (Directory::Index, 3));

    // Another chunk, then the writer is gone: whole chunks, no index.
    w.write_chunk(&events[30..40], 40).unwrap();
    w.flush().unwrap();
    drop(w);
    let r = TraceReader::open(&path).unwrap();
    assert_eq!((r.directory(), r.end_status()), (Directory::Scanned, None));
    assert_eq!(r.event_count(), 40);

    // Half a chunk at the end (a write cut short) is dropped by resume.
    let full = std::fs::read(&path).unwrap();
    let mut partial = full.clone();
    partial.extend_from_slice(&full[full.len() - 30..]);
    std::fs::write(&path, &partial).unwrap();
    let resumed = TraceWriter::resume(&path, WriterOptions::default()).unwrap();
    assert_eq!((resumed.events, resumed.cut_bytes), (40, 30));
    let mut w = resumed.writer;
    w.write_chunk(&events[40..60], 60).unwrap();
    let killed = EndStatus {
        how: Ending::Killed,
        signal: Some(9),
        recovered_events: 20,
        ..EndStatus::default()
    };
    w.finish_with(&killed).unwrap();
    let r = TraceReader::open(&path).unwrap();
    assert_eq!(r.directory(), Directory::Index);
    assert_eq!(r.end_status(), Some(&killed));
    let read: Vec<Event> = r.events().map(Result::unwrap).collect();
    assert!(read == events, "every event back, in order");
}
