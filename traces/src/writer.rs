//! [`TraceWriter`]: streams events into an `.atrace` file without knowing where it ends.
//!
//! Each chunk goes to the sink in one `write_all`, so a process killed between writes leaves only
//! whole chunks (and no index, which readers then rebuild by scanning).
//!
//! A trace is finished by its index chunk, which ends with the [`EndStatus`], and the trailer.
//! Writers whose sink can go back ([`Rewind`]) can also *checkpoint*: write the index and trailer
//! and keep going, the next chunk replacing them (the recorder does this at exit, when a few late
//! frees may still follow), and [`TraceWriter::resume`] reopens a trace to append to it (what
//! `allocscope record` does with the events a dead process left in its buffers).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::chunk::{
    ChunkEncoder, ChunkKind, CHUNK_HEADER_LEN, MAX_CHUNK_EVENTS, MAX_CHUNK_MODULES, MAX_CHUNK_NODES,
};
use crate::end::EndStatus;
use crate::event::{Event, Header};
use crate::file::{encode_header, encode_index, parse_fixed, FILE_HEADER_LEN, TRAILER_MAGIC};
use crate::reader::{ChunkInfo, TraceReader};
use crate::{Result, TraceError};

/// A sink that can cut itself at `len` bytes and continue writing there.
pub trait Rewind: Write {
    fn rewind_to(&mut self, len: u64) -> std::io::Result<()>;
}

impl Rewind for File {
    fn rewind_to(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)?;
        self.seek(SeekFrom::Start(len))?;
        Ok(())
    }
}

impl Rewind for Vec<u8> {
    fn rewind_to(&mut self, len: u64) -> std::io::Result<()> {
        self.truncate(len as usize);
        Ok(())
    }
}

/// Tuning for a writer.
#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// Events per chunk for [`TraceWriter::push`]; larger chunks compress better.
    pub chunk_events: usize,
    /// zstd level (1 = fastest; 3 is zstd's default).
    pub zstd_level: i32,
    /// The file will hold stack or module chunks: its header asks for a reader of format 3.
    pub stacks: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            chunk_events: 1 << 16,
            zstd_level: 3,
            stacks: false,
        }
    }
}

pub struct TraceWriter<W: Write> {
    sink: W,
    /// Bytes written so far: the offset of the next chunk.
    pos: u64,
    options: WriterOptions,
    pending: Vec<Event>,
    encoder: ChunkEncoder,
    buf: Vec<u8>,
    index: Vec<ChunkInfo>,
    events_written: u64,
    /// After a checkpoint: where its index starts (the next chunk goes there) and how to cut the
    /// sink back to it (set by [`TraceWriter::checkpoint`], which knows the sink can rewind).
    checkpoint: Option<(u64, RewindFn<W>)>,
}

/// How a writer cuts its sink back to a checkpoint's index.
type RewindFn<W> = fn(&mut W, u64) -> std::io::Result<()>;

/// A trace reopened for appending: see [`TraceWriter::resume`].
pub struct Resumed {
    pub writer: TraceWriter<File>,
    pub header: Header,
    /// Events in the chunks kept.
    pub events: u64,
    /// Bytes cut from the end (a partial chunk, an old index and trailer).
    pub cut_bytes: u64,
}

impl TraceWriter<File> {
    /// Creates a new trace file: mode 0600, never over an existing file, never through a symlink.
    pub fn create(path: &Path, header: &Header) -> Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        TraceWriter::new(file, header)
    }
}

impl<W: Write> TraceWriter<W> {
    pub fn new(sink: W, header: &Header) -> Result<Self> {
        Self::with_options(sink, header, WriterOptions::default())
    }

    pub fn with_options(mut sink: W, header: &Header, options: WriterOptions) -> Result<Self> {
        let min_reader = if options.stacks {
            crate::file::MIN_READER_WITH_STACKS
        } else {
            crate::file::MIN_READER_VERSION
        };
        let bytes = encode_header(header, min_reader);
        sink.write_all(&bytes)?;
        let chunk_events = options.chunk_events.clamp(1, MAX_CHUNK_EVENTS as usize);
        Ok(TraceWriter {
            sink,
            pos: bytes.len() as u64,
            options: WriterOptions {
                chunk_events,
                ..options
            },
            // Allocated on the first `push`: writers that only write whole chunks (the recorder)
            // never need it.
            pending: Vec::new(),
            encoder: ChunkEncoder::default(),
            buf: Vec::new(),
            index: Vec::new(),
            events_written: 0,
            checkpoint: None,
        })
    }

