//! [`TraceReader`]: opens an `.atrace` file, finds its chunks and yields events in seq order.
//!
//! Finding chunks: a cleanly finished file ends with an index (a chunk directory) and a trailer;
//! the reader uses it without touching the rest. Otherwise (a recording that was killed, or a
//! damaged index) it scans chunk headers from the start, seeking over payloads, and notes where
//! and why the scan stopped.
//!
//! Ordering: chunks hold seq-sorted events, but chunks of different threads interleave. The
//! iterator visits chunks by `first_seq` and merges them: an event is emitted once it is smaller
//! than the first seq of every chunk not yet loaded and the head of every loaded one. Memory is
//! bounded by the chunks whose seq ranges overlap (about one per live thread) plus a few chunks
//! that a decoder thread prepares ahead of the consumer. `par_map_chunks` decodes every chunk in
//! parallel (rayon) for work that does not need order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{mpsc, Arc};

use rayon::prelude::*;

use crate::chunk::{
    decode_events, decompress, ChunkFault, ChunkHeader, ChunkKind, CHUNK_HEADER_LEN, CHUNK_MAGIC,
};
use crate::end::EndStatus;
use crate::event::{Event, Header};
use crate::file::{
    decode_index, parse_fixed, parse_metadata, FILE_HEADER_LEN, TRAILER_LEN, TRAILER_MAGIC,
};
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
}

/// How the chunk directory was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Directory {
    /// From the index footer of a cleanly finished file.
    Index,
    /// By scanning: the file has no (valid) index.
    Scanned,
}

pub struct TraceReader {
    /// Shared with background decoders of the event iterator.
    file: Arc<File>,
    header: Header,
    file_len: u64,
    chunks: Vec<ChunkInfo>,
    directory: Directory,
    /// Format version that wrote the file.
    version: u16,
    /// Byte offset of the first chunk (after the header, metadata and its checksum).
    data_start: u64,
    /// How the recording ended, from the index of a finished file (None: no valid index).
    end: Option<EndStatus>,
    /// Problems found while scanning (a truncated tail, a damaged chunk header); yielded by the
    /// event iterator after every good event.
    problems: Vec<TraceError>,
}

