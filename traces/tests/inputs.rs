//! What the reader opens and how errors are typed: regular files only (a FIFO never blocks),
//! traces in memory, read and write failures told apart, how a recording ended.

mod craft;

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use craft::*;
use traces::{EndStatus, Ending, Header, TraceError, TraceReader, TraceWriter, WriterOptions};

/// Runs `f` on another thread and fails the test when it has not returned after 10 s (a FIFO
/// opened for reading without a writer blocks forever).
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("still blocked after 10 s")
}

#[test]
fn a_fifo_a_directory_and_a_device_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.atrace");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let cases = [
        (fifo, "is a named pipe (FIFO), not a regular file"),
        (
            dir.path().to_path_buf(),
            "is a directory, not a regular file",
        ),
        (
            "/dev/null".into(),
            "is a character device, not a regular file",
        ),
    ];
    for (path, says) in cases {
        let p = path.clone();
        let e = within_10s(move || traces::open_input(&p).err().map(|e| e.to_string()));
        assert_eq!(e.as_deref().map(|e| e.contains(says)), Some(true), "{e:?}");
        let e = within_10s(move || TraceReader::open(&path).err().map(|e| e.to_string()));
        assert_eq!(e.as_deref().map(|e| e.contains(says)), Some(true), "{e:?}");
    }
}

#[test]
fn read_and_write_failures_are_told_apart() {
    let e = TraceReader::open(Path::new("/nonexistent/t.atrace"))
        .err()
        .unwrap();
    assert!(matches!(e, TraceError::Read(_)), "{e:?}");
    assert!(e.to_string().starts_with("cannot read: "), "{e}");

    /// A sink on a full disk.
    struct Full;
    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let e = TraceWriter::new(Full, &Header::default()).err().unwrap();
    assert!(matches!(e, TraceError::Write(_)), "{e:?}");
    assert!(e.to_string().starts_with("cannot write: "), "{e}");
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::StorageFull));
}

#[test]
fn a_trace_in_memory_reads_like_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    for bytes in [
        assemble(
            &[chunk(&events(0, 50)), chunk(&events(50, 50))],
            Some(&EndStatus::complete()),
        ),
        assemble(&[chunk(&events(0, 50)), chunk(&events(60, 40))], None),
    ] {
        let path = dir.path().join("t.atrace");
        std::fs::write(&path, &bytes).unwrap();
        let from_file = TraceReader::open(&path).unwrap();
        let in_memory = TraceReader::from_bytes(bytes).unwrap();
        assert_eq!(from_file.chunks(), in_memory.chunks());
        assert_eq!(from_file.end_status(), in_memory.end_status());
        let all = |r: &TraceReader| -> Vec<String> {
            r.events()
                .map(|x| match x {
                    Ok(e) => format!("{e:?}"),
                    Err(e) => e.to_string(),
                })
                .collect()
        };
        assert_eq!(all(&from_file), all(&in_memory));
    }
    assert!(matches!(
        TraceReader::from_bytes(b"op,id,size\n".to_vec()),
        Err(TraceError::NotATrace)
    ));
}

#[test]
fn recording_end_describes_how_the_recording_ended() {
    let killed = EndStatus {
        how: Ending::Killed,
        signal: Some(9),
        ..EndStatus::default()
    };
    let chunks = [chunk(&events(0, 10))];
    let r = TraceReader::from_bytes(assemble(&chunks, Some(&killed))).unwrap();
    let end = r.recording_end();
    assert!(end.finished && !end.is_clean());
    assert_eq!(
        end.description,
        "the process was killed by signal 9 (SIGKILL)"
    );
    let json = serde_json::to_value(&end).unwrap();
    assert_eq!(
        (json["how"].as_str(), json["signal"].as_i64()),
        (Some("killed"), Some(9))
    );

    let r = TraceReader::from_bytes(assemble(&chunks, Some(&EndStatus::new(Ending::Exited))));
    assert!(r.unwrap().recording_end().is_clean());

    let end = TraceReader::from_bytes(assemble(&chunks, None))
        .unwrap()
        .recording_end();
    assert!(!end.finished && !end.is_clean());
    assert!(end.description.contains("the recording was cut"));
}

/// A version 1 file (no end status in its index) resumed and finished by this writer keeps its
/// version 1 header and gets a version 2 index: the reader takes the end status from it.
#[test]
fn a_version_1_trace_finished_again_has_an_end_status() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.atrace");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/v1-golden.atrace");
    std::fs::copy(golden, &path).unwrap();
    let resumed = TraceWriter::resume(&path, WriterOptions::default()).unwrap();
    let ended = EndStatus::new(Ending::Exited);
    resumed.writer.finish_with(&ended).unwrap();
    let r = TraceReader::open(&path).unwrap();
    assert_eq!(r.version(), 1);
    assert_eq!(r.directory(), traces::reader::Directory::Index);
    assert_eq!(r.end_status(), Some(&ended));
    assert_eq!(r.events().filter(Result::is_ok).count(), 21);
}
