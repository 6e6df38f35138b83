//! [`TraceReader`]: opens an `.atrace` file (or one in memory), finds its chunks, checks what the
//! file claims, and yields events in seq order (the merge is in `merge.rs`).
//!
//! Finding chunks: a finished file ends with an index (a chunk directory with the end status) and
//! a trailer. The index is a claim like any other: every entry must match the chunk header it
//! points to, and together the entries must cover every byte between the metadata and the index
//! (so an index that leaves chunks out, even one with no entries at all, is caught). A valid index
//! is used without reading the payloads. Otherwise (no trailer: the recording was cut; an index
//! that does not match: it is reported) the reader scans chunk headers from the start, seeking
//! over payloads, and notes where and why the scan stopped.
//!
//! Problems found here (a damaged index, what the scan met, no end record) are in
//! [`TraceReader::problems`]; the event iterator yields them again after every good event, with
//! what it found itself (missing or repeated sequence numbers).

use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use crate::chunk::{ChunkHeader, ChunkKind, EventChunk, CHUNK_HEADER_LEN, CHUNK_MAGIC};
use crate::end::{EndStatus, Ending};
use crate::event::{Event, Header};
use crate::file::{
    decode_index, parse_fixed, parse_metadata, FILE_HEADER_LEN, TRAILER_LEN, TRAILER_MAGIC,
};
use crate::input::{open_input, Source};
use crate::merge::Events;
use crate::stacks::{Module, StackTable};
use crate::{Result, TraceError};

/// Where one event chunk is and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkInfo {
    /// Byte offset of the chunk header in the file.
    pub offset: u64,
    pub compressed_len: u32,
    pub count: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Events, or (format 3) stack nodes or modules.
    pub kind: ChunkKind,
}

/// How the chunk directory was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Directory {
    /// From the index footer of a cleanly finished file.
    Index,
    /// By scanning: the file has no (valid) index.
    Scanned,
}

/// How a recording ended, as the tools report it (`info`, the report JSON's `recording_end`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RecordingEnd {
    /// The end status of a finished trace, its fields flattened (`how`, `signal`, `exit_code`,
    /// `recovered_events`, `note`); absent when the file has no valid end record.
    #[serde(flatten)]
    pub status: Option<EndStatus>,
    /// False when the file has no valid end record (the recording was cut, or the index is
    /// damaged).
    pub finished: bool,
    /// One line for people: the end status's `describe()`, or why it is not known.
    pub description: String,
}

impl RecordingEnd {
    /// True for the ends that need no mention: written whole by a tool, exit, exec. Killed, died,
    /// stopped and unfinished recordings are worth a line in what the tools print.
    pub fn is_clean(&self) -> bool {
        matches!(
            self.status.as_ref().map(|s| s.how),
            Some(Ending::Complete | Ending::Exited | Ending::Exec)
        )
    }
}

/// Damaged places a scan reports one by one; past these it counts them in one more problem.
const REPORTED_FAULTS: usize = 10;

/// Events handed to a `par_map_chunks` callback at once: 5 MiB of `Event`s per worker thread,
/// whatever a chunk holds.
const PAR_BATCH: usize = 1 << 16;

pub struct TraceReader {
    /// Shared with the background decoder of the event iterator.
    pub(crate) source: Arc<Source>,
    header: Header,
    pub(crate) file_len: u64,
    chunks: Vec<ChunkInfo>,
    /// Stack and module chunks (format 3), in file order.
    aux: Vec<ChunkInfo>,
    directory: Directory,
    /// Format version that wrote the file.
    version: u16,
    /// Byte offset of the first chunk (after the header, metadata and its checksum).
    data_start: u64,
    /// How the recording ended, from the index of a finished file (None: no valid index).
    end: Option<EndStatus>,
    /// Problems found without reading events; yielded by the event iterator after every good
    /// event.
    problems: Vec<TraceError>,
}

/// What the trailer and the index say.
enum IndexLookup {
    Found(Vec<ChunkInfo>, EndStatus),
    /// No trailer: the file was not finished.
    Absent,
    /// A trailer, but the index is not valid (`what`); `offset` is where it should be.
    Invalid {
        offset: u64,
        what: String,
    },
}

