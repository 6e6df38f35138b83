//! The replayer's error type. Causes stay typed (`#[source]`), so the CLI can walk the chain: a
//! trace that cannot be read carries its [`TraceError`].

use thiserror::Error;
use traces::TraceError;

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("size-class table {name}: {msg}")]
    SizeClassTable { name: String, msg: String },
    #[error("config: {0}")]
    Config(String),
    #[error("cannot read {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("out of address space: cannot map {bytes} more bytes of heap")]
    OutOfMemory {
        bytes: u64,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "replaying on real memory needs more than the {machine_bytes} bytes of RAM and swap this \
         machine has (replay --no-touch models addresses only)"
    )]
    MachineMemory { machine_bytes: u64 },
    #[error("strict mode: {what} at event {event}")]
    Strict { what: &'static str, event: u64 },
    /// The events could not be read (the source says why; [`ReplayError::in_file`] names the
    /// file when the caller knows it).
    #[error("cannot read the trace")]
    Trace(#[from] TraceError),
    /// The trace file `path` could not be read.
    #[error("{path}")]
    TraceFile {
        path: String,
        #[source]
        source: TraceError,
    },
    #[error(
        "event {event}: thread number {thread} is above 65535, the most a replay can tell apart"
    )]
    TooManyThreads { event: u64, thread: u32 },
}

impl ReplayError {
    /// Names the file a trace error came from; other errors are returned as they are.
    pub fn in_file(self, path: &str) -> ReplayError {
        match self {
            ReplayError::Trace(source) => ReplayError::TraceFile {
                path: path.to_string(),
                source,
            },
            other => other,
        }
    }
}
