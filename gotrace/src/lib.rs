//! gotrace: a streaming reader of Go execution traces and their conversion into allocscope
//! traces.
//!
//! Since Go 1.23 a program run with `GODEBUG=traceallocfree=1` writes, into its execution trace
//! (runtime/trace, `go test -trace`, `/debug/pprof/trace`), the runtime's own heap history: every
//! span allocated and freed (base page, pages, span class), every heap object allocated (address
//! and Go type) and every object the sweeper found dead, goroutine stacks, plus the GC cycles and
//! heap figures every trace has. This crate reads that, written from the format's specification
//! in the Go source tree (`src/internal/trace/tracev2`), in four layers:
//!
//! - [`format`]: the 16-byte header and the wire formats (23, 25, 26: Go 1.23 to 1.27);
//! - [`batch`] and [`generation`]: batches, and a generation's index and tables (clock, heap
//!   info, type table), read with positioned reads from any [`Source`];
//! - [`merge`] and [`reader`]: a generation's timed events merged across Ms in time order
//!   ([`GoTraceReader`]);
//! - [`convert`]: the alloc/free events into [`traces::Event`]s (heap objects as malloc and free,
//!   Ps as threads, ns timestamps) and the [`side`] records kept beside the trace (spans, GC
//!   cycles, heap figures, the type table).
//!
//! Bounded memory: everything read from the file is a claim, checked before it sizes anything
//! (64 KiB batches, [`generation::MAX_BATCHES`], [`generation::MAX_TABLE_BYTES`]); the conversion
//! holds one record per live heap object and span (it follows the heap, not the trace's length).
#![forbid(unsafe_code)]

pub mod batch;
pub mod convert;
pub mod format;
pub mod generation;
pub mod merge;
pub mod out;
pub mod reader;
pub mod side;
pub mod source;
pub mod spec;
pub mod wire;

pub use convert::{ConvertError, Converter, Options};
pub use format::{is_go_trace, Format, HOW_TO_TRACE};
pub use out::{FreeTime, Sink};
pub use reader::{GenInfo, GoTraceReader, Item};
pub use source::Source;

/// What can go wrong reading a Go trace. Each message is one line that says where and what.
#[derive(Debug, thiserror::Error)]
pub enum GoTraceError {
    #[error("cannot read the trace: {0}")]
    Read(#[source] std::io::Error),
    #[error("{0}")]
    NotAGoTrace(String),
    #[error("{0}")]
    Unsupported(String),
    /// The file ends inside something: everything before `offset` was read.
    #[error("the Go trace is cut at byte {offset}, inside {what}; every event before it was read")]
    Truncated { offset: u64, what: String },
    /// Bytes that cannot be what the format puts there.
    #[error("the Go trace is damaged at byte {offset}: {what}")]
    Corrupt { offset: u64, what: String },
    /// A claim past this reader's limits.
    #[error("the Go trace at byte {offset}: {what}; reading stopped there")]
    Limit { offset: u64, what: String },
    /// A trace with no alloc/free events.
    #[error("{0}")]
    NoAllocFree(String),
}

impl GoTraceError {
    /// Whether the error means part of the trace was not read (cut, damaged, past a limit),
    /// everything before it was: accepted with `--allow-truncated`, like a cut `.atrace`.
    pub fn is_truncation(&self) -> bool {
        matches!(
            self,
            GoTraceError::Truncated { .. }
                | GoTraceError::Corrupt { .. }
                | GoTraceError::Limit { .. }
        )
    }
}
