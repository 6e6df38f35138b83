//! [`Events`]: a trace's events in global seq order, merged from its chunks in bounded memory,
//! with the sequence numbers checked on the way.
//!
//! Merging: chunks hold seq-sorted events, but chunks of different threads interleave. The
//! iterator visits chunks by `first_seq` and merges them: an event is emitted once it is no
//! larger than the first seq of every chunk not yet loaded and the head of every loaded one.
//! Loaded chunks stay in their compact form ([`EventChunk`]: the decompressed payload, a few bytes
//! per event) and hand out [`BATCH`] events at a time.
//!
//! Memory: the decompressed payload the merge holds at once (loaded chunks, chunks decoded ahead,
//! the chunk being decoded) is at most [`MAX_MERGE_BYTES`]. A decoder thread prepares chunks
//! ahead of the consumer within that budget and waits when it is spent. When the chunk the merge
//! needs now does not fit beside the chunks it holds (chunks whose seq ranges overlap that much:
//! a recording's overlap is about one pass of the recorder's writer, a few MiB), reading stops
//! with an error rather than growing: a small crafted file cannot make the reader hold gigabytes.
//!
//! Checks: a recording (and an import) numbers its events 0, 1, 2, ... without holes. A seq not
//! above the last one yielded is a repeat (two chunks hold it): skipped and counted. A seq above
//! the next expected one leaves a gap: counted. After every good event the iterator yields one
//! [`TraceError::SeqConflict`] for all repeats, one [`TraceError::Missing`] for all gaps, then
//! the reader's problems (a [`TraceError::Cut`] with the last event read).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{mpsc, Arc, Condvar, Mutex};

use crate::chunk::{ChunkHeader, EventChunk};
use crate::event::Event;
use crate::input::Source;
use crate::reader::{chunk_header, corrupt, load_checked, ChunkInfo, TraceReader};
use crate::{Result, TraceError};

/// Most decompressed payload bytes the merge holds at once (128 MiB): loaded chunks, chunks
/// decoded ahead and the one being decoded, each counted as its `uncompressed_len` plus its
/// batch. Two chunks of the largest size (64 MiB) fit; a recording's chunks overlap far less.
pub const MAX_MERGE_BYTES: usize = 128 << 20;

/// Events a loaded chunk decodes at a time (40 KiB of `Event`s).
const BATCH: usize = 512;

/// Decoded chunks the decoder thread may hold ahead of the consumer (within the budget).
const READ_AHEAD: usize = 4;

/// Missing ranges a [`TraceError::Missing`] lists one by one.
const SHOWN_RANGES: usize = 5;

/// What a loaded chunk costs against [`MAX_MERGE_BYTES`].
fn cost(h: &ChunkHeader) -> usize {
    const SLOT: usize = 256; // the slot, the heap entry and the chunk's own fields
    h.uncompressed_len as usize + (h.count as usize).min(BATCH) * size_of::<Event>() + SLOT
}

/// The bytes the merge holds, shared by the consumer and the decoder thread.
struct Budget {
    ledger: Mutex<Ledger>,
    changed: Condvar,
}

struct Ledger {
    /// Bytes held (see [`cost`]).
    held: usize,
    /// Chunks the consumer has asked for: chunk `i` (in merge order) is needed now once
    /// `requested > i`.
    requested: usize,
    /// The iterator was dropped: the decoder stops.
    closed: bool,
}

