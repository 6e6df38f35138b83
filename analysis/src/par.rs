//! Parallel decoding for the ordered pass: chunks are decoded by rayon, a batch ahead of the
//! analyser, which consumes them in seq order on its own thread.
//!
//! Decoding (zstd plus the event codec) is most of the cost of a report: on the benchmark trace
//! `info`, which only decodes, takes ~90% of the time `report` takes. The analysis itself needs
//! global order (lifetimes, live bytes, tiny-block packing), so it stays one sequential pass; what
//! runs in parallel is the decoding of the next batch of chunks while the current one is analysed.
//! Memory: two batches of decoded chunks (2 × [`BATCH_PER_THREAD`] × threads chunks), whatever
//! the trace's length.
//!
//! Applies when the chunks' seq ranges do not overlap (any trace written through one ordered
//! `TraceWriter` stream, e.g. `import`, and collector traces whose chunks came out in order) and
//! the reader found no problems; otherwise [`decode_ahead`] returns `None` and the caller falls back to
//! the reader's merging iterator.

use rayon::prelude::*;
use traces::reader::ChunkInfo;
use traces::{Event, TraceReader};

/// Chunks per rayon thread in one batch.
pub const BATCH_PER_THREAD: usize = 2;

/// The chunks in seq order when they can be read one after another (no overlapping seq ranges).
pub fn ordered_chunks(reader: &TraceReader) -> Option<Vec<ChunkInfo>> {
    if !reader.problems().is_empty() {
        return None;
    }
    let mut cs: Vec<ChunkInfo> = reader.chunks().to_vec();
    cs.sort_by_key(|c| (c.first_seq, c.offset));
    let disjoint = cs.windows(2).all(|w| w[0].last_seq < w[1].first_seq);
    disjoint.then_some(cs)
}

/// Feeds every event to `each` in seq order, decoding chunks in parallel a batch ahead. `None`
/// when the trace needs the merging reader (see the module comment); `Some(Err)` on a chunk that
/// does not decode.
pub fn decode_ahead(
    reader: &TraceReader,
    mut each: impl FnMut(&Event) + Send,
) -> Option<Result<(), traces::TraceError>> {
    let chunks = ordered_chunks(reader)?;
    let batch = (rayon::current_num_threads() * BATCH_PER_THREAD).max(1);
    let decode = |cs: &[ChunkInfo]| -> Vec<Result<Vec<Event>, traces::TraceError>> {
        cs.par_iter()
            .map(|c| {
                let mut v = Vec::with_capacity(c.count as usize);
                reader.read_chunk(c, &mut v).map(|()| v)
            })
            .collect()
    };
    let feed = |each: &mut dyn FnMut(&Event),
                batch: Vec<Result<Vec<Event>, traces::TraceError>>| {
        for evs in batch {
            for ev in &evs? {
                each(ev);
            }
        }
        Ok(())
    };
    let mut groups = chunks.chunks(batch);
    let mut current = decode(groups.next().unwrap_or(&[]));
    for group in groups {
        let (next, fed) = rayon::join(|| decode(group), || feed(&mut each, current));
        if let Err(e) = fed {
            return Some(Err(e));
        }
        current = next;
    }
    Some(feed(&mut each, current))
}
