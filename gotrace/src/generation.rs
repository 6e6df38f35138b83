//! Generations. The runtime cuts a trace into generations (about one a second); each has its own
//! string, stack and type tables and its own sync batch (clock frequency), and type ids restart in
//! every generation. The tables may come after the events that use them (the type table is
//! written when the generation ends), so a generation is read in two passes over the file: first
//! its batch headers (seeking over the data) and its small tables, then its event batches,
//! merged across Ms (`merge.rs`). Memory: one entry per batch ([`MAX_BATCHES`] at most), the
//! tables, and one batch buffer per M while merging.

use crate::batch::{read_batch, read_data, Batch, BatchKind};
use crate::format::Format;
use crate::source::Source;
use crate::spec::{ev, EXPERIMENT_ALLOC_FREE};
use crate::wire::uvarint;
use crate::GoTraceError;

/// The most batches one generation may have (about 64 GiB of full batches): a claim past it is
/// refused rather than indexed.
pub const MAX_BATCHES: usize = 1 << 20;
/// The most bytes of alloc/free tables (types, info) one generation may have.
pub const MAX_TABLE_BYTES: usize = 64 << 20;

/// What the runtime says about its heap, once per trace (the info batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeapInfo {
    /// `minPageHeapAddr`: object and span ids are offsets from it.
    pub min_heap_addr: u64,
    /// The heap's page size (8192).
    pub page_bytes: u64,
    /// `MinHeapAlign` (8): object ids count units of it.
    pub min_heap_align: u64,
    /// `fixedStack` (goroutine stack ids count units of it).
    pub fixed_stack_bytes: u64,
}

/// One entry of a generation's type table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeEntry {
    /// The id events of this generation use.
    pub id: u64,
    /// The type's size in bytes.
    pub size: u64,
    /// Bytes of the type's prefix that can hold pointers (0: the type holds none).
    pub ptr_bytes: u64,
    pub name: String,
}

/// The clock of a generation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    /// Timestamp units per second (0 when the generation had no sync batch).
    pub units_per_s: u64,
    /// Format 25+: a timestamp and the wall clock at it (seconds, nanoseconds).
    pub snapshot: Option<(u64, u64, u64)>,
}

/// The batches of one M in a generation, in file order (which is that M's time order).
#[derive(Clone, Debug)]
pub struct MBatches {
    pub m: u64,
    pub batches: Vec<Batch>,
}

/// A generation's index and tables.
#[derive(Debug)]
pub struct Generation {
    pub number: u64,
    /// Offset of its first batch.
    pub offset: u64,
    /// Offset just past it (its last batch or its end marker).
    pub end: u64,
    pub clock: Clock,
    /// Smallest batch timestamp.
    pub min_time: u64,
    pub ms: Vec<MBatches>,
    pub info: Option<HeapInfo>,
    pub types: Vec<TypeEntry>,
    /// Batches of experiments other than AllocFree (skipped): (experiment, offset) of the first.
    pub unknown_experiment: Option<(u8, u64)>,
    /// Problems met while reading it; the last one, if any, also ended the trace.
    pub problems: Vec<GoTraceError>,
    /// Whether reading must stop after this generation (the file ended or was damaged).
    pub last: bool,
}

