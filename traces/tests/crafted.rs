//! Crafted traces against the reader: CRC-valid lies in indexes and chunk headers, bombs,
//! overlapping chunks, missing chunks, cut files (helpers in `craft/`). Each case was a crash,
//! unbounded memory or a silent wrong result before the reader checked it; here every good event
//! is read and the problem is said once, after the events.

mod craft;

use craft::*;
use traces::{EndStatus, Ending, Event, TraceError, TraceReader};

/// Reads `bytes` from a file on disk: the events, then the problems.
fn read(bytes: &[u8]) -> (TraceReader, Vec<Event>, Vec<TraceError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crafted.atrace");
    std::fs::write(&path, bytes).unwrap();
    let r = TraceReader::open(&path).unwrap();
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for item in r.events() {
        match item {
            Ok(e) => events.push(e),
            Err(e) => errors.push(e),
        }
    }
    (r, events, errors)
}

fn exited() -> EndStatus {
    EndStatus::new(Ending::Exited)
}

/// Three chunks of 100 events: seqs 0..99, 100..199, 200..299.
fn three_chunks() -> Vec<Vec<u8>> {
    (0..3).map(|i| chunk(&events(i * 100, 100))).collect()
}

/// The only problem is one truncation-class error mentioning each of `words`.
fn one_truncation(errors: &[TraceError], words: &[&str]) {
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let text = errors[0].to_string();
    for w in words {
        assert!(text.contains(w), "{text:?} does not say {w:?}");
    }
    assert!(errors[0].is_truncation(), "{text}");
}

#[test]
fn an_index_entry_naming_an_unknown_chunk_kind_sends_the_reader_to_a_scan() {
    let mut bytes = assemble(&three_chunks(), Some(&exited()));
    rewrite_index(&mut bytes, |list| list[1].count |= 0xF0 << 24);
    let (r, events, errors) = read(&bytes);
    assert_eq!(r.directory(), traces::reader::Directory::Scanned);
    assert!(events == craft::events(0, 300));
    one_truncation(&errors, &["unknown chunk kind"]);
}

#[test]
fn an_index_entry_with_a_huge_count_is_a_lie_its_chunk_header_exposes() {
    let mut bytes = assemble(&three_chunks(), Some(&exited()));
    // The largest count an index entry can claim (24 bits; the top byte names the chunk kind).
    rewrite_index(&mut bytes, |list| list[1].count = (1 << 24) - 8);
    let (r, events, errors) = read(&bytes);
    assert_eq!(r.directory(), traces::reader::Directory::Scanned);
    assert!(
        events == craft::events(0, 300),
        "every event, found by a scan"
    );
    one_truncation(
        &errors,
        &["the index at byte", "entry 1 says 16777208 events"],
    );
}

#[test]
fn an_index_with_no_entries_while_chunks_exist_is_caught() {
    let mut bytes = assemble(&three_chunks(), Some(&exited()));
    rewrite_index(&mut bytes, Vec::clear);
    let (_, events, errors) = read(&bytes);
    assert_eq!(events.len(), 300);
    one_truncation(&errors, &["lists no chunks"]);
}

#[test]
fn an_index_that_leaves_a_chunk_out_or_points_elsewhere_is_caught() {
    let mut left_out = assemble(&three_chunks(), Some(&exited()));
    rewrite_index(&mut left_out, |list| {
        list.remove(1);
    });
    let (_, events, errors) = read(&left_out);
    assert_eq!(events.len(), 300);
    one_truncation(&errors, &["belong to no index entry"]);

    let mut swapped = assemble(&three_chunks(), Some(&exited()));
    rewrite_index(&mut swapped, |list| list.swap(0, 2));
    let (_, events, errors) = read(&swapped);
    assert_eq!(events.len(), 300);
    one_truncation(&errors, &["the index at byte"]);
}

#[test]
fn a_chunk_missing_from_the_file_is_reported_as_missing_events() {
    let c = three_chunks();
    // The middle chunk is gone and the index agrees with the file: only the seqs tell.
    let bytes = assemble(&[c[0].clone(), c[2].clone()], Some(&exited()));
    let (r, events, errors) = read(&bytes);
    assert_eq!(r.directory(), traces::reader::Directory::Index);
    let mut expected = craft::events(0, 100);
    expected.extend(craft::events(200, 100));
    assert!(events == expected, "every event that is there, in order");
    one_truncation(&errors, &["events 100..199 are missing (100 events"]);

    // Without its first chunk, a trace starts at seq 100: 0..99 are missing.
    let (_, events, errors) = read(&assemble(&c[1..], Some(&exited())));
    assert_eq!(events.len(), 200);
    one_truncation(&errors, &["events 0..99 are missing"]);
}

#[test]
fn a_cut_recording_says_so_after_its_events_with_the_last_event_and_its_time() {
    let (r, events, errors) = read(&assemble(&three_chunks(), None));
    assert_eq!(r.end_status(), None);
    assert_eq!(events.len(), 300);
    // Seq 299 is at ts 30,900 ns after a start at 2026-11-21 00:00:00 UTC.
    one_truncation(
        &errors,
        &[
            "the recording was cut: the file has no end record",
            "`allocscope record` finishes the traces of processes that die under it",
            "the last event (seq 299) was recorded 0.000 s into the recording, at 2026-11-21 \
             00:00:00 UTC",
        ],
    );
}

