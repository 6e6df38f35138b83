//! [`TraceWriter`]: streams events into an `.atrace` file without knowing where it ends.
//!
//! Each chunk goes to the sink in one `write_all`, so a process killed between writes leaves only
//! whole chunks (and no index, which readers then rebuild by scanning).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::chunk::{ChunkEncoder, ChunkKind, MAX_CHUNK_EVENTS};
use crate::event::{Event, Header};
use crate::file::{encode_header, INDEX_ENTRY_LEN, TRAILER_MAGIC};
use crate::reader::ChunkInfo;
use crate::{Result, TraceError};

/// Tuning for a writer.
#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// Events per chunk for [`TraceWriter::push`]; larger chunks compress better.
    pub chunk_events: usize,
    /// zstd level (1 = fastest; 3 is zstd's default).
    pub zstd_level: i32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            chunk_events: 1 << 16,
            zstd_level: 3,
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
        let bytes = encode_header(header);
        sink.write_all(&bytes)?;
        let chunk_events = options.chunk_events.clamp(1, MAX_CHUNK_EVENTS as usize);
        Ok(TraceWriter {
            sink,
            pos: bytes.len() as u64,
            options: WriterOptions {
                chunk_events,
                ..options
            },
            pending: Vec::with_capacity(chunk_events),
            encoder: ChunkEncoder::default(),
            buf: Vec::new(),
            index: Vec::new(),
            events_written: 0,
        })
    }

    /// Adds one event of a single ordered stream (seq strictly increasing across calls).
    pub fn push(&mut self, ev: &Event) -> Result<()> {
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
        self.sink.write_all(&self.buf)?;
        self.index.push(ChunkInfo {
            offset: self.pos,
            compressed_len: (self.buf.len() - crate::chunk::CHUNK_HEADER_LEN) as u32,
            count: events.len() as u32,
            first_seq: events[0].seq,
            last_seq: events[events.len() - 1].seq,
        });
        self.pos += self.buf.len() as u64;
        self.events_written += events.len() as u64;
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

    /// Writes pending events, the index footer and the trailer; returns the sink.
    pub fn finish(mut self) -> Result<W> {
        self.write_pending()?;
        let mut raw = Vec::with_capacity(self.index.len() * INDEX_ENTRY_LEN);
        for c in &self.index {
            raw.extend_from_slice(&c.offset.to_le_bytes());
            raw.extend_from_slice(&c.compressed_len.to_le_bytes());
            raw.extend_from_slice(&c.count.to_le_bytes());
            raw.extend_from_slice(&c.first_seq.to_le_bytes());
            raw.extend_from_slice(&c.last_seq.to_le_bytes());
        }
        // An index larger than one chunk's payload limit (about 2 million chunks) is left out:
        // readers then scan, which is slower but complete.
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
        self.sink.flush()?;
        Ok(self.sink)
    }
}
