//! Batch headers. After the file header a trace is a sequence of batches:
//!
//! | field | coding | meaning |
//! |---|---|---|
//! | type | 1 byte | 1 `EventBatch`, 49 `ExperimentalBatch`, 52 `EndOfGeneration` (format 26; nothing follows it) |
//! | experiment | 1 byte | `ExperimentalBatch` only: 1 = AllocFree |
//! | gen | varint | generation number (never 0) |
//! | m | varint | the OS thread (M) that wrote the batch; 2^64-1 for none |
//! | time | varint | the batch's base timestamp, in the generation's clock units |
//! | size | varint | bytes of data that follow, at most 64 KiB (`MaxBatchSize`) |
//!
//! The first data byte tells an event batch (timed events) from the generation's tables: `Stacks`
//! (2), `Strings` (4), `CPUSamples` (6), and the sync batch (`Frequency` 8 before format 25,
//! `Sync` 50 from it).

use crate::format::Format;
use crate::source::Source;
use crate::spec::ev;
use crate::wire::{uvarint, MAX_VARINT_BYTES};
use crate::GoTraceError;

/// Go's `MaxBatchSize`: the most data bytes one batch holds.
pub const MAX_BATCH_BYTES: u64 = 64 << 10;

/// The most bytes a batch header takes (type, experiment, four varints).
const MAX_HEADER_BYTES: usize = 2 + 4 * MAX_VARINT_BYTES;

/// What a batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchKind {
    /// Timed events of one M.
    Events,
    /// The stack table (skipped: allocation events carry no stacks).
    Stacks,
    /// The string table (skipped).
    Strings,
    /// CPU profile samples (skipped).
    CpuSamples,
    /// Frequency and clock snapshot.
    Sync,
    /// An experiment's tables (the experiment id).
    Experimental(u8),
    /// Format 26's end of a generation.
    EndOfGeneration,
}

/// One batch header, where it was found and where its data lie.
#[derive(Clone, Copy, Debug)]
pub struct Batch {
    pub kind: BatchKind,
    /// Offset of the header in the file.
    pub offset: u64,
    /// Offset of the data.
    pub data_offset: u64,
    /// Bytes of data.
    pub size: u32,
    pub gen: u64,
    pub m: u64,
    /// Base timestamp (clock units).
    pub time: u64,
}

impl Batch {
    /// Offset just past the batch.
    pub fn end(&self) -> u64 {
        self.data_offset + self.size as u64
    }
}

/// Reads the batch header at `offset` (`file_len` bytes in all). `Ok(None)` at the end of the
/// file. A header or data running past the end is [`GoTraceError::Truncated`]; one that cannot
/// be a header is [`GoTraceError::Corrupt`].
pub fn read_batch(
    src: &(impl Source + ?Sized),
    format: Format,
    offset: u64,
    file_len: u64,
) -> Result<Option<Batch>, GoTraceError> {
    if offset >= file_len {
        return Ok(None);
    }
    let avail = (file_len - offset).min(MAX_HEADER_BYTES as u64 + 1) as usize;
    let mut head = [0u8; MAX_HEADER_BYTES + 1];
    src.read_at(&mut head[..avail], offset)
        .map_err(GoTraceError::Read)?;
    let head = &head[..avail];
    let corrupt = |what: String| GoTraceError::Corrupt { offset, what };
    let truncated = || GoTraceError::Truncated {
        offset,
        what: "a batch header".into(),
    };
    let (kind, mut pos) = match head[0] {
        ev::EVENT_BATCH => (BatchKind::Events, 1),
        ev::EXPERIMENTAL_BATCH => match head.get(1) {
            Some(&e) => (BatchKind::Experimental(e), 2),
            None => return Err(truncated()),
        },
        ev::END_OF_GENERATION if format >= Format::Go126 => {
            return Ok(Some(Batch {
                kind: BatchKind::EndOfGeneration,
                offset,
                data_offset: offset + 1,
                size: 0,
                gen: 0,
                m: u64::MAX,
                time: 0,
            }))
        }
        b => return Err(corrupt(format!("byte {b} where a batch should start"))),
    };
    let mut field = |name: &str| {
        uvarint(head, &mut pos).map_err(|e| match e {
            crate::wire::VarintError::Short if avail as u64 == file_len - offset => truncated(),
            e => corrupt(format!("batch {name}: {e}")),
        })
    };
    let gen = field("generation")?;
    let m = field("thread")?;
    let time = field("timestamp")?;
    let size = field("size")?;
    if gen == 0 {
        return Err(corrupt(
            "batch of generation 0 (the runtime never writes one)".into(),
        ));
    }
    if size > MAX_BATCH_BYTES {
        return Err(corrupt(format!(
            "a batch claims {size} bytes, more than the format's limit of {MAX_BATCH_BYTES}"
        )));
    }
    let data_offset = offset + pos as u64;
    if data_offset + size > file_len {
        return Err(GoTraceError::Truncated {
            offset,
            what: format!("a batch of {size} bytes"),
        });
    }
    let kind = match (kind, head.get(pos)) {
        (BatchKind::Events, Some(&first)) if size > 0 => classify(format, first),
        (k, _) => k,
    };
    Ok(Some(Batch {
        kind,
        offset,
        data_offset,
        size: size as u32,
        gen,
        m,
        time,
    }))
}

