//! Any bytes as an .atrace file: the reader must return errors, never panic or over-allocate, and
//! what it yields must be in strictly increasing seq order with each problem said a bounded
//! number of times. Seed it with the samples: `cargo fuzz run read_trace fuzz/corpus/read_trace
//! traces/samples`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = traces::TraceReader::from_bytes(data.to_vec()) else {
        return;
    };
    let _ = reader.recording_end();
    let mut last = None;
    let mut errors = 0usize;
    for item in reader.events() {
        match item {
            Ok(ev) => {
                assert!(last.is_none_or(|l| ev.seq > l), "seq order");
                last = Some(ev.seq);
            }
            Err(_) => errors += 1,
        }
    }
    // One per damaged chunk, plus the summaries (repeats, gaps) and the reader's problems.
    assert!(errors <= reader.chunks().len() + reader.problems().len() + 3);
    let _ = reader.par_map_chunks(|evs| evs.len());
    let mut buf = Vec::new();
    for c in reader.chunks().iter().take(64) {
        let _ = reader.read_chunk(c, &mut buf);
    }
});