impl TraceReader {
    pub fn open(path: &Path) -> Result<TraceReader> {
        let file = File::open(path)?;
        let file_len = file.metadata()?.len();
        let mut fixed = [0u8; FILE_HEADER_LEN];
        if file_len < FILE_HEADER_LEN as u64 {
            let mut head = vec![0u8; file_len as usize];
            file.read_exact_at(&mut head, 0)?;
            if crate::file::FILE_MAGIC.starts_with(&head[..head.len().min(8)]) && !head.is_empty() {
                return Err(truncated(file_len, 0, "inside the file header"));
            }
            return Err(TraceError::NotATrace);
        }
        file.read_exact_at(&mut fixed, 0)?;
        let (version, meta_len) = parse_fixed(&fixed)?;
        let data_start = (FILE_HEADER_LEN + meta_len as usize + 4) as u64;
        if file_len < data_start {
            return Err(truncated(file_len, 0, "inside the metadata"));
        }
        let mut all = vec![0u8; data_start as usize];
        file.read_exact_at(&mut all, 0)?;
        let header = parse_metadata(&all)?;

        let mut reader = TraceReader {
            file: Arc::new(file),
            header,
            file_len,
            chunks: Vec::new(),
            directory: Directory::Index,
            version,
            data_start,
            end: None,
            problems: Vec::new(),
        };
        match reader.read_index(data_start) {
            Some((chunks, end)) => {
                reader.chunks = chunks;
                reader.end = Some(end);
            }
            None => {
                reader.directory = Directory::Scanned;
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

    pub fn directory(&self) -> Directory {
        self.directory
    }

    /// How the recording ended, from the end status of a finished file; None when the file has
    /// no valid index (the recording was cut off, or the index is damaged).
    pub fn end_status(&self) -> Option<&EndStatus> {
        self.end.as_ref()
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

    /// Events in the chunk directory (what a full read yields when no chunk is corrupt).
    pub fn event_count(&self) -> u64 {
        self.chunks.iter().map(|c| c.count as u64).sum()
    }

    /// Problems found when the chunks were located (scanned files only).
    pub fn problems(&self) -> &[TraceError] {
        &self.problems
    }

    /// The index footer and end status, if they are there and consistent; `None` sends the reader
    /// to a scan.
    fn read_index(&self, data_start: u64) -> Option<(Vec<ChunkInfo>, EndStatus)> {
        let min_len = data_start + (CHUNK_HEADER_LEN + TRAILER_LEN) as u64;
        if self.file_len < min_len {
            return None;
        }
        let mut trailer = [0u8; TRAILER_LEN];
        self.file
            .read_exact_at(&mut trailer, self.file_len - TRAILER_LEN as u64)
            .ok()?;
        if trailer[8..] != TRAILER_MAGIC {
            return None;
        }
        let index_at = u64::from_le_bytes(trailer[..8].try_into().unwrap());
        if index_at < data_start || index_at > self.file_len - min_len + data_start {
            return None;
        }
        let (h, payload) = self.read_chunk_at(index_at).ok()?;
        if h.kind != ChunkKind::Index
            || index_at + (CHUNK_HEADER_LEN as u64) + h.compressed_len as u64 + TRAILER_LEN as u64
                != self.file_len
        {
            return None;
        }
        let raw = decompress(&h, &payload).ok()?;
        let (chunks, end) = decode_index(&raw, h.count, self.version).ok()?;
        let mut next_min = data_start;
        for c in &chunks {
            let end = c.offset + CHUNK_HEADER_LEN as u64 + c.compressed_len as u64;
            if c.offset < next_min || end > index_at || c.last_seq < c.first_seq {
                return None;
            }
            next_min = end;
        }
        Some((chunks, end))
    }

    /// Walks chunk headers from `pos`, seeking over payloads.
    fn scan(&mut self, mut pos: u64) -> Result<()> {
        while pos < self.file_len {
            let left = self.file_len - pos;
            if left < CHUNK_HEADER_LEN as u64 {
                let n = self.chunks.len();
                self.problems
                    .push(truncated(pos, n, "inside a chunk header"));
                return Ok(());
            }
            let mut hb = [0u8; CHUNK_HEADER_LEN];
            self.file.read_exact_at(&mut hb, pos)?;
            match ChunkHeader::parse(&hb) {
                Ok(h) => {
                    let end = pos + CHUNK_HEADER_LEN as u64 + h.compressed_len as u64;
                    if end > self.file_len {
                        let n = self.chunks.len();
                        self.problems
                            .push(truncated(pos, n, "inside a chunk's payload"));
                        return Ok(());
                    }
                    if h.kind == ChunkKind::Events {
                        self.chunks.push(ChunkInfo {
                            offset: pos,
                            compressed_len: h.compressed_len,
                            count: h.count,
                            first_seq: h.first_seq,
                            last_seq: h.last_seq,
                        });
                    } else if end + TRAILER_LEN as u64 >= self.file_len {
                        // The index and trailer at the end, damaged or cut: nothing follows.
                        if end + (TRAILER_LEN as u64) > self.file_len {
                            let n = self.chunks.len();
                            self.problems.push(truncated(end, n, "inside the trailer"));
                        }
                        return Ok(());
                    }
                    pos = end;
                }
                Err(fault) => {
                    self.problems.push(TraceError::Corrupt {
                        offset: pos,
                        what: format!("{fault}; scanning on for the next good chunk"),
                    });
                    match self.resync(pos + 1)? {
                        Some(next) => pos = next,
                        None => return Ok(()),
                    }
                }
            }
        }
        Ok(())
    }

    /// Finds the next offset at or after `from` holding a valid chunk header.
    fn resync(&self, from: u64) -> Result<Option<u64>> {
        const WINDOW: usize = 1 << 20;
        let mut start = from;
        let mut buf = vec![0u8; WINDOW + CHUNK_HEADER_LEN];
        while start + CHUNK_HEADER_LEN as u64 <= self.file_len {
            let n = ((self.file_len - start) as usize).min(buf.len());
            self.file.read_exact_at(&mut buf[..n], start)?;
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

    /// Reads and validates the chunk header at `offset` and its payload bytes.
    fn read_chunk_at(&self, offset: u64) -> Result<(ChunkHeader, Vec<u8>)> {
        read_chunk_at(&self.file, self.file_len, offset)
    }

    /// Reads and decodes one event chunk.
    pub fn read_chunk(&self, info: &ChunkInfo, out: &mut Vec<Event>) -> Result<()> {
        read_events(&self.file, self.file_len, info, out)
    }

    /// Events in global seq order. After the last good event come the problems found (a
    /// truncated tail, corrupt chunks), each as an `Err`.
    pub fn events(&self) -> Events<'_> {
        let mut order: Vec<ChunkInfo> = self.chunks.clone();
        order.sort_by_key(|c| (c.first_seq, c.offset));
        Events {
            reader: self,
            pending: order.into(),
            decoded: None,
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            current: None,
            bound: 0,
            last_seq: None,
            errors: self.problems.iter().map(clone_error).collect(),
        }
    }

    /// Applies `f` to every chunk's events in parallel (rayon), in no particular order of work;
    /// results come back in file order. For statistics that do not need global order.
    pub fn par_map_chunks<R, F>(&self, f: F) -> Result<Vec<R>>
    where
        R: Send,
        F: Fn(&[Event]) -> R + Sync + Send,
    {
        self.chunks
            .par_iter()
            .map_init(Vec::new, |buf, info| {
                self.read_chunk(info, buf)?;
                Ok(f(buf))
            })
            .collect()
    }
}

/// Reads and validates the chunk header at `offset` and its payload bytes.
fn read_chunk_at(file: &File, file_len: u64, offset: u64) -> Result<(ChunkHeader, Vec<u8>)> {
    let corrupt = |f: ChunkFault| TraceError::Corrupt {
        offset,
        what: f.to_string(),
    };
    let mut hb = [0u8; CHUNK_HEADER_LEN];
    file.read_exact_at(&mut hb, offset)?;
    let h = ChunkHeader::parse(&hb).map_err(corrupt)?;
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
    file.read_exact_at(&mut payload, offset + CHUNK_HEADER_LEN as u64)?;
    Ok((h, payload))
}

/// Reads and decodes the event chunk `info` describes.
fn read_events(file: &File, file_len: u64, info: &ChunkInfo, out: &mut Vec<Event>) -> Result<()> {
    let (h, payload) = read_chunk_at(file, file_len, info.offset)?;
    let corrupt = |what: String| TraceError::Corrupt {
        offset: info.offset,
        what,
    };
    if h.kind != ChunkKind::Events || h.first_seq != info.first_seq || h.count != info.count {
        return Err(corrupt("chunk header does not match the index".into()));
    }
    decode_events(&h, &payload, out).map_err(|f| corrupt(f.to_string()))
}

fn truncated(offset: u64, chunks: usize, what: &str) -> TraceError {
    TraceError::Truncated {
        offset,
        chunks,
        what: what.to_string(),
    }
}

fn clone_error(e: &TraceError) -> TraceError {
    match e {
        TraceError::Truncated {
            offset,
            chunks,
            what,
        } => TraceError::Truncated {
            offset: *offset,
            chunks: *chunks,
            what: what.clone(),
        },
        TraceError::Corrupt { offset, what } => TraceError::Corrupt {
            offset: *offset,
            what: what.clone(),
        },
        other => TraceError::Invalid(other.to_string()),
    }
}

/// A decoded chunk being merged.
struct Loaded {
    events: Vec<Event>,
    pos: usize,
}

/// Iterator over a trace's events in global seq order; see the module comment.
pub struct Events<'r> {
    reader: &'r TraceReader,
    /// Chunks not yet decoded, by first_seq.
    pending: VecDeque<ChunkInfo>,
    /// Decoded chunks, in `pending` order, from the decoder thread (started on first use).
    decoded: Option<mpsc::Receiver<Result<Vec<Event>>>>,
    /// Loaded chunks that are not current, keyed by their next seq.
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    slots: Vec<Option<Loaded>>,
    current: Option<Loaded>,
    /// The current chunk may emit while its next seq is at most this.
    bound: u64,
    last_seq: Option<u64>,
    errors: VecDeque<TraceError>,
}

/// Decoded chunks the decoder thread may hold ahead of the consumer.
const READ_AHEAD: usize = 4;

impl Events<'_> {
    fn next_pending_seq(&self) -> u64 {
        self.pending.front().map_or(u64::MAX, |c| c.first_seq)
    }

    fn heap_top_seq(&self) -> u64 {
        self.heap.peek().map_or(u64::MAX, |Reverse((s, _))| *s)
    }

    fn park(&mut self, loaded: Loaded) {
        let seq = loaded.events[loaded.pos].seq;
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.slots[slot] = Some(loaded);
        self.heap.push(Reverse((seq, slot)));
    }

    /// Decodes the chunk at the front of `pending` (and removes it from there).
    ///
    /// A decoder thread, started on first use, decodes the chunks in `pending` order a few ahead
    /// of the consumer (a bounded channel holds at most [`READ_AHEAD`] decoded chunks), so that
    /// decoding overlaps the caller's work. It is a plain thread, not a rayon task: callers may
    /// iterate from inside rayon's pool, where blocking on pool work could deadlock. When the
    /// thread cannot be started, chunks are decoded here instead.
    fn next_chunk(&mut self) -> Result<Vec<Event>> {
        let info = self.pending.pop_front().expect("a pending chunk");
        if self.decoded.is_none() {
            self.decoded = self.start_decoder(info);
        }
        match &self.decoded {
            Some(rx) => rx.recv().unwrap_or_else(|_| {
                Err(TraceError::Invalid(
                    "the chunk decoder thread stopped unexpectedly".into(),
                ))
            }),
            None => {
                let mut out = Vec::new();
                self.reader.read_chunk(&info, &mut out).map(|()| out)
            }
        }
    }

    /// Starts the decoder thread for `first` and every chunk still pending after it.
    fn start_decoder(&self, first: ChunkInfo) -> Option<mpsc::Receiver<Result<Vec<Event>>>> {
        let chunks: Vec<ChunkInfo> = std::iter::once(first)
            .chain(self.pending.iter().copied())
            .collect();
        let (tx, rx) = mpsc::sync_channel(READ_AHEAD);
        let file = Arc::clone(&self.reader.file);
        let file_len = self.reader.file_len;
        let spawned = std::thread::Builder::new()
            .name("atrace-decode".into())
            .spawn(move || {
                for info in &chunks {
                    let mut out = Vec::with_capacity(info.count as usize);
                    let r = read_events(&file, file_len, info, &mut out).map(|()| out);
                    // A send fails once the iterator is dropped: nobody wants the rest.
                    if tx.send(r).is_err() {
                        return;
                    }
                }
            });
        // Without a thread, `next_chunk` decodes in the caller.
        spawned.ok().map(|_| rx)
    }

    fn refresh_bound(&mut self) {
        self.bound = self.next_pending_seq().min(self.heap_top_seq());
    }
}

impl Iterator for Events<'_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(cur) = &mut self.current {
                if let Some(ev) = cur.events.get(cur.pos) {
                    // `<=`: a seq equal to the bound can only be a duplicate (caught below), and
                    // emitting it is what keeps two chunks tied on one seq from looping forever.
                    if ev.seq <= self.bound {
                        let ev = *ev;
                        cur.pos += 1;
                        if self.last_seq.is_some_and(|last| ev.seq <= last) {
                            return Some(Err(TraceError::Invalid(format!(
                                "sequence number {} appears in two chunks",
                                ev.seq
                            ))));
                        }
                        self.last_seq = Some(ev.seq);
                        return Some(Ok(ev));
                    }
                    let cur = self.current.take().unwrap();
                    self.park(cur);
                } else {
                    self.current = None;
                }
            }
            // Choose the next current chunk: a new one if it starts first, else the heap's top.
            if self.next_pending_seq() < self.heap_top_seq() {
                match self.next_chunk() {
                    Ok(events) if !events.is_empty() => {
                        self.current = Some(Loaded { events, pos: 0 })
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.refresh_bound();
                        return Some(Err(e));
                    }
                }
            } else if let Some(Reverse((_, slot))) = self.heap.pop() {
                self.current = self.slots[slot].take();
            } else {
                return self.errors.pop_front().map(Err);
            }
            self.refresh_bound();
        }
    }
}
