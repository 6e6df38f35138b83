//! Crafted traces for the reliability tests: CRC-valid lies in chunk headers and indexes,
//! decompression bombs, overlapping chunks, missing chunks, cut files. Layouts follow
//! traces/FORMAT.md and every checksum is recomputed, so only the reader's own checks can catch a
//! lie. Shared by `traces/tests/crafted.rs` and the binary's `tests/cli_crafted.rs` (by path).
// Each test file uses part of it.
#![allow(dead_code)]

use traces::chunk::{ChunkEncoder, ChunkHeader, ChunkKind};
use traces::varint::put_u64;
use traces::{ChunkInfo, EndStatus, Event, Header, Op, TraceWriter};

/// Bytes of a chunk header, of an index entry, of the trailer (FORMAT.md).
pub const CHUNK_HEADER: usize = 64;
pub const ENTRY: usize = 32;
pub const TRAILER: usize = 16;
/// Wall clock of the crafted recordings' start: 2026-11-21 00:00:00 UTC.
pub const START_UNIX_NS: u64 = 1_795_219_200_000_000_000;

pub fn header() -> Header {
    Header {
        recorder: "crafted".into(),
        command: vec!["crafted".into()],
        pid: 7,
        ppid: 1,
        start_unix_ns: START_UNIX_NS,
        page_size: 4096,
        ..Header::default()
    }
}

/// `n` events from seq `first`: mallocs of distinct addresses, each freed by the next event.
pub fn events(first: u64, n: u64) -> Vec<Event> {
    (first..first + n)
        .map(|seq| {
            let block = 0x5555_0000 + (seq / 2) * 64;
            let mut e = if seq % 2 == 0 {
                let mut e = Event::new(Op::Malloc);
                e.addr = block;
                e.size = 48;
                e
            } else {
                let mut e = Event::new(Op::Free);
                e.old_addr = block;
                e
            };
            e.seq = seq;
            e.ts_ns = 1_000 + seq * 100;
            e.latency_ns = 30;
            e
        })
        .collect()
}

/// The file header, metadata and its checksum of [`header`].
pub fn prefix() -> Vec<u8> {
    let mut bytes = TraceWriter::new(Vec::new(), &header())
        .unwrap()
        .finish()
        .unwrap();
    let meta_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    bytes.truncate(16 + meta_len + 4);
    bytes
}

/// One event chunk of `events` (seq increasing), as the writer encodes it.
pub fn chunk(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    ChunkEncoder::default()
        .encode(events, 0, 3, &mut out)
        .unwrap();
    out
}

/// CRC-32 (IEEE), bit by bit: the tests compute checksums without the reader's code.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = (c >> 1) ^ (0xEDB8_8320 & (c & 1).wrapping_neg());
        }
    }
    !c
}

/// Part of a decompressed payload: `pattern` repeated `times`. Bombs are written as runs and
/// compressed as a stream, so that making one takes little memory (the test process's own peak
/// memory shows in its children's `ru_maxrss`: a child made by vfork and exec inherits it).
pub struct Run(pub Vec<u8>, pub usize);

impl Run {
    fn len(&self) -> usize {
        self.0.len() * self.1
    }
}

