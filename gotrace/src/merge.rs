//! Events of a generation in time order: one cursor per M over its batches (read one at a time),
//! merged by timestamp. Ties go to the M seen first in the file, so the order is deterministic.
//!
//! Timestamps: a batch's header has a base time; each event adds its delta to the previous one
//! of the same batch. The runtime keeps an M's timestamps strictly increasing by nudging an event
//! that would not be later by one unit (64 ns on Linux), so a busy M's clock can run ahead of the
//! others by a few microseconds: the merge is the best order the trace gives, and what the
//! conversion must tolerate (see `convert.rs`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::batch::{read_data, Batch};
use crate::format::Format;
use crate::generation::MBatches;
use crate::source::Source;
use crate::spec::{timed_args, MAX_ARGS};
use crate::wire::uvarint;
use crate::GoTraceError;

/// One timed event, its arguments undecoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawEvent {
    /// Absolute timestamp (the generation's clock units).
    pub time: u64,
    /// The M that wrote it.
    pub m: u64,
    /// Index of that M in the generation ([`crate::generation::Generation::ms`]).
    pub m_index: u32,
    pub typ: u8,
    /// Arguments after the time delta (unused ones are 0).
    pub args: [u64; MAX_ARGS - 1],
}

/// Reads one M's batches in order.
struct Cursor {
    batches: Vec<Batch>,
    next_batch: usize,
    data: Vec<u8>,
    data_offset: u64,
    pos: usize,
    last_time: u64,
    /// The event read ahead.
    head: Option<RawEvent>,
}

/// The merge of a generation's Ms.
pub struct Merge {
    format: Format,
    cursors: Vec<Cursor>,
    ms: Vec<u64>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    /// The cursor being drained while it stays the earliest (no heap traffic).
    current: Option<u32>,
    problems: Vec<GoTraceError>,
    /// Bytes of event data read so far.
    pub bytes_read: u64,
}

impl Merge {
    pub fn new(
        src: &(impl Source + ?Sized),
        format: Format,
        ms: Vec<MBatches>,
    ) -> Result<Merge, GoTraceError> {
        let mut merge = Merge {
            format,
            ms: ms.iter().map(|m| m.m).collect(),
            cursors: ms
                .into_iter()
                .map(|m| Cursor {
                    batches: m.batches,
                    next_batch: 0,
                    data: Vec::new(),
                    data_offset: 0,
                    pos: 0,
                    last_time: 0,
                    head: None,
                })
                .collect(),
            heap: BinaryHeap::new(),
            current: None,
            problems: Vec::new(),
            bytes_read: 0,
        };
        for i in 0..merge.cursors.len() {
            merge.advance(src, i as u32)?;
            if let Some(h) = merge.cursors[i].head {
                merge.heap.push(Reverse((h.time, i as u32)));
            }
        }
        Ok(merge)
    }

    /// Problems met in event data (a bad event ends its batch; the rest is read).
    pub fn take_problems(&mut self) -> Vec<GoTraceError> {
        std::mem::take(&mut self.problems)
    }

    /// The next event in time order.
    #[inline]
    pub fn next(&mut self, src: &(impl Source + ?Sized)) -> Result<Option<RawEvent>, GoTraceError> {
        let i = match self.current {
            Some(i) => i,
            None => match self.heap.pop() {
                Some(Reverse((_, i))) => i,
                None => return Ok(None),
            },
        };
        let ev = self.cursors[i as usize].head.take();
        self.advance(src, i)?;
        // Keep draining this M while it is still the earliest.
        self.current = match self.cursors[i as usize].head {
            Some(h) => match self.heap.peek() {
                Some(&Reverse((t, j))) if (t, j) < (h.time, i) => {
                    self.heap.push(Reverse((h.time, i)));
                    None
                }
                _ => Some(i),
            },
            None => None,
        };
        Ok(ev)
    }

    /// Reads cursor `i`'s next event into its head (none when its batches are done).
    fn advance(&mut self, src: &(impl Source + ?Sized), i: u32) -> Result<(), GoTraceError> {
        let format = self.format;
        let m = self.ms[i as usize];
        let c = &mut self.cursors[i as usize];
        loop {
            if c.pos < c.data.len() {
                match decode(format, &c.data, &mut c.pos, c.last_time) {
                    Ok((typ, time, args)) => {
                        c.last_time = time;
                        c.head = Some(RawEvent {
                            time,
                            m,
                            m_index: i,
                            typ,
                            args,
                        });
                        return Ok(());
                    }
                    Err(what) => {
                        self.problems.push(GoTraceError::Corrupt {
                            offset: c.data_offset + c.pos as u64,
                            what: format!("{what} (the rest of this batch of M {m} is skipped)"),
                        });
                        c.pos = c.data.len();
                    }
                }
            }
            let Some(batch) = c.batches.get(c.next_batch) else {
                c.head = None;
                c.data = Vec::new();
                return Ok(());
            };
            c.next_batch += 1;
            read_data(src, batch, &mut c.data)?;
            self.bytes_read += batch.size as u64;
            c.data_offset = batch.data_offset;
            c.pos = 0;
            c.last_time = batch.time;
        }
    }
}

/// Decodes one timed event at `*pos`.
#[inline]
fn decode(
    format: Format,
    data: &[u8],
    pos: &mut usize,
    last_time: u64,
) -> Result<(u8, u64, [u64; MAX_ARGS - 1]), String> {
    let start = *pos;
    let typ = data[start];
    let Some(nargs) = timed_args(format, typ) else {
        return Err(format!(
            "event type {typ} is not a timed event of this format"
        ));
    };
    *pos += 1;
    let dt = uvarint(data, pos).map_err(|e| e.to_string())?;
    let mut args = [0u64; MAX_ARGS - 1];
    for a in args.iter_mut().take(nargs - 1) {
        *a = uvarint(data, pos).map_err(|e| e.to_string())?;
    }
    Ok((typ, last_time.wrapping_add(dt), args))
}
