//! `allocscope record`: runs a command under the preload shim (`shim/`, embedded in this crate at
//! build time), follows its processes, and summarises the trace each process wrote.
//!
//! - [`shim`]: the embedded `.so` and its installation in a private cache directory.
//! - [`launch`]: the recording session (environment, control page, waiting, signals, exit code).
//! - [`recover`]: finishing the traces of processes that died, from their shared ring files.
//! - [`summary`]: reading back each trace and checking it (counts, threads, sequence gaps).
//! - [`diagnose`]: why a command left no trace (static binary, setuid, ...).
//!
//! Only `signals.rs` holds `unsafe` (installing signal handlers needs libc); the shim crate holds
//! the rest.

pub mod diagnose;
pub mod launch;
pub mod recover;
pub mod shim;
mod signals;
pub mod summary;

pub use launch::{record, Outcome, RecordOptions};
pub use summary::{summarize, ProcessSummary};

/// What can go wrong around a recording. Messages are one line and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Setup(String),
    #[error("cannot run '{command}': {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Trace {
        path: String,
        source: traces::TraceError,
    },
}