impl TraceReader {
    /// Opens a trace file (a regular file: see [`open_input`]).
    pub fn open(path: &Path) -> Result<TraceReader> {
        TraceReader::from_source(Source::File(open_input(path)?))
    }

    /// A reader over a trace held in memory (what `TraceWriter::new(Vec::new(), ..)` wrote), with
    /// the same checks and API as [`TraceReader::open`]: importing a CSV needs no temporary file.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<TraceReader> {
        TraceReader::from_source(Source::Bytes(bytes))
    }

    fn from_source(source: Source) -> Result<TraceReader> {
        let file_len = source.len()?;
        let mut fixed = [0u8; FILE_HEADER_LEN];
        if file_len < FILE_HEADER_LEN as u64 {
            let mut head = vec![0u8; file_len as usize];
            source.read_at(&mut head, 0)?;
            if crate::file::FILE_MAGIC.starts_with(&head[..head.len().min(8)]) && !head.is_empty() {
                return Err(truncated(file_len, 0, "inside the file header"));
            }
            return Err(TraceError::NotATrace);
        }
        source.read_at(&mut fixed, 0)?;
        let (version, meta_len) = parse_fixed(&fixed)?;
        // meta_len is at most MAX_METADATA (checked in parse_fixed).
        let data_start = (FILE_HEADER_LEN + meta_len as usize + 4) as u64;
        if file_len < data_start {
            return Err(truncated(file_len, 0, "inside the metadata"));
        }
        let mut all = vec![0u8; data_start as usize];
        source.read_at(&mut all, 0)?;
        let header = parse_metadata(&all)?;

        let mut reader = TraceReader {
            source: Arc::new(source),
            header,
            file_len,
            chunks: Vec::new(),
            aux: Vec::new(),
            directory: Directory::Index,
            version,
            data_start,
            end: None,
            problems: Vec::new(),
        };
        match reader.read_index() {
            IndexLookup::Found(chunks, end) => {
                let (events, aux) = chunks
                    .into_iter()
                    .partition(|c| c.kind == ChunkKind::Events);
                reader.chunks = events;
                reader.aux = aux;
                reader.end = Some(end);
            }
            IndexLookup::Absent => {
                reader.directory = Directory::Scanned;
                reader.scan(data_start)?;
                reader.problems.push(TraceError::Cut {
                    last: None,
                    start_unix_ns: reader.header.start_unix_ns,
                });
            }
            IndexLookup::Invalid { offset, what } => {
                reader.directory = Directory::Scanned;
                reader.problems.push(TraceError::BadIndex { offset, what });
                reader.scan(data_start)?;
            }
        }
        Ok(reader)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Every event chunk found, in file order.
    pub fn chunks(&self) -> &[ChunkInfo] {
        &self.chunks
    }

    /// Every stack and module chunk found (format 3), in file order.
    pub fn aux_chunks(&self) -> &[ChunkInfo] {
        &self.aux
    }

    /// The stack trie (empty for a trace recorded without stacks). A damaged stack chunk stops
    /// the table there: the stacks of its nodes and later ones are unknown, and the problem says
    /// which chunk at which offset. The events are not affected.
    pub fn stacks(&self) -> (StackTable, Option<TraceError>) {
        let mut table = StackTable::new();
        for c in self.aux.iter().filter(|c| c.kind == ChunkKind::Stacks) {
            let read = read_chunk_at(&self.source, self.file_len, c.offset).and_then(|(h, p)| {
                let corrupt = |what: String| TraceError::Corrupt {
                    offset: c.offset,
                    what,
                };
                if h.first_seq != table.len() as u64 + 1 {
                    return Err(corrupt(format!(
                        "stack chunk starts at node {} after {} nodes",
                        h.first_seq,
                        table.len()
                    )));
                }
                let raw = crate::chunk::decompress(&h, &p).map_err(|f| corrupt(f.to_string()))?;
                crate::stacks::decode_nodes(&raw, h.first_seq as u32, h.count, &mut table)
                    .map_err(|what| corrupt(format!("stack chunk: {what}")))
            });
            if let Err(e) = read {
                return (table, Some(e));
            }
        }
        (table, None)
    }

    /// The modules the recorder saw (a later record of a module replaces an earlier one: an
    /// unload). A damaged module chunk is skipped and reported.
    pub fn modules(&self) -> (Vec<Module>, Option<TraceError>) {
        let mut modules: Vec<Module> = Vec::new();
        let mut problem = None;
        for c in self.aux.iter().filter(|c| c.kind == ChunkKind::Modules) {
            let read = read_chunk_at(&self.source, self.file_len, c.offset).and_then(|(h, p)| {
                let corrupt = |what: String| TraceError::Corrupt {
                    offset: c.offset,
                    what,
                };
                let raw = crate::chunk::decompress(&h, &p).map_err(|f| corrupt(f.to_string()))?;
                serde_json::from_slice::<Vec<Module>>(&raw)
                    .map_err(|e| corrupt(format!("module chunk: {e}")))
            });
            match read {
                Ok(list) => {
                    for m in list {
                        match modules.iter_mut().find(|x| x.id == m.id) {
                            Some(x) => *x = m,
                            None => modules.push(m),
                        }
                    }
                }
                Err(e) => problem = problem.or(Some(e)),
            }
        }
        (modules, problem)
    }

    pub fn directory(&self) -> Directory {
        self.directory
    }

    /// How the recording ended, from the end status of a finished file; None when the file has
    /// no valid index (the recording was cut off, or the index is damaged).
    pub fn end_status(&self) -> Option<&EndStatus> {
        self.end.as_ref()
    }

    /// How the recording ended, for reports: the end status with its description, or why
    /// there is none.
    pub fn recording_end(&self) -> RecordingEnd {
        let bad_index = self
            .problems
            .iter()
            .any(|p| matches!(p, TraceError::BadIndex { .. }));
        let description = match &self.end {
            Some(end) => end.describe(),
            None if bad_index => "unknown: the index is damaged".to_string(),
            None => "the recording was cut: the file has no end record".to_string(),
        };
        RecordingEnd {
            status: self.end.clone(),
            finished: self.end.is_some(),
            description,
        }
    }

    /// Format version that wrote the file.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Byte offset where the first chunk starts.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Events in the chunk directory (what a full read yields when no chunk is corrupt). Every
    /// count in the directory was checked against its chunk header and payload size.
    pub fn event_count(&self) -> u64 {
        self.chunks.iter().map(|c| c.count as u64).sum()
    }

    /// Problems found without reading events: an index that does not match the file, what a
    /// scan met (a truncated tail, damaged chunk headers), a file without an end record
    /// ([`TraceError::Cut`], here without the last event, which only reading tells).
    pub fn problems(&self) -> &[TraceError] {
        &self.problems
    }

    /// The index footer and end status, if they are there and consistent.
    fn read_index(&self) -> IndexLookup {
        let tail_len = (CHUNK_HEADER_LEN + TRAILER_LEN) as u64;
        if self.file_len < self.data_start + tail_len {
            return IndexLookup::Absent;
        }
        let mut trailer = [0u8; TRAILER_LEN];
        let at = self.file_len - TRAILER_LEN as u64;
        if self.source.read_at(&mut trailer, at).is_err() || trailer[8..] != TRAILER_MAGIC {
            return IndexLookup::Absent;
        }
        let index_at = u64::from_le_bytes(trailer[..8].try_into().unwrap());
        let invalid = |what: String| IndexLookup::Invalid {
            offset: index_at,
            what,
        };
        if index_at < self.data_start || index_at > self.file_len - tail_len {
            return invalid("the trailer points outside the file".into());
        }
        let (h, payload) = match read_chunk_at(&self.source, self.file_len, index_at) {
            Ok(c) => c,
            Err(e) => return invalid(e.to_string()),
        };
        if h.kind != ChunkKind::Index {
            return invalid("the trailer does not point to an index chunk".into());
        }
        if index_at + (CHUNK_HEADER_LEN as u64) + h.compressed_len as u64 + TRAILER_LEN as u64
            != self.file_len
        {
            return invalid("the index chunk does not end at the trailer".into());
        }
        let raw = match crate::chunk::decompress(&h, &payload) {
            Ok(raw) => raw,
            Err(f) => return invalid(f.to_string()),
        };
        let (chunks, end) = match decode_index(&raw, h.count, self.version) {
            Ok(x) => x,
            Err(what) => return invalid(what.into()),
        };
        match self.check_index(&chunks, index_at) {
            Ok(()) => IndexLookup::Found(chunks, end),
            Err(what) => invalid(what),
        }
    }

    /// The index's entries against the file: in file order, each matching the chunk header at
    /// its offset, together covering every byte from the end of the metadata to the index.
    fn check_index(&self, chunks: &[ChunkInfo], index_at: u64) -> Result<(), String> {
        let mut next = self.data_start;
        for (i, c) in chunks.iter().enumerate() {
            if c.offset != next {
                return Err(if c.offset > next {
                    format!("bytes {next}..{} belong to no index entry", c.offset)
                } else {
                    format!("entry {i} (byte {}) overlaps the chunk before it", c.offset)
                });
            }
            let end = c.offset + CHUNK_HEADER_LEN as u64 + c.compressed_len as u64;
            if end > index_at {
                return Err(format!("entry {i} runs past the index"));
            }
            let mut hb = [0u8; CHUNK_HEADER_LEN];
            self.source
                .read_at(&mut hb, c.offset)
                .map_err(|e| e.to_string())?;
            let h = ChunkHeader::parse(&hb)
                .map_err(|f| format!("entry {i} points to byte {}: {f}", c.offset))?;
            let claims = (c.compressed_len, c.count, c.first_seq, c.last_seq);
            let header = (h.compressed_len, h.count, h.first_seq, h.last_seq);
            if h.kind != c.kind || claims != header {
                return Err(format!(
                    "entry {i} says {} events, seqs {}..={}, {} bytes; the chunk header at \
                     byte {} says {} events, seqs {}..={}, {} bytes",
                    c.count,
                    c.first_seq,
                    c.last_seq,
                    c.compressed_len,
                    c.offset,
                    h.count,
                    h.first_seq,
                    h.last_seq,
                    h.compressed_len
                ));
            }
            next = end;
        }
        if next != index_at {
            return Err(if chunks.is_empty() {
                format!("it lists no chunks, but bytes {next}..{index_at} lie before it")
            } else {
                format!("bytes {next}..{index_at} before the index belong to no entry")
            });
        }
        Ok(())
    }

    /// Walks chunk headers from `pos`, seeking over payloads.
    fn scan(&mut self, mut pos: u64) -> Result<()> {
        let mut faults = Faults::default();
        while pos < self.file_len {
            let left = self.file_len - pos;
            if left < CHUNK_HEADER_LEN as u64 {
                let n = self.chunks.len();
                self.problems
                    .push(truncated(pos, n, "inside a chunk header"));
                break;
            }
            let mut hb = [0u8; CHUNK_HEADER_LEN];
            self.source.read_at(&mut hb, pos)?;
            match ChunkHeader::parse(&hb) {
                Ok(h) => {
                    let end = pos + CHUNK_HEADER_LEN as u64 + h.compressed_len as u64;
                    if end > self.file_len {
                        let n = self.chunks.len();
                        self.problems
                            .push(truncated(pos, n, "inside a chunk's payload"));
                        break;
                    }
                    let info = ChunkInfo {
                        offset: pos,
                        compressed_len: h.compressed_len,
                        count: h.count,
                        first_seq: h.first_seq,
                        last_seq: h.last_seq,
                        kind: h.kind,
                    };
                    if h.kind == ChunkKind::Events {
                        self.chunks.push(info);
                    } else if matches!(h.kind, ChunkKind::Stacks | ChunkKind::Modules) {
                        self.aux.push(info);
                    } else if end + TRAILER_LEN as u64 >= self.file_len {
                        // The index and trailer at the end, damaged or cut: nothing follows.
                        if end + (TRAILER_LEN as u64) > self.file_len {
                            let n = self.chunks.len();
                            self.problems.push(truncated(end, n, "inside the trailer"));
                        }
                        break;
                    }
                    pos = end;
                }
                Err(fault) => {
                    faults.note(&mut self.problems, pos, fault.to_string());
                    match self.resync(pos + 1)? {
                        Some(next) => pos = next,
                        None => break,
                    }
                }
            }
        }
        faults.finish(&mut self.problems);
        Ok(())
    }

    /// Finds the next offset at or after `from` holding a valid chunk header.
    fn resync(&self, from: u64) -> Result<Option<u64>> {
        const WINDOW: usize = 1 << 20;
        let mut start = from;
        let mut buf = vec![0u8; WINDOW + CHUNK_HEADER_LEN];
        while start + CHUNK_HEADER_LEN as u64 <= self.file_len {
            let n = ((self.file_len - start) as usize).min(buf.len());
            self.source.read_at(&mut buf[..n], start)?;
            for i in 0..n.saturating_sub(CHUNK_HEADER_LEN - 1) {
                if buf[i..i + 4] == CHUNK_MAGIC {
                    let hb: &[u8; CHUNK_HEADER_LEN] =
                        buf[i..i + CHUNK_HEADER_LEN].try_into().unwrap();
                    if ChunkHeader::parse(hb).is_ok() {
                        return Ok(Some(start + i as u64));
                    }
                }
            }
            start += WINDOW as u64;
        }
        Ok(None)
    }

    /// Reads, checks and decodes one event chunk into `out` (at most 2^20 events: 80 MiB).
    pub fn read_chunk(&self, info: &ChunkInfo, out: &mut Vec<Event>) -> Result<()> {
        let mut chunk = load_chunk(&self.source, self.file_len, info)?;
        chunk
            .next_batch(out, usize::MAX)
            .map_err(|f| corrupt(info.offset, f.to_string()))
    }

    /// Events in global seq order. After the last good event come the problems: repeated and
    /// missing sequence numbers, then those of [`TraceReader::problems`], each as an `Err`.
    /// Memory is bounded (see `MAX_MERGE_BYTES`).
    pub fn events(&self) -> Events<'_> {
        Events::new(self)
    }

    /// Applies `f` to every chunk's events in parallel (rayon), in no particular order of work;
    /// results come back in file order. `f` sees a chunk's events in batches of at most 65,536
    /// (one or more calls per chunk), so that memory stays small whatever a chunk holds; a
    /// damaged chunk can be found after `f` saw some of its events, and then the whole call is an
    /// `Err`. For statistics that do not need global order.
    pub fn par_map_chunks<R, F>(&self, f: F) -> Result<Vec<R>>
    where
        R: Send,
        F: Fn(&[Event]) -> R + Sync + Send,
    {
        let per_chunk: Result<Vec<Vec<R>>> = self
            .chunks
            .par_iter()
            .map_init(Vec::new, |buf, info| {
                let mut chunk = load_chunk(&self.source, self.file_len, info)?;
                let mut results = Vec::new();
                loop {
                    chunk
                        .next_batch(buf, PAR_BATCH)
                        .map_err(|f| corrupt(info.offset, f.to_string()))?;
                    if buf.is_empty() {
                        return Ok(results);
                    }
                    results.push(f(buf));
                }
            })
            .collect();
        Ok(per_chunk?.into_iter().flatten().collect())
    }
}

