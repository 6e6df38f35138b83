//! Any bytes as a CSV workload: import must return errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut w = traces::TraceWriter::new(Vec::new(), &traces::Header::default()).unwrap();
    let _ = traces::csv::import(data, &mut w);
});