#[test]
fn a_chunk_claiming_more_events_than_a_chunk_may_hold_is_refused_unread() {
    // 4 Mi events of 6 bytes: 24 MiB decompressed, 320 MiB as decoded events.
    let bytes = assemble(&[zero_bomb(4 << 20, 0)], Some(&exited()));
    assert!(
        bytes.len() < 64 << 10,
        "a small file: {} bytes",
        bytes.len()
    );
    let (_, events, errors) = read(&bytes);
    assert!(events.is_empty());
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("count out of bounds")),
        "{errors:#?}"
    );
}

#[test]
fn chunk_header_lies_about_counts_and_seqs_are_refused() {
    type Lie = fn(&mut traces::chunk::ChunkHeader);
    let lies: [(&str, Lie); 4] = [
        ("more events than the payload holds", |h| h.count = 5_000),
        ("fewer seqs than events", |h| h.last_seq = h.first_seq + 10),
        ("a last seq beyond the last event", |h| h.last_seq += 5),
        ("no events", |h| h.count = 0),
    ];
    for (what, lie) in lies {
        let mut c = chunk(&events(0, 100));
        reseal(&mut c, 0, lie);
        let (_, events, errors) = read(&assemble(&[c], Some(&exited())));
        assert!(events.is_empty(), "{what}: {} events", events.len());
        assert!(
            errors.iter().any(|e| !e.is_truncation()),
            "{what}: {errors:#?}"
        );
    }
    // One event whose seq is 13 in a chunk that says it starts at 10 (and ends at 13).
    let streams = [0, 3, 0, 0, 0, 0, -1, 0, -1, -1, -1].map(|v: i64| {
        if v < 0 {
            stream(&[])
        } else {
            stream(&[v as u64])
        }
    });
    let c = hand_chunk(
        traces::chunk::ChunkKind::Events,
        &payload(streams),
        1,
        (10, 13),
    );
    let (_, events, errors) = read(&assemble(&[c], Some(&exited())));
    assert!(
        events.is_empty(),
        "a first seq that is not the first event's"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("out of range")),
        "{errors:#?}"
    );
}

#[test]
fn overlapping_chunks_report_their_repeats_once_with_a_count() {
    let bomb = zero_bomb(1 << 20, 0);
    let bytes = assemble(&vec![bomb; 8], Some(&exited()));
    assert!(
        bytes.len() < 64 << 10,
        "a small file: {} bytes",
        bytes.len()
    );
    let (_, events, errors) = read(&bytes);
    assert_eq!(events.len(), 1 << 20);
    assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert_eq!(errors.len(), 1, "one line, not one per event");
    let text = errors[0].to_string();
    assert!(
        text.contains("sequence number 0 appears in two chunks (7340032 events repeat"),
        "{text}"
    );
    assert!(!errors[0].is_truncation());
}

#[test]
fn overlapping_wide_chunks_stop_at_the_memory_budget() {
    // Eight chunks of 42 MiB decompressed each, all over seqs 0..2^20: the merge would hold
    // them all at once.
    let bomb = wide_bomb(1 << 20, 0);
    let bytes = assemble(&vec![bomb; 8], Some(&exited()));
    assert!(
        bytes.len() < 256 << 10,
        "a small file: {} bytes",
        bytes.len()
    );
    let (_, events, errors) = read(&bytes);
    assert!(events.len() < 1 << 20, "{} events", events.len());
    assert!(
        errors.iter().any(|e| e
            .to_string()
            .contains("would hold more than 128 MiB of events at once")),
        "{errors:#?}"
    );
    assert!(errors.len() <= 2, "{errors:#?}");
}

#[test]
fn damaged_headers_are_reported_a_few_at_a_time() {
    // 60 chunks, every other one with a damaged header checksum: 30 damaged places.
    let mut chunks: Vec<Vec<u8>> = (0..60).map(|i| chunk(&events(i * 10, 10))).collect();
    for c in chunks.iter_mut().skip(1).step_by(2) {
        c[60] ^= 0xff;
    }
    let (_, events, errors) = read(&assemble(&chunks, None));
    assert_eq!(events.len(), 300);
    let corrupt: Vec<String> = errors
        .iter()
        .filter(|e| !e.is_truncation())
        .map(|e| e.to_string())
        .collect();
    assert_eq!(corrupt.len(), 11, "{corrupt:#?}");
    assert!(
        corrupt[10].contains("20 more damaged places"),
        "{}",
        corrupt[10]
    );
    // The events of the damaged chunks are missing, and the file was not finished.
    let rest: Vec<String> = errors
        .iter()
        .filter(|e| e.is_truncation())
        .map(|e| e.to_string())
        .collect();
    assert_eq!(rest.len(), 2, "{rest:#?}");
    assert!(rest[0].contains("events 10..19, 30..39"), "{}", rest[0]);
    // The last chunk (590..599) is damaged too, but nothing after it tells that it is missing.
    assert!(rest[0].contains("(290 events in 29 ranges"), "{}", rest[0]);
    assert!(rest[1].contains("the recording was cut"), "{}", rest[1]);
}
