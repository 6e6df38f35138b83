//! The file header and trailer (layout in FORMAT.md).

use crate::chunk::ChunkKind;
use crate::end::EndStatus;
use crate::event::Header;
use crate::reader::ChunkInfo;
use crate::TraceError;

/// First 8 bytes of every `.atrace` file.
pub const FILE_MAGIC: [u8; 8] = *b"\x89ATRACE\n";
/// Last 8 bytes of a file that was finished cleanly (after the index offset).
pub const TRAILER_MAGIC: [u8; 8] = *b"ATRINDEX";
/// Format version this code writes (2: the index payload ends with the end status; 3: stack and
/// module chunks, index entries that name their chunk's kind).
pub const FORMAT_VERSION: u16 = 3;
/// Oldest reader version that can read what this code writes without stacks. Version 1 readers
/// read such a file whole: its longer index payload fails their check, and they find the chunks
/// by a scan.
pub const MIN_READER_VERSION: u16 = 1;
/// Oldest reader version for a file with stack or module chunks (older readers would take those
/// chunks for damage and the index entries' kinds for counts).
pub const MIN_READER_WITH_STACKS: u16 = 3;
/// Fixed part of the file header.
pub const FILE_HEADER_LEN: usize = 16;
/// Bytes of the trailer: index chunk offset (u64) and [`TRAILER_MAGIC`].
pub const TRAILER_LEN: usize = 16;
/// Largest metadata block accepted (1 MiB).
pub const MAX_METADATA: u32 = 1 << 20;
/// Bytes per index entry: offset u64, compressed_len u32, count u32, first_seq u64, last_seq u64.
pub const INDEX_ENTRY_LEN: usize = 32;

/// Serialises the file header, metadata and its checksum.
pub fn encode_header(header: &Header, min_reader: u16) -> Vec<u8> {
    let mut meta = header.clone();
    meta.format_version = FORMAT_VERSION;
    let json = serde_json::to_vec(&meta).expect("header serialises");
    let mut out = Vec::with_capacity(FILE_HEADER_LEN + json.len() + 4);
    out.extend_from_slice(&FILE_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&min_reader.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Parses the fixed header. Returns the format version that wrote the file and the metadata length.
pub fn parse_fixed(b: &[u8; FILE_HEADER_LEN]) -> Result<(u16, u32), TraceError> {
    if b[0..8] != FILE_MAGIC {
        return Err(TraceError::NotATrace);
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    let needs = u16::from_le_bytes([b[10], b[11]]);
    if needs > FORMAT_VERSION {
        return Err(TraceError::FutureVersion {
            found: version,
            needs,
            supported: FORMAT_VERSION,
        });
    }
    let len = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    if len > MAX_METADATA {
        return Err(TraceError::Corrupt {
            offset: 12,
            what: format!("metadata length {len} exceeds the {MAX_METADATA}-byte limit"),
        });
    }
    Ok((version, len))
}

/// Checks the metadata checksum and parses it. `all` is the fixed header, metadata and checksum.
pub fn parse_metadata(all: &[u8]) -> Result<Header, TraceError> {
    let (body, crc) = all.split_at(all.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().unwrap()) {
        return Err(TraceError::Corrupt {
            offset: FILE_HEADER_LEN as u64,
            what: "metadata checksum mismatch".into(),
        });
    }
    serde_json::from_slice(&body[FILE_HEADER_LEN..]).map_err(|e| TraceError::Corrupt {
        offset: FILE_HEADER_LEN as u64,
        what: format!("metadata is not valid: {e}"),
    })
}

/// Bits of an index entry's count field that hold the chunk's kind (format 3): 0 for an event
/// chunk, else the kind code; the count is in the low 24 bits.
const KIND_SHIFT: u32 = 24;

/// The index chunk's payload: one [`INDEX_ENTRY_LEN`]-byte entry per chunk in file order, then
/// (version 2) the end status as JSON.
pub fn encode_index(chunks: &[ChunkInfo], end: &EndStatus) -> Vec<u8> {
    let json = serde_json::to_vec(end).expect("end status serialises");
    let mut raw = Vec::with_capacity(chunks.len() * INDEX_ENTRY_LEN + json.len());
    for c in chunks {
        raw.extend_from_slice(&c.offset.to_le_bytes());
        raw.extend_from_slice(&c.compressed_len.to_le_bytes());
        let kind = match c.kind {
            ChunkKind::Events => 0,
            k => k as u32,
        };
        raw.extend_from_slice(&(c.count | kind << KIND_SHIFT).to_le_bytes());
        raw.extend_from_slice(&c.first_seq.to_le_bytes());
        raw.extend_from_slice(&c.last_seq.to_le_bytes());
    }
    raw.extend_from_slice(&json);
    raw
}

/// Splits an index payload of `count` entries in a file whose header says format `version`.
/// What follows the entries is the end status (version 2). A version 1 index has none: its file
/// was finished cleanly, which `Complete` stands for. A version 1 file resumed and finished by a
/// version 2 writer keeps its version 1 header and gets an end status: the payload's length, not
/// the header's version, says whether one is there. Err says what is wrong.
pub fn decode_index(
    raw: &[u8],
    count: u32,
    version: u16,
) -> Result<(Vec<ChunkInfo>, EndStatus), &'static str> {
    let entries_len = count as usize * INDEX_ENTRY_LEN;
    if raw.len() < entries_len {
        return Err("index payload shorter than its entry count");
    }
    let (entries, tail) = raw.split_at(entries_len);
    let end = if tail.is_empty() {
        if version >= 2 {
            return Err("the end status after the index entries is missing");
        }
        EndStatus::complete()
    } else {
        serde_json::from_slice(tail).map_err(|_| "the end status after the index is not valid")?
    };
    let chunks = entries
        .chunks_exact(INDEX_ENTRY_LEN)
        .map(|e| {
            let u64_at = |i: usize| u64::from_le_bytes(e[i..i + 8].try_into().unwrap());
            let u32_at = |i: usize| u32::from_le_bytes(e[i..i + 4].try_into().unwrap());
            let count = u32_at(12);
            let kind = match count >> KIND_SHIFT {
                0 => ChunkKind::Events,
                k => ChunkKind::from_code(k as u8)
                    .filter(|k| matches!(k, ChunkKind::Stacks | ChunkKind::Modules))
                    .ok_or("an index entry names an unknown chunk kind")?,
            };
            Ok(ChunkInfo {
                offset: u64_at(0),
                compressed_len: u32_at(8),
                count: count & ((1 << KIND_SHIFT) - 1),
                first_seq: u64_at(16),
                last_seq: u64_at(24),
                kind,
            })
        })
        .collect::<Result<_, &'static str>>()?;
    Ok((chunks, end))
}