    /// Adds one event of a single ordered stream (seq strictly increasing across calls).
    pub fn push(&mut self, ev: &Event) -> Result<()> {
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(self.options.chunk_events);
        }
        if let Some(last) = self.pending.last() {
            if ev.seq <= last.seq {
                return Err(TraceError::Invalid(format!(
                    "event seq {} pushed after seq {}: push needs increasing sequence numbers",
                    ev.seq, last.seq
                )));
            }
        }
        self.pending.push(*ev);
        if self.pending.len() >= self.options.chunk_events {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.pending);
        let watermark = events.last().map_or(0, |e| e.seq + 1);
        let r = self.write_chunk(&events, watermark);
        self.pending = events;
        self.pending.clear();
        r
    }

    /// Writes `events` (seq strictly increasing) as one chunk, in one write. `watermark` promises
    /// that every event with a smaller seq is in this chunk or an earlier one (0 promises nothing).
    /// Chunks from different threads may interleave in any order; readers merge them by seq.
    pub fn write_chunk(&mut self, events: &[Event], watermark: u64) -> Result<()> {
        self.buf.clear();
        self.encoder
            .encode(events, watermark, self.options.zstd_level, &mut self.buf)
            .map_err(|f| TraceError::Invalid(format!("cannot encode chunk: {f}")))?;
        self.put_chunk(events)
    }

    fn put_chunk(&mut self, events: &[Event]) -> Result<()> {
        let (first, last) = (events[0].seq, events[events.len() - 1].seq);
        self.put(ChunkKind::Events, events.len() as u32, first, last)?;
        self.events_written += events.len() as u64;
        Ok(())
    }

    /// Writes the chunk in `buf` (one write) and lists it in the index.
    fn put(&mut self, kind: ChunkKind, count: u32, first_seq: u64, last_seq: u64) -> Result<()> {
        self.undo_checkpoint()?;
        self.sink.write_all(&self.buf)?;
        self.index.push(ChunkInfo {
            offset: self.pos,
            compressed_len: (self.buf.len() - crate::chunk::CHUNK_HEADER_LEN) as u32,
            count,
            first_seq,
            last_seq,
            kind,
        });
        self.pos += self.buf.len() as u64;
        Ok(())
    }

    /// Writes stack-trie nodes `first ..` (each (parent, return address); see `traces::stacks`)
    /// as one chunk per at most 2^20 nodes. Write them before any event that refers to them: a
    /// file cut anywhere then has the nodes of every event it still holds.
    pub fn write_stacks(&mut self, first: u32, nodes: &[(u32, u64)]) -> Result<()> {
        for (i, part) in nodes.chunks(MAX_CHUNK_NODES as usize).enumerate() {
            let first = first + (i * MAX_CHUNK_NODES as usize) as u32;
            let mut raw = Vec::with_capacity(part.len() * 4);
            crate::stacks::encode_nodes(first, part, &mut raw);
            let (lo, hi) = (first as u64, first as u64 + part.len() as u64 - 1);
            self.buf.clear();
            self.encoder
                .write_chunk(
                    ChunkKind::Stacks,
                    &raw,
                    part.len() as u32,
                    (lo, hi, 0, 0),
                    self.options.zstd_level,
                    &mut self.buf,
                )
                .map_err(|f| TraceError::Invalid(format!("cannot encode stack chunk: {f}")))?;
            self.put(ChunkKind::Stacks, part.len() as u32, lo, hi)?;
        }
        Ok(())
    }

    /// Writes module records (new modules, or unloads of earlier ones: a record replaces the
    /// one with the same id).
    pub fn write_modules(&mut self, modules: &[crate::stacks::Module]) -> Result<()> {
        for part in modules.chunks(MAX_CHUNK_MODULES as usize) {
            let raw = serde_json::to_vec(part).expect("modules serialise");
            self.buf.clear();
            self.encoder
                .write_chunk(
                    ChunkKind::Modules,
                    &raw,
                    part.len() as u32,
                    (0, 0, 0, 0),
                    self.options.zstd_level,
                    &mut self.buf,
                )
                .map_err(|f| TraceError::Invalid(format!("cannot encode module chunk: {f}")))?;
            self.put(ChunkKind::Modules, part.len() as u32, 0, 0)?;
        }
        Ok(())
    }

    /// Writes pending events as a chunk and flushes the sink.
    pub fn flush(&mut self) -> Result<()> {
        self.write_pending()?;
        self.sink.flush()?;
        Ok(())
    }

    /// Events written to the sink so far (pending ones not included).
    pub fn events_written(&self) -> u64 {
        self.events_written
    }

    /// Bytes written to the sink so far.
    pub fn bytes_written(&self) -> u64 {
        self.pos
    }

    /// Cuts the index and trailer of the last checkpoint: what comes next replaces them.
    fn undo_checkpoint(&mut self) -> Result<()> {
        if let Some((at, rewind)) = self.checkpoint.take() {
            rewind(&mut self.sink, at)?;
        }
        Ok(())
    }

    /// Writes the index (with `end`) and the trailer at the current position. An index larger
    /// than one chunk's payload limit (about 2 million chunks) is left out: readers then scan,
    /// which is slower but complete.
    fn put_index(&mut self, end: &EndStatus) -> Result<()> {
        let raw = encode_index(&self.index, end);
        self.buf.clear();
        let fits = self
            .encoder
            .write_chunk(
                ChunkKind::Index,
                &raw,
                self.index.len() as u32,
                (0, 0, 0, 0),
                self.options.zstd_level,
                &mut self.buf,
            )
            .is_ok();
        if fits {
            self.buf.extend_from_slice(&self.pos.to_le_bytes());
            self.buf.extend_from_slice(&TRAILER_MAGIC);
            self.sink.write_all(&self.buf)?;
        }
        Ok(())
    }

    /// Writes pending events, the index footer and the trailer of a trace written whole by a tool;
    /// returns the sink.
    pub fn finish(self) -> Result<W> {
        self.finish_with(&EndStatus::complete())
    }

    /// Writes pending events, the index footer with `end` and the trailer; returns the sink.
    pub fn finish_with(mut self, end: &EndStatus) -> Result<W> {
        self.write_pending()?;
        self.undo_checkpoint()?;
        self.put_index(end)?;
        self.sink.flush()?;
        Ok(self.sink)
    }
}