/// Reads the generation that starts at `offset`. `Ok(None)` at the end of the file.
pub fn read_generation(
    src: &(impl Source + ?Sized),
    format: Format,
    offset: u64,
    file_len: u64,
) -> Result<Option<Generation>, GoTraceError> {
    let mut g = Generation {
        number: 0,
        offset,
        end: offset,
        clock: Clock::default(),
        min_time: u64::MAX,
        ms: Vec::new(),
        info: None,
        types: Vec::new(),
        unknown_experiment: None,
        problems: Vec::new(),
        last: false,
    };
    let mut pos = offset;
    let mut batches = 0usize;
    let mut table_bytes = 0usize;
    let mut buf = Vec::new();
    loop {
        let batch = match read_batch(src, format, pos, file_len) {
            Ok(Some(b)) => b,
            Ok(None) => {
                g.last = true;
                if format >= Format::Go126 && g.number != 0 {
                    g.problems.push(GoTraceError::Truncated {
                        offset: pos,
                        what: format!("generation {} (no end-of-generation mark)", g.number),
                    });
                }
                break;
            }
            Err(GoTraceError::Read(e)) => return Err(GoTraceError::Read(e)),
            Err(e) => {
                g.last = true;
                g.problems.push(e);
                break;
            }
        };
        if batch.kind == BatchKind::EndOfGeneration {
            pos = batch.end();
            if g.number == 0 {
                // An empty generation: nothing to do but go on.
                continue;
            }
            break;
        }
        if g.number == 0 {
            g.number = batch.gen;
        } else if batch.gen != g.number {
            if format < Format::Go126 && batch.gen == g.number.wrapping_add(1) {
                break; // The next generation starts here.
            }
            g.last = true;
            g.problems.push(GoTraceError::Corrupt {
                offset: batch.offset,
                what: format!(
                    "a batch of generation {} inside generation {} (generations interleaved)",
                    batch.gen, g.number
                ),
            });
            break;
        }
        batches += 1;
        if batches > MAX_BATCHES {
            g.last = true;
            g.problems.push(GoTraceError::Limit {
                offset: batch.offset,
                what: format!(
                    "generation {} has more than {MAX_BATCHES} batches",
                    g.number
                ),
            });
            break;
        }
        pos = batch.end();
        g.min_time = g.min_time.min(batch.time);
        match batch.kind {
            BatchKind::Events => match g.ms.iter_mut().find(|m| m.m == batch.m) {
                Some(m) => m.batches.push(batch),
                None => g.ms.push(MBatches {
                    m: batch.m,
                    batches: vec![batch],
                }),
            },
            BatchKind::Sync => {
                read_data(src, &batch, &mut buf)?;
                if g.clock.units_per_s == 0 {
                    if let Err(what) = read_sync(format, &batch, &buf, &mut g.clock) {
                        g.problems.push(GoTraceError::Corrupt {
                            offset: batch.offset,
                            what,
                        });
                    }
                }
            }
            BatchKind::Experimental(EXPERIMENT_ALLOC_FREE) => {
                table_bytes += batch.size as usize;
                if table_bytes > MAX_TABLE_BYTES {
                    g.last = true;
                    g.problems.push(GoTraceError::Limit {
                        offset: batch.offset,
                        what: format!(
                            "generation {} has more than {MAX_TABLE_BYTES} bytes of type tables",
                            g.number
                        ),
                    });
                    break;
                }
                read_data(src, &batch, &mut buf)?;
                if let Err(what) = read_alloc_free_table(&buf, &mut g) {
                    g.problems.push(GoTraceError::Corrupt {
                        offset: batch.offset,
                        what,
                    });
                }
            }
            BatchKind::Experimental(e) => {
                g.unknown_experiment.get_or_insert((e, batch.offset));
            }
            BatchKind::Stacks | BatchKind::Strings | BatchKind::CpuSamples => {}
            BatchKind::EndOfGeneration => unreachable!("handled above"),
        }
    }
    g.end = pos;
    if g.number == 0 && g.problems.is_empty() {
        return Ok(None);
    }
    if g.min_time == u64::MAX {
        g.min_time = 0;
    }
    Ok(Some(g))
}

/// Parses a sync batch: `Frequency` (and from format 25 a `ClockSnapshot`).
fn read_sync(format: Format, batch: &Batch, data: &[u8], clock: &mut Clock) -> Result<(), String> {
    let mut pos = 0;
    if format >= Format::Go125 {
        pos = 1; // the Sync byte
    }
    let mut last = batch.time;
    while pos < data.len() {
        let typ = data[pos];
        pos += 1;
        let mut next = || uvarint(data, &mut pos).map_err(|e| format!("sync batch: {e}"));
        match typ {
            ev::FREQUENCY => clock.units_per_s = next()?,
            ev::CLOCK_SNAPSHOT if format >= Format::Go125 => {
                last = last.wrapping_add(next()?);
                let _mono = next()?;
                let (sec, nsec) = (next()?, next()?);
                clock.snapshot = Some((last, sec, nsec));
            }
            t => return Err(format!("sync batch: unexpected event type {t}")),
        }
    }
    if clock.units_per_s == 0 {
        return Err("sync batch without a clock frequency".into());
    }
    Ok(())
}

/// Parses an AllocFree experimental batch: byte 0 says which table, the rest is its entries.
fn read_alloc_free_table(data: &[u8], g: &mut Generation) -> Result<(), String> {
    const TYPES: u8 = 0;
    const INFO: u8 = 1;
    let Some((&which, _)) = data.split_first() else {
        return Ok(());
    };
    let mut pos = 1;
    let next = |pos: &mut usize, what: &str| {
        uvarint(data, pos).map_err(|e| format!("alloc/free {what}: {e}"))
    };
    match which {
        INFO => {
            let info = HeapInfo {
                min_heap_addr: next(&mut pos, "info")?,
                page_bytes: next(&mut pos, "info")?,
                min_heap_align: next(&mut pos, "info")?,
                fixed_stack_bytes: next(&mut pos, "info")?,
            };
            if !info.page_bytes.is_power_of_two()
                || !info.min_heap_align.is_power_of_two()
                || info.min_heap_align > info.page_bytes
            {
                return Err(format!(
                    "alloc/free info: page size {} and alignment {} are not powers of two with \
                     alignment <= page size",
                    info.page_bytes, info.min_heap_align
                ));
            }
            g.info = Some(info);
            Ok(())
        }
        TYPES => {
            while pos < data.len() {
                let id = next(&mut pos, "type id")?;
                let _addr = next(&mut pos, "type address")?;
                let size = next(&mut pos, "type size")?;
                let ptr_bytes = next(&mut pos, "type pointer bytes")?;
                let len = next(&mut pos, "type name length")?;
                let end = pos
                    .checked_add(usize::try_from(len).unwrap_or(usize::MAX))
                    .filter(|&e| e <= data.len())
                    .ok_or_else(|| {
                        format!("type {id}: a name of {len} bytes runs past its batch")
                    })?;
                let name = String::from_utf8_lossy(&data[pos..end]).into_owned();
                pos = end;
                g.types.push(TypeEntry {
                    id,
                    size,
                    ptr_bytes,
                    name,
                });
            }
            Ok(())
        }
        t => Err(format!("alloc/free table of unknown kind {t}")),
    }
}
