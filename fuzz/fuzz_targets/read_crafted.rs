//! Fuzz bytes as the *contents* of a trace whose checksums are all valid: chunk header fields
//! (count, seq range), decompressed payloads and index entries come from the input, and the
//! file is assembled with correct CRCs, so that every lie reaches the reader's own checks (what
//! a mutated real file rarely does: almost any change breaks a checksum).
//!
//! Input: a sequence of chunk records, each `count: u32, first_seq: u64, span: u16, len: u16,
//! raw[len]`, then (when bytes remain) an index flag and perturbations of its entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use traces::chunk::{ChunkHeader, ChunkKind};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn chunk(kind: ChunkKind, raw: &[u8], count: u32, seqs: (u64, u64)) -> Vec<u8> {
    let payload = zstd::bulk::compress(raw, 1).unwrap();
    let h = ChunkHeader {
        kind,
        compressed_len: payload.len() as u32,
        uncompressed_len: raw.len() as u32,
        count,
        first_seq: seqs.0,
        last_seq: seqs.1,
        watermark: 0,
        first_ts: 0,
        payload_crc: crc32fast::hash(&payload),
    };
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut file = traces::TraceWriter::new(Vec::new(), &traces::Header::default())
        .unwrap()
        .finish()
        .unwrap();
    let meta = u32::from_le_bytes(file[12..16].try_into().unwrap()) as usize;
    file.truncate(16 + meta + 4);
    // (offset, compressed_len, count, first_seq, last_seq) of each chunk.
    let mut entries: Vec<(u64, u32, u32, u64, u64)> = Vec::new();
    while entries.len() < 8 {
        let (Some(count), Some(first), Some(span), Some(len)) =
            (input.u32(), input.u64(), input.u16(), input.u16())
        else {
            break;
        };
        let Some(raw) = input.take(len as usize) else {
            break;
        };
        let last = first.saturating_add(span as u64);
        let c = chunk(ChunkKind::Events, raw, count, (first, last));
        entries.push((file.len() as u64, (c.len() - 64) as u32, count, first, last));
        file.extend_from_slice(&c);
    }
    if input.take(1).is_some_and(|f| f[0] & 1 == 1) {
        let mut raw = Vec::new();
        for e in &mut entries {
            // Perturb each entry by the input (zero leaves it true).
            let d = (input.u64().unwrap_or(0), input.u32().unwrap_or(0));
            let e = (e.0 ^ (d.0 & 0xff), e.1, e.2 ^ d.1, e.3, e.4 ^ (d.0 >> 32));
            raw.extend_from_slice(&e.0.to_le_bytes());
            raw.extend_from_slice(&e.1.to_le_bytes());
            raw.extend_from_slice(&e.2.to_le_bytes());
            raw.extend_from_slice(&e.3.to_le_bytes());
            raw.extend_from_slice(&e.4.to_le_bytes());
        }
        raw.extend_from_slice(br#"{"how":"exited","recovered_events":0}"#);
        let at = file.len() as u64;
        file.extend_from_slice(&chunk(ChunkKind::Index, &raw, entries.len() as u32, (0, 0)));
        file.extend_from_slice(&at.to_le_bytes());
        file.extend_from_slice(b"ATRINDEX");
    }
    let Ok(reader) = traces::TraceReader::from_bytes(file) else {
        return;
    };
    let mut last = None;
    for ev in reader.events().flatten() {
        assert!(last.is_none_or(|l| ev.seq > l), "seq order");
        last = Some(ev.seq);
    }
    let _ = reader.par_map_chunks(|evs| evs.len());
});
