//! Chunks: the self-delimiting, separately compressed unit of an `.atrace` file.
//!
//! A chunk is a fixed 64-byte header (layout in FORMAT.md, asserted in tests) followed by a zstd
//! frame. An event chunk's payload is columnar: one varint stream per field, so that zstd sees
//! runs of similar bytes. Every length and count read from a file is checked against
//! [`MAX_PAYLOAD`], [`MAX_CHUNK_EVENTS`] and the payload size before anything is allocated, so a
//! lying header cannot make a reader allocate gigabytes.
//!
//! Decoding: [`EventChunk`] holds a chunk's decompressed payload (its compact form, a few bytes
//! per event), checked whole when it is made, and hands out events in batches; the merge in
//! `merge.rs` keeps chunks in this form, not as 80-byte `Event`s.

use crate::event::{Event, Op, PtrKind};
use crate::varint::{put_u64, unzigzag, zigzag, Cursor};

/// Bytes in a chunk header.
pub const CHUNK_HEADER_LEN: usize = 64;
/// Magic at the start of every chunk header.
pub const CHUNK_MAGIC: [u8; 4] = *b"ACHK";
/// Largest compressed or uncompressed payload a reader accepts (64 MiB).
pub const MAX_PAYLOAD: u32 = 64 << 20;
/// Largest event count in one chunk: 2^20, what the recorder writes at most (`MAX_CHUNK` in
/// collector/shim/src/writer.rs); `TraceWriter` clamps its chunks to it. Decoded, such a chunk
/// is 80 MiB of `Event`s, which is why the ordered reader keeps chunks compact (see
/// [`EventChunk`]).
pub const MAX_CHUNK_EVENTS: u32 = 1 << 20;
/// Fewest payload bytes an event takes: its op byte and one-byte varints for seq, thread, ts
/// and latency. A header whose count needs more bytes than its payload holds is a lie.
pub const MIN_EVENT_BYTES: u32 = 5;
/// Streams in an event payload (FORMAT.md, "Event payload").
const STREAMS: usize = 11;

/// What a chunk holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ChunkKind {
    Events = 1,
    Index = 2,
    /// Stack trie nodes (format 3; `traces::stacks`).
    Stacks = 3,
    /// Loaded modules, JSON (format 3; `traces::stacks::Module`).
    Modules = 4,
}

impl ChunkKind {
    /// The kind for an on-disk code.
    pub fn from_code(code: u8) -> Option<ChunkKind> {
        match code {
            1 => Some(ChunkKind::Events),
            2 => Some(ChunkKind::Index),
            3 => Some(ChunkKind::Stacks),
            4 => Some(ChunkKind::Modules),
            _ => None,
        }
    }
}

/// Most nodes one stack chunk holds.
pub const MAX_CHUNK_NODES: u32 = 1 << 20;
/// Most modules one module chunk lists.
pub const MAX_CHUNK_MODULES: u32 = 1 << 16;

/// A decoded chunk header. Offsets in the file are kept by the reader, not here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    pub kind: ChunkKind,
    /// Compressed payload bytes following the header.
    pub compressed_len: u32,
    /// Payload bytes after decompression.
    pub uncompressed_len: u32,
    /// Events (or index entries) in the chunk.
    pub count: u32,
    /// Sequence number of the first event (0 for an index chunk).
    pub first_seq: u64,
    /// Sequence number of the last event.
    pub last_seq: u64,
    /// Advisory: every event with a smaller seq is in this chunk or an earlier one in the file.
    pub watermark: u64,
    /// Timestamp of the first event, ns; the base of the timestamp deltas.
    pub first_ts: u64,
    /// CRC-32 (IEEE) of the compressed payload.
    pub payload_crc: u32,
}

