//! The file header and which wire format it names.
//!
//! A Go execution trace starts with 16 bytes: `go 1.NN trace` padded with NULs. The number is the
//! *format*, not the Go release that wrote it: Go 1.23 and 1.24 write format 23, Go 1.25 writes
//! 25, Go 1.26 and 1.27 write 26 (read from `internal/trace/version` of Go 1.27). Formats before
//! 22 are the old, unrelated encoding; 22 (Go 1.22) has the same framing but no alloc/free
//! experiment, which came in Go 1.23.
//!
//! What differs between the formats this crate reads:
//!
//! | format | Go | generation boundary | sync batch | event types |
//! |---|---|---|---|---|
//! | 23 | 1.23, 1.24 | a batch of the next generation number | starts with `Frequency` (8) | up to `ExperimentalBatch` (49), experimental 128..=136 |
//! | 25 | 1.25 | the same | `Sync` (50): `Frequency`, `ClockSnapshot` (51) | adds `ClockSnapshot` |
//! | 26 | 1.26, 1.27 | an `EndOfGeneration` byte (52) | as 25 | adds `EndOfGeneration` |

use crate::GoTraceError;

/// Bytes of the file header.
pub const HEADER_BYTES: usize = 16;

/// A wire format this crate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Format {
    /// Written by Go 1.23 and 1.24.
    Go123,
    /// Written by Go 1.25.
    Go125,
    /// Written by Go 1.26 and 1.27.
    Go126,
}

impl Format {
    /// The number in the header.
    pub fn number(self) -> u32 {
        match self {
            Format::Go123 => 23,
            Format::Go125 => 25,
            Format::Go126 => 26,
        }
    }

    /// The Go releases that write this format.
    pub fn releases(self) -> &'static str {
        match self {
            Format::Go123 => "Go 1.23 or 1.24",
            Format::Go125 => "Go 1.25",
            Format::Go126 => "Go 1.26 or 1.27",
        }
    }
}

/// How to take a trace this crate can use: one place, said by every message that needs it.
pub const HOW_TO_TRACE: &str = "run the program with GODEBUG=traceallocfree=1 (Go 1.23 or later) \
and take an execution trace: runtime/trace.Start in the program, `go test -trace=trace.out`, or \
a service's /debug/pprof/trace?seconds=N endpoint";

/// Whether `bytes` (the start of a file) look like a Go execution trace of any version: the
/// import verb uses this to pick its reader.
pub fn is_go_trace(bytes: &[u8]) -> bool {
    bytes.starts_with(b"go 1.") && parse_number(bytes).is_some()
}

/// The version number of a header `go 1.N trace\0...`, if it is one.
fn parse_number(bytes: &[u8]) -> Option<u32> {
    let rest = bytes.get(5..)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 3 {
        return None;
    }
    let n: u32 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let tail = &rest[digits..];
    tail.starts_with(b" trace").then_some(n)
}

/// Reads the 16-byte header: the format, or a one-line error naming the version found and what
/// to do.
pub fn read_header(bytes: &[u8]) -> Result<Format, GoTraceError> {
    if bytes.len() < HEADER_BYTES && bytes.starts_with(b"go 1.") {
        return Err(GoTraceError::NotAGoTrace(
            "the file ends inside the Go trace header (16 bytes)".into(),
        ));
    }
    let Some(n) = parse_number(bytes) else {
        return Err(GoTraceError::NotAGoTrace(
            "no `go 1.N trace` header: not a Go execution trace".into(),
        ));
    };
    let padded = bytes[..HEADER_BYTES]
        .iter()
        .skip(5 + n.to_string().len() + " trace".len())
        .all(|&b| b == 0);
    if !padded {
        return Err(GoTraceError::NotAGoTrace(format!(
            "a `go 1.{n} trace` header not padded with NUL bytes: not a Go execution trace"
        )));
    }
    match n {
        23 => Ok(Format::Go123),
        25 => Ok(Format::Go125),
        26 => Ok(Format::Go126),
        n if n <= 21 => Err(GoTraceError::Unsupported(format!(
            "a Go 1.{n} execution trace (the format before Go 1.22) has no allocation events; {HOW_TO_TRACE}"
        ))),
        22 => Err(GoTraceError::Unsupported(format!(
            "a Go 1.22 execution trace has no allocation events (they came in Go 1.23); {HOW_TO_TRACE}"
        ))),
        n if n > 26 => Err(GoTraceError::Unsupported(format!(
            "execution trace format go 1.{n} is newer than this allocscope reads (formats 23, 25 \
             and 26: Go 1.23 to 1.27); upgrade allocscope"
        ))),
        n => Err(GoTraceError::Unsupported(format!(
            "execution trace format go 1.{n} does not exist (Go writes 23, 25 or 26 since 1.23); \
             the header is damaged"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(n: &str) -> Vec<u8> {
        let mut h = format!("go 1.{n} trace").into_bytes();
        h.resize(HEADER_BYTES, 0);
        h
    }

    #[test]
    fn formats_read() {
        assert_eq!(read_header(&header("23")).unwrap(), Format::Go123);
        assert_eq!(read_header(&header("25")).unwrap(), Format::Go125);
        assert_eq!(read_header(&header("26")).unwrap(), Format::Go126);
        assert!(is_go_trace(&header("26")));
        assert!(!is_go_trace(b"\x89ATRACE\n"));
        assert!(!is_go_trace(b"op,id,size\n"));
    }

    #[test]
    fn other_versions_say_why() {
        for (n, needle) in [
            ("21", "before Go 1.22"),
            ("22", "came in Go 1.23"),
            ("24", "does not exist"),
            ("27", "newer than this allocscope"),
            ("5", "before Go 1.22"),
        ] {
            let e = read_header(&header(n)).unwrap_err().to_string();
            assert!(e.contains(needle), "{n}: {e}");
            assert!(!e.contains('\n'));
        }
        let e = read_header(b"go 1.26 tr").unwrap_err().to_string();
        assert!(e.contains("ends inside"), "{e}");
        let mut bad = header("26");
        bad[15] = b'x';
        assert!(read_header(&bad).is_err());
    }
}
