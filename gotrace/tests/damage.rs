//! Cut and damaged Go traces: every problem is reported with its offset, what came before it is
//! read, and nothing panics or sizes memory from a claim.

use gotrace::batch::{read_batch, BatchKind};
use gotrace::{GoTraceError, GoTraceReader, Item};

fn sample() -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/go1.27.3-maps.trace");
    std::fs::read(p).unwrap()
}

/// Reads everything; returns (events, problems).
fn read_all(bytes: &[u8]) -> Result<(u64, Vec<String>), GoTraceError> {
    let mut r = GoTraceReader::open(bytes)?;
    let mut n = 0;
    while let Some(item) = r.next_item()? {
        if let Item::Event(_) = item {
            n += 1;
        }
    }
    Ok((n, r.problems().iter().map(|p| p.to_string()).collect()))
}

/// Offsets of the batch headers of a sample.
fn batch_offsets(bytes: &[u8]) -> Vec<(u64, BatchKind)> {
    let mut out = Vec::new();
    let mut pos = 16;
    while let Some(b) = read_batch(bytes, gotrace::Format::Go126, pos, bytes.len() as u64).unwrap()
    {
        out.push((pos, b.kind));
        pos = b.end();
    }
    out
}

#[test]
fn a_cut_keeps_what_came_before_it() {
    let bytes = sample();
    let (whole, problems) = read_all(&bytes).unwrap();
    assert!(problems.is_empty());
    let mut last = 0;
    // Cut at many places, in order: never a panic, always a cut reported, never more events
    // than a longer prefix gives.
    for cut in (17..bytes.len()).step_by(bytes.len() / 97) {
        let (n, problems) = read_all(&bytes[..cut]).unwrap();
        assert!(n <= whole);
        assert!(n >= last || n == 0, "cut {cut}: {n} events after {last}");
        // Batches are read whole or not at all; a cut batch ends the trace.
        assert!(
            problems.iter().any(|p| p.contains("cut at byte")),
            "cut {cut}: {problems:?}"
        );
        last = n;
    }
    assert!(
        last > whole / 2,
        "a late cut keeps most events: {last} of {whole}"
    );
}

#[test]
fn damage_is_reported_with_its_offset() {
    let bytes = sample();
    let batches = batch_offsets(&bytes);
    // A batch header's type byte overwritten: the trace stops there, at that offset.
    let (at, _) = batches[batches.len() / 2];
    let mut bad = bytes.clone();
    bad[at as usize] = 200;
    let (n, problems) = read_all(&bad).unwrap();
    assert!(n > 0);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains(&format!("damaged at byte {at}")) && problems[0].contains("byte 200"),
        "{}",
        problems[0]
    );

    // A batch that claims 2 MiB: refused before anything is read or allocated for it.
    let mut huge = bytes[..at as usize].to_vec();
    huge.extend_from_slice(&[1, 1, 7, 1, 0x80, 0x80, 0x80, 0x01]);
    huge.extend_from_slice(&[0; 64]);
    let (_, problems) = read_all(&huge).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("claims 2097152 bytes") && p.contains(&format!("byte {at}"))),
        "{problems:?}"
    );

    // An event type byte inside an event batch: that batch's rest is skipped, the rest read.
    let (ev_at, _) = *batches
        .iter()
        .find(|(_, k)| *k == BatchKind::Events)
        .unwrap();
    let b = read_batch(
        &bytes[..],
        gotrace::Format::Go126,
        ev_at,
        bytes.len() as u64,
    )
    .unwrap()
    .unwrap();
    let mut bad = bytes.clone();
    bad[b.data_offset as usize] = 250;
    let (n, problems) = read_all(&bad).unwrap();
    let (whole, _) = read_all(&bytes).unwrap();
    assert!(n > 0 && n < whole);
    assert!(
        problems.iter().any(|p| p.contains("event type 250") && p.contains(&format!("byte {}", b.data_offset))),
        "{problems:?}"
    );
}

#[test]
fn an_unknown_experiment_is_skipped_and_named() {
    let bytes = sample();
    // An experimental batch of experiment 9 right after the header.
    let mut with = bytes[..16].to_vec();
    with.extend_from_slice(&[49, 9, 1, 5, 100, 3, 1, 2, 3]);
    with.extend_from_slice(&bytes[16..]);
    let mut r = GoTraceReader::open(&with[..]).unwrap();
    let mut seen = None;
    while let Some(item) = r.next_item().unwrap() {
        if let Item::Generation(g) = item {
            seen = seen.or(g.unknown_experiment);
        }
    }
    assert_eq!(seen, Some((9, 16)));
    assert!(r.problems().is_empty());
}

#[test]
fn headers_of_other_versions_are_refused_in_one_line() {
    for (h, needle) in [
        (&b"go 1.22 trace\0\0\0"[..], "Go 1.22"),
        (b"go 1.28 trace\0\0\0", "newer than this allocscope"),
        (b"go 1.19 trace\0\0\0", "before Go 1.22"),
        (b"not a trace at all", "not a Go execution trace"),
    ] {
        let e = match GoTraceReader::open(h) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted {h:?}"),
        };
        assert!(e.contains(needle) && !e.contains('\n'), "{e}");
    }
}

#[test]
fn a_header_alone_is_an_empty_trace() {
    let (n, problems) = read_all(b"go 1.26 trace\0\0\0").unwrap();
    assert_eq!((n, problems.len()), (0, 0));
}
