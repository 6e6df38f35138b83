//! The real-program sample `python-dict.atrace` (what `allocscope profile` profiles with no
//! command): a finished trace, read whole without any problem.

use std::path::{Path, PathBuf};

use traces::{EndStatus, Ending, TraceReader, TraceWriter, WriterOptions};

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/python-dict.atrace")
}

#[test]
fn python_sample_is_finished_and_reads_without_a_problem() {
    let r = TraceReader::open(&sample()).unwrap();
    assert_eq!(r.directory(), traces::reader::Directory::Index);
    assert_eq!(r.end_status(), Some(&EndStatus::new(Ending::Exited)));
    assert!(r.problems().is_empty(), "{:?}", r.problems());
    let mut n = 0u64;
    for ev in r.events() {
        let ev = ev.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ev.seq, n, "the sample numbers its events without holes");
        n += 1;
    }
    assert_eq!(n, 776_751);
}

/// Finishes the sample (recorded before the recorder wrote an index) with an end status: the
/// process exited. Run once by hand: `cargo test -p traces --test samples -- --ignored`; it
/// leaves a finished file as it is.
#[test]
#[ignore]
fn finish_python_sample() {
    let path = sample();
    if TraceReader::open(&path).unwrap().end_status().is_some() {
        return;
    }
    let resumed = TraceWriter::resume(&path, WriterOptions::default()).unwrap();
    assert_eq!((resumed.events, resumed.cut_bytes), (776_751, 0));
    resumed
        .writer
        .finish_with(&EndStatus::new(Ending::Exited))
        .unwrap();
}