/// Counts the damaged places a scan meets: the first few are reported one by one, the rest in
/// one problem (a file full of damage must not print a line per damaged header).
#[derive(Default)]
struct Faults {
    seen: usize,
    first_unreported: u64,
    last: u64,
}

impl Faults {
    fn note(&mut self, problems: &mut Vec<TraceError>, offset: u64, what: String) {
        self.seen += 1;
        if self.seen <= REPORTED_FAULTS {
            problems.push(corrupt(
                offset,
                format!("{what}; scanning on for the next good chunk"),
            ));
        } else {
            if self.seen == REPORTED_FAULTS + 1 {
                self.first_unreported = offset;
            }
            self.last = offset;
        }
    }

    fn finish(self, problems: &mut Vec<TraceError>) {
        if self.seen > REPORTED_FAULTS {
            problems.push(corrupt(
                self.first_unreported,
                format!(
                    "{} more damaged places up to byte {}, each skipped to the next good chunk",
                    self.seen - REPORTED_FAULTS,
                    self.last
                ),
            ));
        }
    }
}

/// Reads and validates the chunk header at `offset` and its payload bytes.
fn read_chunk_at(source: &Source, file_len: u64, offset: u64) -> Result<(ChunkHeader, Vec<u8>)> {
    let h = read_header_at(source, file_len, offset)?;
    let payload = read_payload(source, file_len, offset, &h)?;
    Ok((h, payload))
}