/// A chunk of `kind` made by hand from its decompressed payload (`raw`, in runs): zstd-compressed,
/// with a valid header whatever the header claims.
pub fn hand_chunk(kind: ChunkKind, raw: &[Run], count: u32, seqs: (u64, u64)) -> Vec<u8> {
    use std::io::Write;
    let total: usize = raw.iter().map(Run::len).sum();
    let mut z = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    z.set_pledged_src_size(Some(total as u64)).unwrap();
    z.include_contentsize(true).unwrap();
    for Run(pattern, times) in raw {
        // Whole patterns in blocks of about 64 KiB.
        let per_block = ((64 << 10) / pattern.len().max(1)).clamp(1, (*times).max(1));
        let block = pattern.repeat(per_block);
        let mut left = *times;
        while left > 0 {
            let n = left.min(per_block);
            z.write_all(&block[..n * pattern.len()]).unwrap();
            left -= n;
        }
    }
    let payload = z.finish().unwrap();
    let h = ChunkHeader {
        kind,
        compressed_len: payload.len() as u32,
        uncompressed_len: total as u32,
        count,
        first_seq: seqs.0,
        last_seq: seqs.1,
        watermark: 0,
        first_ts: 0,
        payload_crc: crc32(&payload),
    };
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

/// An event payload: the 11 streams, each after its varint length (FORMAT.md).
pub fn payload(streams: [Run; 11]) -> Vec<Run> {
    let mut raw = Vec::new();
    for s in streams {
        let mut len = Vec::new();
        put_u64(&mut len, s.len() as u64);
        raw.push(Run(len, 1));
        raw.push(s);
    }
    raw
}

/// A stream of `values` as varints, once.
pub fn stream(values: &[u64]) -> Run {
    let mut b = Vec::new();
    for &v in values {
        put_u64(&mut b, v);
    }
    Run(b, 1)
}

/// A decompression bomb: `count` mallocs of 0 bytes at one address, seqs `first..`, 6 payload
/// bytes per event that zstd compresses to almost nothing.
pub fn zero_bomb(count: u32, first: u64) -> Vec<u8> {
    let n = count as usize;
    let zeros = || Run(vec![0], n);
    let none = || Run(Vec::new(), 0);
    // ops, seq, thread, ts, latency, addr, old_addr, size, nmemb, align, callsite
    let streams = [
        zeros(),
        zeros(),
        zeros(),
        zeros(),
        zeros(),
        zeros(),
        none(),
        zeros(),
        none(),
        none(),
        none(),
    ];
    let last = first + count as u64 - 1;
    hand_chunk(ChunkKind::Events, &payload(streams), count, (first, last))
}

/// Wide events that take little space: `count` reallocarrays whose deltas, latency and
/// call-site take long varints (42 payload bytes per event: 42 MiB for 2^20 events), compressed
/// to a few KiB because every event is the same. Sizes stay small: the point is the reader's
/// memory, not the replayer's handling of absurd sizes.
pub fn wide_bomb(count: u32, first: u64) -> Vec<u8> {
    let n = count as usize;
    let each = |v: u64| {
        let mut one = Vec::new();
        put_u64(&mut one, v);
        Run(one, n)
    };
    let big = 1u64 << 62; // 9 varint bytes
    let streams = [
        Run(vec![3u8 | 0x80], n), // reallocarray with a call-site
        Run(vec![0], n),          // seq: consecutive
        Run(vec![1], n),          // thread
        each(big),                // ts delta (zigzag: even, positive)
        each(u32::MAX as u64),    // latency
        each(big),                // addr delta
        each(big),                // old_addr delta
        Run(vec![16], n),         // size
        Run(vec![2], n),          // nmemb
        Run(Vec::new(), 0),       // align: no aligned op
        each(u32::MAX as u64),    // call-site
    ];
    let last = first + count as u64 - 1;
    hand_chunk(ChunkKind::Events, &payload(streams), count, (first, last))
}

/// The chunk headers of the event chunks in `chunks` (each one chunk's bytes), at their offsets
/// once appended to `prefix_len` bytes.
pub fn entries(prefix_len: usize, chunks: &[Vec<u8>]) -> Vec<ChunkInfo> {
    let mut at = prefix_len as u64;
    chunks
        .iter()
        .map(|c| {
            // The fields as they are, lies included (FORMAT.md's offsets, not the reader's parse).
            let u32_at = |i: usize| u32::from_le_bytes(c[i..i + 4].try_into().unwrap());
            let u64_at = |i: usize| u64::from_le_bytes(c[i..i + 8].try_into().unwrap());
            let info = ChunkInfo {
                offset: at,
                compressed_len: u32_at(8),
                count: u32_at(16),
                first_seq: u64_at(24),
                last_seq: u64_at(32),
                kind: traces::chunk::ChunkKind::Events,
            };
            at += c.len() as u64;
            info
        })
        .collect()
}

/// The index chunk listing `entries` with the end status `end`, and the trailer, for an index
/// written at byte `at`.
pub fn index_and_trailer(entries: &[ChunkInfo], end: &EndStatus, at: u64) -> Vec<u8> {
    let mut raw = Vec::new();
    for e in entries {
        raw.extend_from_slice(&e.offset.to_le_bytes());
        raw.extend_from_slice(&e.compressed_len.to_le_bytes());
        raw.extend_from_slice(&e.count.to_le_bytes());
        raw.extend_from_slice(&e.first_seq.to_le_bytes());
        raw.extend_from_slice(&e.last_seq.to_le_bytes());
    }
    raw.extend_from_slice(&serde_json::to_vec(end).unwrap());
    let mut out = hand_chunk(
        ChunkKind::Index,
        &[Run(raw, 1)],
        entries.len() as u32,
        (0, 0),
    );
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(b"ATRINDEX");
    out
}

/// A file of `chunks` in this order, finished with `end` (None: cut, no index and trailer).
pub fn assemble(chunks: &[Vec<u8>], end: Option<&EndStatus>) -> Vec<u8> {
    let mut bytes = prefix();
    let list = entries(bytes.len(), chunks);
    for c in chunks {
        bytes.extend_from_slice(c);
    }
    if let Some(end) = end {
        let at = bytes.len() as u64;
        bytes.extend_from_slice(&index_and_trailer(&list, end, at));
    }
    bytes
}

/// Rewrites the index of a finished file after `edit` changed its entries (the end status is
/// kept; the index payload, its checksums and the trailer are made valid again).
pub fn rewrite_index(bytes: &mut Vec<u8>, edit: impl FnOnce(&mut Vec<ChunkInfo>)) {
    let n = bytes.len();
    let at = u64::from_le_bytes(bytes[n - TRAILER..n - 8].try_into().unwrap());
    let h = ChunkHeader::parse(bytes[at as usize..][..CHUNK_HEADER].try_into().unwrap()).unwrap();
    let start = at as usize + CHUNK_HEADER;
    let raw = zstd::bulk::decompress(
        &bytes[start..start + h.compressed_len as usize],
        h.uncompressed_len as usize,
    )
    .unwrap();
    let split = h.count as usize * ENTRY;
    let mut list: Vec<ChunkInfo> = raw[..split]
        .chunks_exact(ENTRY)
        .map(|e| ChunkInfo {
            offset: u64::from_le_bytes(e[0..8].try_into().unwrap()),
            compressed_len: u32::from_le_bytes(e[8..12].try_into().unwrap()),
            count: u32::from_le_bytes(e[12..16].try_into().unwrap()),
            first_seq: u64::from_le_bytes(e[16..24].try_into().unwrap()),
            last_seq: u64::from_le_bytes(e[24..32].try_into().unwrap()),
            kind: traces::chunk::ChunkKind::Events,
        })
        .collect();
    let end: EndStatus = serde_json::from_slice(&raw[split..]).unwrap();
    edit(&mut list);
    bytes.truncate(at as usize);
    bytes.extend_from_slice(&index_and_trailer(&list, &end, at));
}

/// Changes the chunk header at `offset` and seals it again with a valid checksum.
pub fn reseal(bytes: &mut [u8], offset: usize, edit: impl FnOnce(&mut ChunkHeader)) {
    let at = &mut bytes[offset..offset + CHUNK_HEADER];
    let old: [u8; CHUNK_HEADER] = at[..].try_into().unwrap();
    let mut h = ChunkHeader::parse(&old).unwrap();
    edit(&mut h);
    at.copy_from_slice(&h.to_bytes());
}