/// Why a chunk header or payload was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkFault {
    BadMagic,
    HeaderChecksum,
    UnknownKind(u8),
    TooLarge { what: &'static str, len: u32 },
    PayloadChecksum,
    Compress(String),
    Decompress(String),
    Malformed(&'static str),
}

impl std::fmt::Display for ChunkFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkFault::BadMagic => f.write_str("no chunk magic 'ACHK' where a chunk should start"),
            ChunkFault::HeaderChecksum => f.write_str("chunk header checksum mismatch"),
            ChunkFault::UnknownKind(k) => write!(f, "unknown chunk kind {k}"),
            ChunkFault::TooLarge { what, len } => {
                write!(
                    f,
                    "{what} of {len} bytes exceeds the {MAX_PAYLOAD}-byte limit"
                )
            }
            ChunkFault::PayloadChecksum => f.write_str("chunk payload checksum mismatch"),
            ChunkFault::Compress(e) => write!(f, "zstd could not compress a chunk: {e}"),
            ChunkFault::Decompress(e) => write!(f, "chunk payload does not decompress: {e}"),
            ChunkFault::Malformed(what) => write!(f, "malformed chunk payload: {what}"),
        }
    }
}

impl ChunkHeader {
    /// The count against the limits and what the payload can hold: an event chunk holds 1 to
    /// [`MAX_CHUNK_EVENTS`] events of at least [`MIN_EVENT_BYTES`] each, with distinct seqs in
    /// `first_seq..=last_seq`; an index holds `count` entries of 32 bytes.
    fn check_count(&self) -> Result<(), ChunkFault> {
        let count = self.count as u64;
        let fits = match self.kind {
            ChunkKind::Events => {
                count >= 1
                    && self.count <= MAX_CHUNK_EVENTS
                    && count * MIN_EVENT_BYTES as u64 + STREAMS as u64
                        <= self.uncompressed_len as u64
                    && self.last_seq >= self.first_seq
                    && self.last_seq - self.first_seq >= count - 1
            }
            ChunkKind::Index => {
                count * crate::file::INDEX_ENTRY_LEN as u64 <= self.uncompressed_len as u64
            }
            // Node ids first_seq ..= last_seq, at least two payload bytes each.
            ChunkKind::Stacks => {
                count >= 1
                    && self.count <= MAX_CHUNK_NODES
                    && self.first_seq >= 1
                    && self.last_seq.checked_sub(self.first_seq) == Some(count - 1)
                    && count * 2 <= self.uncompressed_len as u64
            }
            ChunkKind::Modules => count >= 1 && self.count <= MAX_CHUNK_MODULES,
        };
        if fits {
            Ok(())
        } else {
            Err(ChunkFault::Malformed(
                "count out of bounds (larger than the limit, the payload or the sequence range)",
            ))
        }
    }

