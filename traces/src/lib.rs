//! The allocscope trace: the event model, the `.atrace` binary format and the CSV text form.
//!
//! - [`event`]: one [`Event`] per allocator call and the recording's [`Header`].
//! - [`TraceWriter`] streams events into chunks (see `FORMAT.md` for the byte layout).
//! - [`TraceReader`] finds chunks (by the index footer, or by a scan when a recording was cut off)
//!   and yields events in global sequence order with bounded memory (the merge is in `merge.rs`).
//! - [`live`]: the live-address set and the one anomaly rule every tool applies.
//! - [`open_input`] opens any file a tool reads (a trace, a CSV workload): regular files only.
//! - [`csv`] imports and exports the text form; [`stats`] computes what `allocscope info` shows.
#![forbid(unsafe_code)]

pub mod chunk;
pub mod csv;
pub mod end;
pub mod event;
mod file;
mod input;
pub mod live;
mod merge;
pub mod reader;
pub mod stacks;
pub mod stats;
pub mod varint;
pub mod writer;

pub use end::{EndStatus, Ending};
pub use event::{ClockSource, Event, Header, Op, PtrKind};
pub use file::{FORMAT_VERSION, MIN_READER_VERSION};
pub use input::open_input;
pub use merge::{Events, MAX_MERGE_BYTES};
pub use reader::{ChunkInfo, RecordingEnd, TraceReader};
pub use stacks::{Module, StackTable};
pub use writer::{Rewind, TraceWriter, WriterOptions};

/// What can go wrong reading or writing a trace. Messages are one line, without the file name
/// (callers add it), and say what to do where there is something to do.
///
/// Kinds of problem: the file cannot be used at all (`Read`, `NotAFile`, `NotATrace`,
/// `FutureVersion`); it is damaged (`Corrupt`, `SeqConflict`: fatal); or it is incomplete but
/// every event it yields is good (`Truncated`, `Cut`, `BadIndex`, `Missing`: see
/// [`TraceError::is_truncation`], which tools accept with `--allow-truncated`).
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Reading an input failed (opening it included).
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    /// Writing an output failed (creating it included).
    #[error("cannot write: {0}")]
    Write(#[source] std::io::Error),
    /// The input is a FIFO, a directory, a device or a socket.
    #[error("is {0}, not a regular file: give the path of a file")]
    NotAFile(&'static str),
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
    /// The file has no end record (index and trailer): nobody finished it.
    #[error("{}", cut_message(*.last, *.start_unix_ns))]
    Cut {
        /// The last event read (seq, ts_ns), when the events have been read.
        last: Option<(u64, u64)>,
        /// Wall clock at the start of the recording (the header's), 0 when unknown.
        start_unix_ns: u64,
    },
    /// A trailer is there but the index it points to is not valid (it does not match the chunks
    /// or does not cover the file): the chunks were found by a scan.
    #[error(
        "the index at byte {offset} does not match the file ({what}): the chunks were found by a \
         scan, and how the recording ended is unknown"
    )]
    BadIndex { offset: u64, what: String },
    /// Sequence numbers missing between the events read: a recording numbers its events 0, 1,
    /// 2, ... without holes, so these events were lost (a chunk missing from the file).
    #[error("{}", missing_message(.ranges, *.gaps, *.events))]
    Missing {
        /// The first few missing ranges, inclusive.
        ranges: Vec<(u64, u64)>,
        /// Missing ranges in all.
        gaps: u64,
        /// Missing events in all.
        events: u64,
    },
    /// Events whose sequence number was already read (two chunks hold the same seq); the
    /// repeats were skipped.
    #[error(
        "sequence number {first} appears in two chunks ({count} events repeat a sequence number \
         already read; the repeats were skipped): the file is damaged"
    )]
    SeqConflict { first: u64, count: u64 },
    #[error("line {line}, column '{column}': {what}")]
    Csv {
        line: u64,
        column: String,
        what: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// I/O errors met by `?` are write errors: the writers (`TraceWriter`, the CSV exporter) use `?`
/// on their sink's results. Reading code maps its errors with `TraceError::Read` explicitly
/// (`reader.rs` reads through one function that does).
impl From<std::io::Error> for TraceError {
    fn from(e: std::io::Error) -> TraceError {
        TraceError::Write(e)
    }
}

impl TraceError {
    /// True for a trace that is incomplete but whose events are all good: a cut-off tail, no end
    /// record, a damaged index (found by a scan), missing events. Tools accept these with
    /// `--allow-truncated`; they come after every good event in [`TraceReader::events`].
    pub fn is_truncation(&self) -> bool {
        matches!(
            self,
            TraceError::Truncated { .. }
                | TraceError::Cut { .. }
                | TraceError::BadIndex { .. }
                | TraceError::Missing { .. }
        )
    }

    /// The I/O error inside a `Read` or `Write`, for callers that act on its kind (a closed
    /// pipe, a file that exists).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            TraceError::Read(e) | TraceError::Write(e) => Some(e.kind()),
            _ => None,
        }
    }

    /// A copy, for problems a reader reports more than once (`TraceError` holds `io::Error`,
    /// which is not `Clone`; an I/O error is copied by kind and text).
    pub(crate) fn duplicate(&self) -> TraceError {
        use TraceError::*;
        let io = |e: &std::io::Error| std::io::Error::new(e.kind(), e.to_string());
        match self {
            Read(e) => Read(io(e)),
            Write(e) => Write(io(e)),
            NotAFile(k) => NotAFile(k),
            NotATrace => NotATrace,
            FutureVersion {
                found,
                needs,
                supported,
            } => FutureVersion {
                found: *found,
                needs: *needs,
                supported: *supported,
            },
            Corrupt { offset, what } => Corrupt {
                offset: *offset,
                what: what.clone(),
            },
            Truncated {
                offset,
                chunks,
                what,
            } => Truncated {
                offset: *offset,
                chunks: *chunks,
                what: what.clone(),
            },
            Cut {
                last,
                start_unix_ns,
            } => Cut {
                last: *last,
                start_unix_ns: *start_unix_ns,
            },
            BadIndex { offset, what } => BadIndex {
                offset: *offset,
                what: what.clone(),
            },
            Missing {
                ranges,
                gaps,
                events,
            } => Missing {
                ranges: ranges.clone(),
                gaps: *gaps,
                events: *events,
            },
            SeqConflict { first, count } => SeqConflict {
                first: *first,
                count: *count,
            },
            Csv { line, column, what } => Csv {
                line: *line,
                column: column.clone(),
                what: what.clone(),
            },
            Invalid(s) => Invalid(s.clone()),
        }
    }
}

