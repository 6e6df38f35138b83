//! Any bytes as an .atrace file: the reader must return errors, never panic or over-allocate.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, data).unwrap();
    if let Ok(reader) = traces::TraceReader::open(file.path()) {
        let mut stats = traces::stats::TraceStats::new();
        for ev in reader.events().flatten() {
            stats.add(&ev);
        }
        let _ = reader.par_map_chunks(|evs| evs.len());
    }
});
