//! The allocscope trace: the event model, the `.atrace` binary format and the CSV text form.
//!
//! - [`event`]: one [`Event`] per allocator call and the recording's [`Header`].
//! - [`TraceWriter`] streams events into chunks (see `FORMAT.md` for the byte layout).
//! - [`TraceReader`] finds chunks (by the index footer, or by a scan when a recording was cut off)
//!   and yields events in global sequence order with bounded memory.
//! - [`live`]: the live-address set and the one anomaly rule every tool applies.
//! - [`csv`] imports and exports the text form; [`stats`] computes what `allocscope info` shows.
#![forbid(unsafe_code)]

pub mod chunk;
pub mod csv;
pub mod end;
pub mod event;
mod file;
pub mod live;
pub mod reader;
pub mod stats;
pub mod varint;
pub mod writer;

pub use end::{EndStatus, Ending};
pub use event::{ClockSource, Event, Header, Op, PtrKind};
pub use file::{FORMAT_VERSION, MIN_READER_VERSION};
pub use reader::{ChunkInfo, Events, TraceReader};
pub use writer::{Rewind, TraceWriter, WriterOptions};

/// What can go wrong reading or writing a trace. Messages are one line, without the file name
/// (callers add it), and say what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not an allocscope trace (the file does not start with the .atrace magic bytes)")]
    NotATrace,
    #[error(
        "written in trace format {found}, which needs a reader of version {needs}; this allocscope \
         reads up to {supported}: upgrade allocscope"
    )]
    FutureVersion {
        found: u16,
        needs: u16,
        supported: u16,
    },
    #[error("corrupt at byte {offset}: {what}")]
    Corrupt { offset: u64, what: String },
    #[error(
        "truncated at byte {offset} ({what}); the {chunks} complete chunks before it were read \
         (a recording that was killed ends like this)"
    )]
    Truncated {
        offset: u64,
        chunks: usize,
        what: String,
    },
    #[error("line {line}, column '{column}': {what}")]
    Csv {
        line: u64,
        column: String,
        what: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl TraceError {
    /// True for a cut-off tail, which tools may accept with `--allow-truncated`.
    pub fn is_truncation(&self) -> bool {
        matches!(self, TraceError::Truncated { .. })
    }
}

pub type Result<T, E = TraceError> = std::result::Result<T, E>;