fn cut_message(last: Option<(u64, u64)>, start_unix_ns: u64) -> String {
    let mut s = "the recording was cut: the file has no end record (the process died before the \
                 trace was finished; `allocscope record` finishes the traces of processes that \
                 die under it)"
        .to_string();
    if let Some((seq, ts_ns)) = last {
        s.push_str(&format!(
            "; the last event (seq {seq}) was recorded {:.3} s into the recording",
            ts_ns as f64 / 1e9
        ));
        if start_unix_ns > 0 {
            s.push_str(&format!(
                ", at {}",
                utc_time(start_unix_ns.saturating_add(ts_ns))
            ));
        }
    }
    s
}

fn missing_message(ranges: &[(u64, u64)], gaps: u64, events: u64) -> String {
    let shown: Vec<String> = ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                format!("{a}")
            } else {
                format!("{a}..{b}")
            }
        })
        .collect();
    let more = gaps.saturating_sub(ranges.len() as u64);
    let tail = if more > 0 {
        format!(" and {more} more ranges")
    } else {
        String::new()
    };
    let (noun, verb) = if events == 1 {
        ("event", "is")
    } else {
        ("events", "are")
    };
    let count = if gaps == 1 {
        format!("{events} {noun}")
    } else {
        format!("{events} events in {gaps} ranges")
    };
    format!(
        "{noun} {}{tail} {verb} missing ({count}: their chunks are not in the file or were \
         damaged; every other event was read)",
        shown.join(", ")
    )
}

/// `YYYY-MM-DD HH:MM:SS UTC` for nanoseconds since the Unix epoch (civil-from-days, the
/// proleptic Gregorian calendar).
fn utc_time(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 0000-03-01, in 400-year eras of 146097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub type Result<T, E = TraceError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_matches_known_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        // 2000-02-29 12:34:56 UTC (a leap day) = 951827696 s.
        assert_eq!(utc_time(951_827_696_000_000_000), "2000-02-29 12:34:56 UTC");
        // 2026-11-21 00:00:00 UTC = 1795219200 s.
        assert_eq!(
            utc_time(1_795_219_200_000_000_000),
            "2026-11-21 00:00:00 UTC"
        );
    }

    #[test]
    fn missing_says_which_events() {
        let e = TraceError::Missing {
            ranges: vec![(500, 999)],
            gaps: 1,
            events: 500,
        };
        assert!(
            e.to_string().starts_with("events 500..999 are missing"),
            "{e}"
        );
        assert!(e.is_truncation());
    }
}