/// The payload of the chunk at `offset` whose header is `h`.
fn read_payload(source: &Source, file_len: u64, offset: u64, h: &ChunkHeader) -> Result<Vec<u8>> {
    let end = offset + CHUNK_HEADER_LEN as u64 + h.compressed_len as u64;
    if end > file_len {
        return Err(truncated(
            offset,
            0,
            "chunk length points past the end of the file",
        ));
    }
    // compressed_len is bounded by MAX_PAYLOAD (checked in parse) and by the file size.
    let mut payload = vec![0u8; h.compressed_len as usize];
    source.read_at(&mut payload, offset + CHUNK_HEADER_LEN as u64)?;
    Ok(payload)
}

fn read_header_at(source: &Source, file_len: u64, offset: u64) -> Result<ChunkHeader> {
    if offset.saturating_add(CHUNK_HEADER_LEN as u64) > file_len {
        return Err(truncated(
            offset,
            0,
            "chunk header past the end of the file",
        ));
    }
    let mut hb = [0u8; CHUNK_HEADER_LEN];
    source.read_at(&mut hb, offset)?;
    ChunkHeader::parse(&hb).map_err(|f| corrupt(offset, f.to_string()))
}

/// The header of the event chunk `info` describes, checked against `info`: what the merge
/// budgets with before it reads the payload.
pub(crate) fn chunk_header(
    source: &Source,
    file_len: u64,
    info: &ChunkInfo,
) -> Result<ChunkHeader> {
    let h = read_header_at(source, file_len, info.offset)?;
    let directory = (
        info.compressed_len,
        info.count,
        info.first_seq,
        info.last_seq,
    );
    if h.kind != ChunkKind::Events
        || (h.compressed_len, h.count, h.first_seq, h.last_seq) != directory
    {
        return Err(corrupt(
            info.offset,
            "chunk header does not match the chunk directory".into(),
        ));
    }
    Ok(h)
}