    /// Serialises the header, computing its own checksum.
    pub fn to_bytes(&self) -> [u8; CHUNK_HEADER_LEN] {
        let mut b = [0u8; CHUNK_HEADER_LEN];
        b[0..4].copy_from_slice(&CHUNK_MAGIC);
        b[4] = self.kind as u8;
        // b[5..8] reserved, zero.
        b[8..12].copy_from_slice(&self.compressed_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.uncompressed_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.count.to_le_bytes());
        b[20..24].copy_from_slice(&self.payload_crc.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.last_seq.to_le_bytes());
        b[40..48].copy_from_slice(&self.watermark.to_le_bytes());
        b[48..56].copy_from_slice(&self.first_ts.to_le_bytes());
        // b[56..60] reserved, zero.
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and validates a header: magic, checksum, kind and length limits.
    pub fn parse(b: &[u8; CHUNK_HEADER_LEN]) -> Result<ChunkHeader, ChunkFault> {
        if b[0..4] != CHUNK_MAGIC {
            return Err(ChunkFault::BadMagic);
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        if crc32fast::hash(&b[0..60]) != u32_at(60) {
            return Err(ChunkFault::HeaderChecksum);
        }
        let kind = ChunkKind::from_code(b[4]).ok_or(ChunkFault::UnknownKind(b[4]))?;
        let h = ChunkHeader {
            kind,
            compressed_len: u32_at(8),
            uncompressed_len: u32_at(12),
            count: u32_at(16),
            payload_crc: u32_at(20),
            first_seq: u64_at(24),
            last_seq: u64_at(32),
            watermark: u64_at(40),
            first_ts: u64_at(48),
        };
        for (what, len) in [
            ("compressed payload", h.compressed_len),
            ("uncompressed payload", h.uncompressed_len),
        ] {
            if len > MAX_PAYLOAD {
                return Err(ChunkFault::TooLarge { what, len });
            }
        }
        h.check_count()?;
        Ok(h)
    }
}

/// Reusable buffers for encoding event chunks.
#[derive(Default)]
pub struct ChunkEncoder {
    ops: Vec<u8>,
    seq: Vec<u8>,
    thread: Vec<u8>,
    ts: Vec<u8>,
    latency: Vec<u8>,
    addr: Vec<u8>,
    old_addr: Vec<u8>,
    size: Vec<u8>,
    nmemb: Vec<u8>,
    align: Vec<u8>,
    callsite: Vec<u8>,
    raw: Vec<u8>,
    /// A zstd context kept from chunk to chunk (making one per chunk costs more than compressing
    /// a small chunk), with the level it was made for.
    zstd: Option<(i32, zstd::bulk::Compressor<'static>)>,
}

/// The op byte: bits 0-3 op code, bit 4 failed, bits 5-6 pointer kind, bit 7 has call-site.
fn op_byte(ev: &Event) -> u8 {
    ev.op.code()
        | (ev.failed as u8) << 4
        | (ev.kind as u8) << 5
        | (ev.callsite.is_some() as u8) << 7
}

impl ChunkEncoder {
    /// Encodes `events` (strictly increasing `seq`, at most [`MAX_CHUNK_EVENTS`]) as a complete
    /// chunk, header included, appended to `out`. `level` is the zstd level.
    ///
    /// Refuses (and writes nothing) when `events` is empty, longer than [`MAX_CHUNK_EVENTS`], or
    /// not in strictly increasing seq order.
    pub fn encode(
        &mut self,
        events: &[Event],
        watermark: u64,
        level: i32,
        out: &mut Vec<u8>,
    ) -> Result<(), ChunkFault> {
        if events.is_empty() || events.len() > MAX_CHUNK_EVENTS as usize {
            return Err(ChunkFault::Malformed(
                "a chunk holds 1 to MAX_CHUNK_EVENTS events",
            ));
        }
        if events.windows(2).any(|w| w[1].seq <= w[0].seq) {
            return Err(ChunkFault::Malformed("events not in increasing seq order"));
        }
        for b in [
            &mut self.ops,
            &mut self.seq,
            &mut self.thread,
            &mut self.ts,
            &mut self.latency,
            &mut self.addr,
            &mut self.old_addr,
            &mut self.size,
            &mut self.nmemb,
            &mut self.align,
            &mut self.callsite,
        ] {
            b.clear();
        }
        let first = &events[0];
        let mut prev_seq = first.seq.wrapping_sub(1);
        let mut prev_ts = first.ts_ns;
        let mut prev_addr = 0u64;
        let mut prev_old = 0u64;
        for ev in events {
            self.ops.push(op_byte(ev));
            put_u64(&mut self.seq, ev.seq.wrapping_sub(prev_seq).wrapping_sub(1));
            prev_seq = ev.seq;
            put_u64(&mut self.thread, ev.thread as u64);
            put_u64(&mut self.ts, zigzag(ev.ts_ns.wrapping_sub(prev_ts) as i64));
            prev_ts = ev.ts_ns;
            put_u64(&mut self.latency, ev.latency_ns as u64);
            if ev.op.returns_object() {
                put_u64(
                    &mut self.addr,
                    zigzag(ev.addr.wrapping_sub(prev_addr) as i64),
                );
                prev_addr = ev.addr;
                put_u64(&mut self.size, ev.size);
            }
            if ev.op.takes_address() {
                put_u64(
                    &mut self.old_addr,
                    zigzag(ev.old_addr.wrapping_sub(prev_old) as i64),
                );
                prev_old = ev.old_addr;
            }
            if ev.op.has_nmemb() {
                put_u64(&mut self.nmemb, ev.nmemb);
            }
            if ev.op.has_align() {
                put_u64(&mut self.align, ev.align);
            }
            if let Some(cs) = ev.callsite {
                put_u64(&mut self.callsite, cs as u64);
            }
        }
        self.raw.clear();
        for s in [
            &self.ops,
            &self.seq,
            &self.thread,
            &self.ts,
            &self.latency,
            &self.addr,
            &self.old_addr,
            &self.size,
            &self.nmemb,
            &self.align,
            &self.callsite,
        ] {
            put_u64(&mut self.raw, s.len() as u64);
            self.raw.extend_from_slice(s);
        }
        let last = events.last().unwrap();
        let raw = std::mem::take(&mut self.raw);
        let r = self.write_chunk(
            ChunkKind::Events,
            &raw,
            events.len() as u32,
            (first.seq, last.seq, watermark, first.ts_ns),
            level,
            out,
        );
        self.raw = raw;
        r
    }

    /// Compresses `raw` and appends header + payload to `out`. `seqs` is (first, last,
    /// watermark, ts).
    pub(crate) fn write_chunk(
        &mut self,
        kind: ChunkKind,
        raw: &[u8],
        count: u32,
        seqs: (u64, u64, u64, u64),
        level: i32,
        out: &mut Vec<u8>,
    ) -> Result<(), ChunkFault> {
        if raw.len() > MAX_PAYLOAD as usize {
            return Err(too_large("uncompressed payload", raw.len()));
        }
        let ctx = match &mut self.zstd {
            Some((l, ctx)) if *l == level => ctx,
            slot => {
                let ctx = zstd::bulk::Compressor::new(level)
                    .map_err(|e| ChunkFault::Compress(e.to_string()))?;
                &mut slot.insert((level, ctx)).1
            }
        };
        let compressed = ctx
            .compress(raw)
            .map_err(|e| ChunkFault::Compress(e.to_string()))?;
        write_compressed(kind, raw.len(), &compressed, count, seqs, out)
    }
}

fn too_large(what: &'static str, len: usize) -> ChunkFault {
    ChunkFault::TooLarge {
        what,
        len: len.min(u32::MAX as usize) as u32,
    }
}

/// Appends the header and the compressed payload to `out`.
fn write_compressed(
    kind: ChunkKind,
    raw_len: usize,
    compressed: &[u8],
    count: u32,
    seqs: (u64, u64, u64, u64),
    out: &mut Vec<u8>,
) -> Result<(), ChunkFault> {
    if compressed.len() > MAX_PAYLOAD as usize {
        return Err(too_large("compressed payload", compressed.len()));
    }
    let payload = compressed;
    let header = ChunkHeader {
        kind,
        compressed_len: payload.len() as u32,
        uncompressed_len: raw_len as u32,
        count,
        first_seq: seqs.0,
        last_seq: seqs.1,
        watermark: seqs.2,
        first_ts: seqs.3,
        payload_crc: crc32fast::hash(payload),
    };
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Checks the payload checksum and decompresses it (exactly `uncompressed_len` bytes).
pub(crate) fn decompress(h: &ChunkHeader, payload: &[u8]) -> Result<Vec<u8>, ChunkFault> {
    if crc32fast::hash(payload) != h.payload_crc {
        return Err(ChunkFault::PayloadChecksum);
    }
    let mut raw = Vec::with_capacity(h.uncompressed_len as usize);
    let mut dec =
        zstd::bulk::Decompressor::new().map_err(|e| ChunkFault::Decompress(e.to_string()))?;
    // The capacity bounds the output: a payload claiming more is rejected, not grown into.
    dec.decompress_to_buffer(payload, &mut raw)
        .map_err(|e| ChunkFault::Decompress(e.to_string()))?;
    if raw.len() != h.uncompressed_len as usize {
        return Err(ChunkFault::Malformed(
            "decompressed length differs from the header",
        ));
    }
    Ok(raw)
}

/// Decodes an event chunk's payload into `out` (cleared first).
pub fn decode_events(
    h: &ChunkHeader,
    payload: &[u8],
    out: &mut Vec<Event>,
) -> Result<(), ChunkFault> {
    EventChunk::new(h, payload)?.next_batch(out, usize::MAX)
}

/// An event chunk in its compact form: the decompressed payload and a position. Events come out
/// in batches of the caller's size, checked as they are decoded (every value in range, the seqs
/// those of the header, every stream exactly as long as the events need).
pub struct EventChunk {
    header: ChunkHeader,
    raw: Vec<u8>,
    /// Each stream's byte range in `raw`.
    bounds: [(usize, usize); STREAMS],
    /// Where the next event's fields are.
    at: Position,
}

/// A decoding position: where each stream is, the running deltas, events done.
#[derive(Clone, Copy)]
struct Position {
    pos: [usize; STREAMS],
    prev_seq: u64,
    prev_ts: u64,
    prev_addr: u64,
    prev_old: u64,
    done: u32,
}

impl EventChunk {
    /// Checks the payload's checksum, decompresses it and splits its streams (the ops stream must
    /// hold one byte per event); the values are checked as they are decoded (or all at once by
    /// [`EventChunk::check`]). Memory: the decompressed payload, at most `uncompressed_len`.
    pub fn new(h: &ChunkHeader, payload: &[u8]) -> Result<EventChunk, ChunkFault> {
        use ChunkFault::Malformed;
        if h.kind != ChunkKind::Events {
            return Err(Malformed("not an event chunk"));
        }
        let raw = decompress(h, payload)?;
        let mut bounds = [(0usize, 0usize); STREAMS];
        let mut whole = Cursor::new(&raw);
        for b in &mut bounds {
            let len = whole.u64();
            let len = usize::try_from(len)
                .ok()
                .filter(|_| !whole.failed())
                .ok_or(Malformed("stream length"))?;
            let start = raw.len() - whole.remaining();
            whole
                .take(len)
                .ok_or(Malformed("stream past the payload end"))?;
            *b = (start, start + len);
        }
        if !whole.is_empty() {
            return Err(Malformed("bytes after the last stream"));
        }
        // One op byte per event.
        if bounds[0].1 - bounds[0].0 != h.count as usize {
            return Err(Malformed("event count differs from the ops stream"));
        }
        let start = Position {
            pos: bounds.map(|b| b.0),
            // The first event's seq delta is 0 (its previous is first_seq - 1, wrapping at 0).
            prev_seq: h.first_seq.wrapping_sub(1),
            prev_ts: h.first_ts,
            prev_addr: 0,
            prev_old: 0,
            done: 0,
        };
        Ok(EventChunk {
            header: *h,
            raw,
            bounds,
            at: start,
        })
    }

    /// Checks every event before any is handed out (one decoding pass that keeps nothing): what
    /// the ordered reader does, so that a damaged chunk yields no event at all. Without it the
    /// checks happen as the batches are decoded, the last ones after the last batch.
    pub fn check(&self) -> Result<(), ChunkFault> {
        let mut at = self.at;
        self.run(&mut at, self.remaining(), |_| {})?;
        self.check_end(&at)
    }

    /// After the last event: every stream used up exactly, the last seq the header's.
    fn check_end(&self, at: &Position) -> Result<(), ChunkFault> {
        if at.pos.iter().zip(&self.bounds).any(|(p, b)| *p != b.1) {
            return Err(ChunkFault::Malformed(
                "a stream holds more than the events need",
            ));
        }
        if at.prev_seq != self.header.last_seq {
            return Err(ChunkFault::Malformed(
                "last sequence number differs from the header",
            ));
        }
        Ok(())
    }

    pub fn header(&self) -> &ChunkHeader {
        &self.header
    }

    /// Bytes of the decompressed payload this chunk holds.
    pub fn raw_len(&self) -> usize {
        self.raw.len()
    }

    /// Events not yet handed out.
    pub fn remaining(&self) -> u32 {
        self.header.count - self.at.done
    }

    /// Replaces `out` with the next events, at most `max` (none when all were handed out). An
    /// error means the chunk is damaged (a value out of range, a stream too short or too long):
    /// the events of earlier batches are not to be trusted either, unless [`EventChunk::check`]
    /// passed.
    pub fn next_batch(&mut self, out: &mut Vec<Event>, max: usize) -> Result<(), ChunkFault> {
        out.clear();
        let n = self.remaining().min(max.min(u32::MAX as usize) as u32);
        if n == 0 {
            return Ok(());
        }
        // `n` is at most the count, which `new` proved the ops stream holds.
        out.reserve(n as usize);
        let mut at = self.at;
        self.run(&mut at, n, |ev| out.push(ev))?;
        if at.done == self.header.count {
            self.check_end(&at)?;
        }
        self.at = at;
        Ok(())
    }

    /// Decodes `n` events from `at` into `sink` and advances `at`. Out-of-range values set `bad`;
    /// the cursors remember short streams. Both are checked once, after the loop, so the loop has
    /// no error paths.
    fn run(
        &self,
        at: &mut Position,
        n: u32,
        mut sink: impl FnMut(Event),
    ) -> Result<(), ChunkFault> {
        let h = &self.header;
        let stream = |i: usize| Cursor::new(&self.raw[at.pos[i]..self.bounds[i].1]);
        let mut cursors: [Cursor<'_>; STREAMS] = std::array::from_fn(stream);
        let [ops, seq, thread, ts, latency, addr, old_addr, size, nmemb, align, callsite] =
            &mut cursors;
        let (mut prev_seq, mut prev_ts) = (at.prev_seq, at.prev_ts);
        let (mut prev_addr, mut prev_old) = (at.prev_addr, at.prev_old);
        let mut first = at.done == 0;
        let mut bad = false;
        for _ in 0..n {
            let b = ops.byte();
            let op = Op::from_code(b & 0x0f).unwrap_or(Op::Malloc);
            let kind = PtrKind::from_code((b >> 5) & 3).unwrap_or_default();
            bad |= b & 0x0f > 9 || (b >> 5) & 3 == 3;
            let s = prev_seq.wrapping_add(seq.u64()).wrapping_add(1);
            // The first event is first_seq; the others strictly increase (no wrapping around).
            bad |= if first {
                s != h.first_seq
            } else {
                s <= prev_seq
            };
            first = false;
            prev_seq = s;
            let t = thread.u64();
            bad |= t > u32::MAX as u64;
            prev_ts = prev_ts.wrapping_add(unzigzag(ts.u64()) as u64);
            let l = latency.u64();
            bad |= l > u32::MAX as u64;
            let mut ev = Event {
                seq: s,
                thread: t as u32,
                ts_ns: prev_ts,
                op,
                addr: 0,
                old_addr: 0,
                size: 0,
                nmemb: (op != Op::Free) as u64,
                align: 0,
                failed: b & 0x10 != 0,
                latency_ns: l as u32,
                kind,
                callsite: None,
            };
            if op.returns_object() {
                prev_addr = prev_addr.wrapping_add(unzigzag(addr.u64()) as u64);
                ev.addr = prev_addr;
                ev.size = size.u64();
            }
            if op.takes_address() {
                prev_old = prev_old.wrapping_add(unzigzag(old_addr.u64()) as u64);
                ev.old_addr = prev_old;
            }
            if op.has_nmemb() {
                ev.nmemb = nmemb.u64();
            }
            if op.has_align() {
                ev.align = align.u64();
            }
            if b & 0x80 != 0 {
                let c = callsite.u64();
                bad |= c > u32::MAX as u64;
                ev.callsite = Some(c as u32);
            }
            sink(ev);
        }
        if cursors.iter().any(|c| c.failed()) {
            return Err(ChunkFault::Malformed(
                "a stream is shorter than the event count needs",
            ));
        }
        if bad {
            return Err(ChunkFault::Malformed(
                "a value is out of range (op, kind, sequence, thread, latency or call-site)",
            ));
        }
        for (i, c) in cursors.iter().enumerate() {
            at.pos[i] = self.bounds[i].1 - c.remaining();
        }
        (at.prev_seq, at.prev_ts, at.prev_addr, at.prev_old) =
            (prev_seq, prev_ts, prev_addr, prev_old);
        at.done += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u64) -> Vec<Event> {
        (0..n)
            .map(|i| {
                let mut ev = Event::new(if i % 2 == 0 { Op::Malloc } else { Op::Free });
                ev.seq = 10 + i * 2;
                ev.ts_ns = 1000 + i * 37;
                ev.latency_ns = 20 + (i % 7) as u32;
                if ev.op == Op::Malloc {
                    ev.addr = 0x5555_0000 + i * 48;
                    ev.size = 24 + i % 100;
                } else {
                    ev.old_addr = 0x5555_0000 + (i - 1) * 48;
                }
                ev
            })
            .collect()
    }

    #[test]
    fn header_layout_is_64_bytes_with_fields_where_format_md_says() {
        let h = ChunkHeader {
            kind: ChunkKind::Events,
            compressed_len: 0x0102_0304,
            uncompressed_len: 0x0105,
            count: 6,
            first_seq: 7,
            last_seq: 0x0108,
            watermark: 9,
            first_ts: 10,
            payload_crc: 11,
        };
        let b = h.to_bytes();
        assert_eq!(b.len(), 64);
        assert_eq!(&b[0..4], b"ACHK");
        assert_eq!(b[4], 1);
        assert_eq!(&b[8..12], &[4, 3, 2, 1]);
        assert_eq!(&b[12..14], &[5, 1]);
        assert_eq!(b[16], 6);
        assert_eq!(b[20], 11);
        assert_eq!(b[24], 7);
        assert_eq!(&b[32..34], &[8, 1]);
        assert_eq!(b[40], 9);
        assert_eq!(b[48], 10);
        assert_eq!(ChunkHeader::parse(&b), Ok(h));
    }

    #[test]
    fn every_flipped_header_bit_is_caught() {
        let mut out = Vec::new();
        ChunkEncoder::default()
            .encode(&sample(10), 30, 3, &mut out)
            .unwrap();
        let good: [u8; 64] = out[..64].try_into().unwrap();
        for bit in 0..64 * 8 {
            let mut b = good;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                ChunkHeader::parse(&b).is_err(),
                "bit {bit} flip went unnoticed"
            );
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let events = sample(1000);
        let mut out = Vec::new();
        ChunkEncoder::default()
            .encode(&events, 0, 3, &mut out)
            .unwrap();
        let h = ChunkHeader::parse(out[..64].try_into().unwrap()).unwrap();
        assert_eq!(h.compressed_len as usize, out.len() - 64);
        let mut back = Vec::new();
        decode_events(&h, &out[64..], &mut back).unwrap();
        assert_eq!(back, events);
    }

    /// A chunk of two mallocs from seq 5 whose streams are `streams` (ops, seq, then the rest).
    fn hand_made(ops: &[u8], seq: &[u8]) -> (ChunkHeader, Vec<u8>) {
        let mut raw = Vec::new();
        let one = [0u8, 0];
        let streams: [&[u8]; 11] = [ops, seq, &one, &one, &one, &one, &[], &one, &[], &[], &[]];
        for st in streams {
            put_u64(&mut raw, st.len() as u64);
            raw.extend_from_slice(st);
        }
        let mut out = Vec::new();
        ChunkEncoder::default()
            .write_chunk(ChunkKind::Events, &raw, 2, (5, 6, 0, 0), 3, &mut out)
            .unwrap();
        let h = ChunkHeader::parse(out[..64].try_into().unwrap()).unwrap();
        (h, out[64..].to_vec())
    }

    #[test]
    fn values_are_checked_all_at_once_or_batch_by_batch() {
        let (h, payload) = hand_made(&[0, 0], &[0, 0]);
        let mut good = EventChunk::new(&h, &payload).unwrap();
        assert_eq!(good.check(), Ok(()));
        let mut out = Vec::new();
        good.next_batch(&mut out, 10).unwrap();
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6]);

        // The second op code is 15: no such op.
        let (h, payload) = hand_made(&[0, 15], &[0, 0]);
        let mut bad = EventChunk::new(&h, &payload).unwrap();
        assert!(bad.check().is_err());
        bad.next_batch(&mut out, 1).unwrap();
        assert!(bad.next_batch(&mut out, 1).is_err());

        // A seq stream with a byte more than the events need: found after the last event.
        let (h, payload) = hand_made(&[0, 0], &[0, 0, 0]);
        let mut long = EventChunk::new(&h, &payload).unwrap();
        assert!(long.check().is_err());
        assert!(long.next_batch(&mut out, 10).is_err());
    }

    #[test]
    fn corrupt_payload_is_an_error() {
        let mut out = Vec::new();
        ChunkEncoder::default()
            .encode(&sample(100), 0, 3, &mut out)
            .unwrap();
        let h = ChunkHeader::parse(out[..64].try_into().unwrap()).unwrap();
        let mut payload = out[64..].to_vec();
        payload[3] ^= 0x40;
        let mut back = Vec::new();
        assert_eq!(
            decode_events(&h, &payload, &mut back),
            Err(ChunkFault::PayloadChecksum)
        );
    }
}