/// What an ordinary batch holds, from its first data byte.
fn classify(format: Format, first: u8) -> BatchKind {
    match first {
        ev::STACKS => BatchKind::Stacks,
        ev::STRINGS => BatchKind::Strings,
        ev::CPU_SAMPLES => BatchKind::CpuSamples,
        ev::FREQUENCY if format < Format::Go125 => BatchKind::Sync,
        ev::SYNC if format >= Format::Go125 => BatchKind::Sync,
        _ => BatchKind::Events,
    }
}

/// Reads a batch's data into `buf` (resized to it).
pub fn read_data(
    src: &(impl Source + ?Sized),
    batch: &Batch,
    buf: &mut Vec<u8>,
) -> Result<(), GoTraceError> {
    buf.clear();
    buf.resize(batch.size as usize, 0);
    src.read_at(buf, batch.data_offset)
        .map_err(GoTraceError::Read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_and_limits() {
        // EventBatch gen=1 m=7 time=300 size=2, data [9, 0].
        let bytes = [1u8, 1, 7, 0xac, 0x02, 2, 9, 0];
        let b = read_batch(&bytes[..], Format::Go126, 0, 8)
            .unwrap()
            .unwrap();
        assert_eq!((b.gen, b.m, b.time, b.size), (1, 7, 300, 2));
        assert_eq!(b.data_offset, 6);
        assert_eq!(b.kind, BatchKind::Events);
        // The same batch cut short.
        let e = read_batch(&bytes[..7], Format::Go126, 0, 7).unwrap_err();
        assert!(matches!(e, GoTraceError::Truncated { .. }), "{e}");
        // A size past the limit.
        let huge = [1u8, 1, 7, 1, 0xff, 0xff, 0x7f];
        let e = read_batch(&huge[..], Format::Go126, 0, 7).unwrap_err();
        assert!(e.to_string().contains("claims 2097151 bytes"), "{e}");
        // Not a batch.
        let e = read_batch(&[200u8, 0][..], Format::Go126, 0, 2).unwrap_err();
        assert!(matches!(e, GoTraceError::Corrupt { offset: 0, .. }), "{e}");
        // End of generation only from format 26.
        let b = read_batch(&[52u8][..], Format::Go126, 0, 1)
            .unwrap()
            .unwrap();
        assert_eq!(b.kind, BatchKind::EndOfGeneration);
        assert!(read_batch(&[52u8][..], Format::Go125, 0, 1).is_err());
    }
}