/// Reads and checks the event chunk `info` describes.
pub(crate) fn load_chunk(source: &Source, file_len: u64, info: &ChunkInfo) -> Result<EventChunk> {
    let h = chunk_header(source, file_len, info)?;
    load_payload(source, file_len, info, &h)
}

/// Reads and checks the payload of the event chunk `info` describes, whose header is `h` (from
/// [`chunk_header`]). Memory: the compressed payload while decompressing, then the decompressed
/// one (`h.uncompressed_len`).
pub(crate) fn load_payload(
    source: &Source,
    file_len: u64,
    info: &ChunkInfo,
    h: &ChunkHeader,
) -> Result<EventChunk> {
    let payload = read_payload(source, file_len, info.offset, h)?;
    EventChunk::new(h, &payload).map_err(|f| corrupt(info.offset, f.to_string()))
}

/// [`load_payload`], with every event checked before any is used (what the ordered merge needs).
pub(crate) fn load_checked(
    source: &Source,
    file_len: u64,
    info: &ChunkInfo,
    h: &ChunkHeader,
) -> Result<EventChunk> {
    let chunk = load_payload(source, file_len, info, h)?;
    chunk
        .check()
        .map_err(|f| corrupt(info.offset, f.to_string()))?;
    Ok(chunk)
}

pub(crate) fn corrupt(offset: u64, what: String) -> TraceError {
    TraceError::Corrupt { offset, what }
}

fn truncated(offset: u64, chunks: usize, what: &str) -> TraceError {
    TraceError::Truncated {
        offset,
        chunks,
        what: what.to_string(),
    }
}
