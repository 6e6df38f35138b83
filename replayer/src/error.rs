//! The replayer's error type.

use thiserror::Error;

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
    #[error("trace: {0}")]
    Trace(String),
}
