//! [`GoTraceReader`]: a Go execution trace as a stream of generations and their timed events.

use crate::format::{read_header, Format, HEADER_BYTES};
use crate::generation::{read_generation, Clock, HeapInfo, TypeEntry};
use crate::merge::{Merge, RawEvent};
use crate::source::Source;
use crate::GoTraceError;

/// What a generation brings before its events.
#[derive(Debug)]
pub struct GenInfo {
    pub number: u64,
    pub clock: Clock,
    /// Smallest batch timestamp of the generation.
    pub min_time: u64,
    /// The alloc/free info batch (the first generation has it).
    pub info: Option<HeapInfo>,
    /// The generation's type table (ids are the generation's own).
    pub types: Vec<TypeEntry>,
    /// An experiment other than AllocFree seen in the generation (id, offset of its batch).
    pub unknown_experiment: Option<(u8, u64)>,
    /// Offsets of the generation in the file.
    pub offset: u64,
    pub end: u64,
}

/// What [`GoTraceReader::next`] yields.
#[derive(Debug)]
pub enum Item {
    /// A generation starts; its events follow.
    Generation(GenInfo),
    Event(RawEvent),
}

/// A streaming reader: memory is one generation's batch index and tables plus a batch per M.
pub struct GoTraceReader<S: Source> {
    src: S,
    format: Format,
    len: u64,
    pos: u64,
    merge: Option<Merge>,
    stop: bool,
    problems: Vec<GoTraceError>,
    bytes_read: u64,
}

impl<S: Source> GoTraceReader<S> {
    /// Checks the header. Errors: [`GoTraceError::NotAGoTrace`], [`GoTraceError::Unsupported`]
    /// (naming the version found and what to do), [`GoTraceError::Read`].
    pub fn open(src: S) -> Result<GoTraceReader<S>, GoTraceError> {
        let len = src.size().map_err(GoTraceError::Read)?;
        let mut head = [0u8; HEADER_BYTES];
        let n = len.min(HEADER_BYTES as u64) as usize;
        src.read_at(&mut head[..n], 0).map_err(GoTraceError::Read)?;
        let format = read_header(&head[..n])?;
        Ok(GoTraceReader {
            src,
            format,
            len,
            pos: HEADER_BYTES as u64,
            merge: None,
            stop: false,
            problems: Vec::new(),
            bytes_read: HEADER_BYTES as u64,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Bytes of the file.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Where reading has got to (the end of the current generation's index).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Problems met so far: a cut or damaged file, a bad event. Each means some of the trace was
    /// not read; everything before it was.
    pub fn problems(&self) -> &[GoTraceError] {
        &self.problems
    }

    /// The next generation start or event; `Ok(None)` at the end. Errors are I/O errors only:
    /// damage is a problem ([`problems`](Self::problems)) and ends or skips what it touches.
    #[inline]
    pub fn next_item(&mut self) -> Result<Option<Item>, GoTraceError> {
        if let Some(m) = &mut self.merge {
            if let Some(ev) = m.next(&self.src)? {
                return Ok(Some(Item::Event(ev)));
            }
            self.problems.extend(m.take_problems());
            self.bytes_read += m.bytes_read;
            self.merge = None;
        }
        if self.stop {
            return Ok(None);
        }
        let Some(g) = read_generation(&self.src, self.format, self.pos, self.len)? else {
            return Ok(None);
        };
        self.pos = g.end;
        self.stop = g.last;
        self.problems.extend(g.problems);
        self.merge = Some(Merge::new(&self.src, self.format, g.ms)?);
        Ok(Some(Item::Generation(GenInfo {
            number: g.number,
            clock: g.clock,
            min_time: g.min_time,
            info: g.info,
            types: g.types,
            unknown_experiment: g.unknown_experiment,
            offset: g.offset,
            end: g.end,
        })))
    }
}