impl Budget {
    fn new() -> Arc<Budget> {
        Arc::new(Budget {
            ledger: Mutex::new(Ledger {
                held: 0,
                requested: 0,
                closed: false,
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `bytes` for chunk `i`, waiting while the budget is spent and the consumer does not
    /// need the chunk yet. Err(true): the consumer needs it now and it does not fit (the merge
    /// must stop); Err(false): the iterator is gone.
    fn take(&self, bytes: usize, i: usize) -> Result<(), bool> {
        let mut l = self.lock();
        loop {
            if l.closed {
                return Err(false);
            }
            if l.held == 0 || l.held + bytes <= MAX_MERGE_BYTES {
                l.held += bytes;
                return Ok(());
            }
            if l.requested > i {
                return Err(true);
            }
            l = self.changed.wait(l).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn give_back(&self, bytes: usize) {
        self.lock().held -= bytes;
        self.changed.notify_all();
    }

    fn request(&self, i: usize) {
        let mut l = self.lock();
        l.requested = l.requested.max(i + 1);
        drop(l);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

/// A chunk being merged; gives its bytes back to the budget when dropped.
struct Loaded {
    chunk: EventChunk,
    offset: u64,
    batch: Vec<Event>,
    pos: usize,
    cost: usize,
    budget: Arc<Budget>,
}

impl Loaded {
    /// The next event, decoding a batch when the last one is used up; None at the end.
    fn head(&mut self) -> Result<Option<Event>> {
        if self.pos == self.batch.len() {
            self.chunk
                .next_batch(&mut self.batch, BATCH)
                .map_err(|f| corrupt(self.offset, f.to_string()))?;
            self.pos = 0;
        }
        Ok(self.batch.get(self.pos).copied())
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        self.budget.give_back(self.cost);
    }
}

/// A chunk prepared for the merge.
enum Prepared {
    Ready(Box<Loaded>),
    /// This chunk is damaged; the merge goes on without it.
    Failed(TraceError),
    /// The chunk does not fit in the budget beside those held: the merge stops.
    Halt(TraceError),
}

/// Reads, checks and decompresses chunk `i` of the merge order within the budget.
fn prepare(
    source: &Source,
    file_len: u64,
    info: &ChunkInfo,
    i: usize,
    budget: &Arc<Budget>,
) -> Prepared {
    let h = match chunk_header(source, file_len, info) {
        Ok(h) => h,
        Err(e) => return Prepared::Failed(e),
    };
    let bytes = cost(&h);
    match budget.take(bytes, i) {
        Ok(()) => {}
        Err(true) => {
            return Prepared::Halt(corrupt(
                info.offset,
                format!(
                    "the chunks whose sequence ranges overlap at seq {} would hold more than {} \
                     MiB of events at once (a recording's chunks overlap far less: the file is \
                     damaged or crafted); reading stops here",
                    info.first_seq,
                    MAX_MERGE_BYTES >> 20
                ),
            ))
        }
        Err(false) => return Prepared::Failed(TraceError::Invalid("reading stopped".into())),
    }
    match load_checked(source, file_len, info, &h) {
        Ok(chunk) => Prepared::Ready(Box::new(Loaded {
            chunk,
            offset: info.offset,
            batch: Vec::new(),
            pos: 0,
            cost: bytes,
            budget: Arc::clone(budget),
        })),
        Err(e) => {
            budget.give_back(bytes);
            Prepared::Failed(e)
        }
    }
}

/// What the sequence numbers of the events yielded so far say.
#[derive(Default)]
struct SeqCheck {
    /// The last event yielded: (seq, ts_ns).
    last: Option<(u64, u64)>,
    repeats: u64,
    first_repeat: u64,
    gaps: u64,
    missing: u64,
    ranges: Vec<(u64, u64)>,
    /// Seqs the end status says no event holds (calls in flight when the process died), sorted.
    excused: Vec<u64>,
}

impl SeqCheck {
    /// True when `ev` comes after every event yielded (false: a repeat, to skip).
    fn admit(&mut self, ev: &Event) -> bool {
        let expected = match self.last {
            Some((last, _)) if ev.seq <= last => {
                if self.repeats == 0 {
                    self.first_repeat = ev.seq;
                }
                self.repeats += 1;
                return false;
            }
            // `last < ev.seq`, so `last + 1` does not overflow.
            Some((last, _)) => last + 1,
            None => 0,
        };
        let excused = self.excused.partition_point(|&s| s < ev.seq)
            - self.excused.partition_point(|&s| s < expected);
        if ev.seq > expected + excused as u64 {
            self.gaps += 1;
            self.missing += ev.seq - expected - excused as u64;
            if self.ranges.len() < SHOWN_RANGES {
                self.ranges.push((expected, ev.seq - 1));
            }
        }
        self.last = Some((ev.seq, ev.ts_ns));
        true
    }

    fn findings(&mut self) -> Vec<TraceError> {
        let mut out = Vec::new();
        if self.repeats > 0 {
            out.push(TraceError::SeqConflict {
                first: self.first_repeat,
                count: self.repeats,
            });
        }
        if self.gaps > 0 {
            out.push(TraceError::Missing {
                ranges: std::mem::take(&mut self.ranges),
                gaps: self.gaps,
                events: self.missing,
            });
        }
        out
    }
}

/// Iterator over a trace's events in global seq order; see the module comment.
pub struct Events<'r> {
    reader: &'r TraceReader,
    /// Chunks not yet taken, by first_seq.
    pending: VecDeque<ChunkInfo>,
    /// Chunks taken so far (the index of the next one in merge order).
    taken: usize,
    budget: Arc<Budget>,
    /// Prepared chunks, in merge order, from the decoder thread (started on first use; None
    /// before, or when no thread could be started).
    feed: Option<(mpsc::Receiver<Prepared>, std::thread::JoinHandle<()>)>,
    started: bool,
    /// Loaded chunks that are not current, keyed by their next seq.
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    slots: Vec<Option<Loaded>>,
    current: Option<Loaded>,
    /// The current chunk may emit while its next seq is at most this.
    bound: u64,
    check: SeqCheck,
    /// Set when the budget stopped the merge.
    halted: bool,
    /// Problems to yield after the events (filled when the events run out).
    tail: Option<VecDeque<TraceError>>,
}

impl<'r> Events<'r> {
    pub(crate) fn new(reader: &'r TraceReader) -> Events<'r> {
        let mut order: Vec<ChunkInfo> = reader.chunks().to_vec();
        order.sort_by_key(|c| (c.first_seq, c.offset));
        Events {
            reader,
            pending: order.into(),
            taken: 0,
            budget: Budget::new(),
            feed: None,
            started: false,
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            current: None,
            bound: 0,
            check: SeqCheck {
                excused: {
                    let mut v = reader
                        .end_status()
                        .map(|e| e.in_flight.clone())
                        .unwrap_or_default();
                    v.sort_unstable();
                    v
                },
                ..SeqCheck::default()
            },
            halted: false,
            tail: None,
        }
    }

    fn next_pending_seq(&self) -> u64 {
        self.pending.front().map_or(u64::MAX, |c| c.first_seq)
    }

    fn heap_top_seq(&self) -> u64 {
        self.heap.peek().map_or(u64::MAX, |Reverse((s, _))| *s)
    }

    fn refresh_bound(&mut self) {
        self.bound = self.next_pending_seq().min(self.heap_top_seq());
    }

    /// Parks `loaded` (whose head is decoded) among the loaded chunks.
    fn park(&mut self, loaded: Loaded) {
        let seq = loaded.batch[loaded.pos].seq;
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

    /// Takes the chunk at the front of `pending`.
    ///
    /// A decoder thread, started on first use, prepares the chunks in `pending` order a few ahead
    /// of the consumer, so that decoding overlaps the caller's work. It is a plain thread, not a
    /// rayon task: callers may iterate from inside rayon's pool, where blocking on pool work
    /// could deadlock. When the thread cannot be started, chunks are prepared here instead.
    fn next_chunk(&mut self) -> Prepared {
        let info = self.pending.pop_front().expect("a pending chunk");
        let i = self.taken;
        self.taken += 1;
        if !self.started {
            self.started = true;
            self.feed = self.start_decoder(info);
        }
        self.budget.request(i);
        let r = &self.reader;
        match &self.feed {
            Some((rx, _)) => rx.recv().unwrap_or_else(|_| {
                Prepared::Failed(TraceError::Invalid(
                    "the chunk decoder thread stopped unexpectedly".into(),
                ))
            }),
            None => prepare(&r.source, r.file_len, &info, i, &self.budget),
        }
    }

    /// Starts the decoder thread for `first` and every chunk still pending after it.
    fn start_decoder(
        &self,
        first: ChunkInfo,
    ) -> Option<(mpsc::Receiver<Prepared>, std::thread::JoinHandle<()>)> {
        let chunks: Vec<ChunkInfo> = std::iter::once(first)
            .chain(self.pending.iter().copied())
            .collect();
        let (tx, rx) = mpsc::sync_channel(READ_AHEAD);
        let source = Arc::clone(&self.reader.source);
        let file_len = self.reader.file_len;
        let budget = Arc::clone(&self.budget);
        let base = self.taken - 1;
        let spawned = std::thread::Builder::new()
            .name("atrace-decode".into())
            .spawn(move || {
                for (k, info) in chunks.iter().enumerate() {
                    let p = prepare(&source, file_len, info, base + k, &budget);
                    let halt = matches!(p, Prepared::Halt(_));
                    // A send fails once the iterator is dropped: nobody wants the rest.
                    if tx.send(p).is_err() || halt {
                        return;
                    }
                }
            });
        // Without a thread, `next_chunk` prepares chunks in the caller.
        spawned.ok().map(|handle| (rx, handle))
    }

    /// Stops the merge (the budget is spent): drops every chunk held; only the reader's problems
    /// are still to come.
    fn halt(&mut self) {
        self.halted = true;
        self.current = None;
        self.slots.clear();
        self.heap.clear();
        self.pending.clear();
        self.budget.close();
    }

    /// The problems that follow the events: what the seqs showed (unless the merge stopped
    /// early, when they would mislead), then the reader's, a `Cut` with the last event read.
    fn end(&mut self) -> VecDeque<TraceError> {
        let mut out: VecDeque<TraceError> = if self.halted {
            VecDeque::new()
        } else {
            self.check.findings().into()
        };
        for p in self.reader.problems() {
            out.push_back(match p {
                TraceError::Cut { start_unix_ns, .. } => TraceError::Cut {
                    last: self.check.last,
                    start_unix_ns: *start_unix_ns,
                },
                other => other.duplicate(),
            });
        }
        out
    }
}

impl Drop for Events<'_> {
    /// Stops the decoder thread and waits for it (at most the chunk it is preparing): no thread
    /// outlives the iterator.
    fn drop(&mut self) {
        self.budget.close();
        if let Some((rx, handle)) = self.feed.take() {
            // With the receiver gone, a send fails and the thread returns.
            drop(rx);
            let _ = handle.join();
        }
    }
}

impl Iterator for Events<'_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(cur) = &mut self.current {
                match cur.head() {
                    // `<=`: a seq equal to the bound can only be a repeat (skipped below), and
                    // emitting it is what keeps two chunks tied on one seq from looping forever.
                    Ok(Some(ev)) if ev.seq <= self.bound => {
                        cur.pos += 1;
                        if self.check.admit(&ev) {
                            return Some(Ok(ev));
                        }
                        continue;
                    }
                    Ok(Some(_)) => {
                        let cur = self.current.take().expect("current");
                        self.park(cur);
                    }
                    Ok(None) => self.current = None,
                    Err(e) => {
                        self.current = None;
                        self.refresh_bound();
                        return Some(Err(e));
                    }
                }
            }
            // Choose the next current chunk: a new one if it starts first, else the heap's top.
            if !self.halted
                && !self.pending.is_empty()
                && (self.heap.is_empty() || self.next_pending_seq() < self.heap_top_seq())
            {
                match self.next_chunk() {
                    Prepared::Ready(loaded) => self.current = Some(*loaded),
                    Prepared::Failed(e) => {
                        self.refresh_bound();
                        return Some(Err(e));
                    }
                    Prepared::Halt(e) => {
                        self.halt();
                        return Some(Err(e));
                    }
                }
            } else if let Some(Reverse((_, slot))) = self.heap.pop() {
                self.current = self.slots[slot].take();
            } else {
                if self.tail.is_none() {
                    self.tail = Some(self.end());
                }
                return self.tail.as_mut().and_then(VecDeque::pop_front).map(Err);
            }
            self.refresh_bound();
        }
    }
}