impl<W: Rewind> TraceWriter<W> {
    /// Finishes the trace as it stands (pending events, index with `end`, trailer) but stays open:
    /// the next chunk, checkpoint or finish replaces that index and trailer. A process killed in
    /// between leaves whole chunks and no index, which readers find by a scan.
    pub fn checkpoint(&mut self, end: &EndStatus) -> Result<()> {
        self.write_pending()?;
        self.undo_checkpoint()?;
        self.put_index(end)?;
        self.sink.flush()?;
        self.checkpoint = Some((self.pos, W::rewind_to));
        Ok(())
    }
}

impl TraceWriter<File> {
    /// Reopens the trace at `path` for appending: keeps every chunk a reader finds (by its index,
    /// or by a scan of a cut file), cuts what follows the last of them (a partial chunk, an old
    /// index and trailer) and continues there. Never follows a symlink.
    pub fn resume(path: &Path, options: WriterOptions) -> Result<Resumed> {
        let reader = TraceReader::open(path)?;
        let header = reader.header().clone();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let mut fixed = [0u8; FILE_HEADER_LEN];
        file.read_exact_at(&mut fixed, 0)
            .map_err(TraceError::Read)?;
        parse_fixed(&fixed)?;
        let mut index: Vec<ChunkInfo> = reader.chunks().to_vec();
        index.extend_from_slice(reader.aux_chunks());
        index.sort_by_key(|c| c.offset);
        let keep = index.last().map_or(reader.data_start(), |c| {
            c.offset + CHUNK_HEADER_LEN as u64 + c.compressed_len as u64
        });
        let len = file.metadata().map_err(TraceError::Read)?.len();
        file.rewind_to(keep)?;
        let chunk_events = options.chunk_events.clamp(1, MAX_CHUNK_EVENTS as usize);
        let events = index
            .iter()
            .filter(|c| c.kind == ChunkKind::Events)
            .map(|c| c.count as u64)
            .sum();
        let writer = TraceWriter {
            sink: file,
            pos: keep,
            options: WriterOptions {
                chunk_events,
                ..options
            },
            pending: Vec::new(),
            encoder: ChunkEncoder::default(),
            buf: Vec::new(),
            index,
            events_written: events,
            checkpoint: None,
        };
        Ok(Resumed {
            writer,
            header,
            events,
            cut_bytes: len - keep,
        })
    }
}
