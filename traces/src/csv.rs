//! The CSV text form of a trace (contract in DESIGN.md), for hand-written workloads and for export.
//!
//! Columns are named by the header row, in any order. `op`, `id` and `size` are required; the
//! optional ones are `thread`, `align`, `ts_ns`, `noscan` (1 or 0), `old_id`, `addr`, and, so that
//! an export imports back to the same events, `seq`, `nmemb`, `failed`, `latency_ns`,
//! `old_addr`, `callsite`. Unknown columns are an error naming the column.
//!
//! `id` names an object: the new object for allocating ops, the freed object for `free`. A
//! `realloc` moves `old_id` to `id`; without `old_id` it resizes `id` in place when `id` is live
//! (and acts as malloc otherwise). Without `addr`, addresses are synthesised: unique among live
//! objects, aligned as requested.

use std::collections::HashMap;
use std::io::{Read, Write};

use crate::event::{Event, Op, PtrKind};
use crate::writer::TraceWriter;
use crate::{Result, TraceError};

const REQUIRED: [&str; 3] = ["op", "id", "size"];
const OPTIONAL: [&str; 12] = [
    "thread",
    "align",
    "ts_ns",
    "noscan",
    "old_id",
    "addr",
    "seq",
    "nmemb",
    "failed",
    "latency_ns",
    "old_addr",
    "callsite",
];
/// Column order of an export.
const EXPORT: [&str; 15] = [
    "seq",
    "thread",
    "ts_ns",
    "op",
    "id",
    "old_id",
    "size",
    "nmemb",
    "align",
    "noscan",
    "failed",
    "latency_ns",
    "addr",
    "old_addr",
    "callsite",
];

/// Where synthetic addresses start (an address no real heap on x86-64 Linux starts at).
const SYNTHETIC_BASE: u64 = 0x1000_0000;

/// Summary of an import.
#[derive(Debug, Default, Clone, Copy)]
pub struct ImportSummary {
    pub events: u64,
    /// True when the CSV had a `ts_ns` column (otherwise timestamps are synthetic).
    pub has_timestamps: bool,
}

struct Columns {
    index: HashMap<&'static str, usize>,
}

impl Columns {
    fn get<'r>(&self, rec: &'r csv::StringRecord, name: &str) -> &'r str {
        self.index
            .get(name)
            .and_then(|&i| rec.get(i))
            .map_or("", str::trim)
    }
}

/// Reads a CSV workload and writes its events with `writer`. Errors name the line and column.
pub fn import<R: Read, W: Write>(input: R, writer: &mut TraceWriter<W>) -> Result<ImportSummary> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .flexible(false)
        .from_reader(input);
    let headers = rdr.headers().map_err(|e| csv_error(&e, "header"))?.clone();
    let mut index = HashMap::new();
    for (i, name) in headers.iter().enumerate() {
        let known = REQUIRED.iter().chain(OPTIONAL.iter()).find(|k| **k == name);
        match known {
            Some(k) => {
                if index.insert(*k, i).is_some() {
                    return Err(bad(1, name, "column appears twice"));
                }
            }
            None => {
                return Err(bad(
                    1,
                    name,
                    &format!(
                        "unknown column (known: {}, {})",
                        REQUIRED.join(", "),
                        OPTIONAL.join(", ")
                    ),
                ))
            }
        }
    }
    for r in REQUIRED {
        if !index.contains_key(r) {
            return Err(bad(
                1,
                r,
                "missing column (the header row needs at least op,id,size)",
            ));
        }
    }
    let cols = Columns { index };
    let has_ts = cols.index.contains_key("ts_ns");
    let mut state = ImportState {
        live: HashMap::new(),
        next_addr: SYNTHETIC_BASE,
        last_seq: None,
    };
    let mut rec = csv::StringRecord::new();
    let mut events = 0u64;
    loop {
        match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(&e, "")),
        }
        let line = rec.position().map_or(0, |p| p.line());
        let ev = state.row(&cols, &rec, line, events)?;
        writer.push(&ev)?;
        events += 1;
    }
    Ok(ImportSummary {
        events,
        has_timestamps: has_ts,
    })
}

struct ImportState {
    /// Live object ids and their addresses.
    live: HashMap<String, u64>,
    next_addr: u64,
    last_seq: Option<u64>,
}

impl ImportState {
    fn row(&mut self, cols: &Columns, rec: &csv::StringRecord, line: u64, n: u64) -> Result<Event> {
        let field = |name: &str| cols.get(rec, name);
        let num = |name: &str| -> Result<Option<u64>> {
            let s = field(name);
            if s.is_empty() {
                return Ok(None);
            }
            parse_u64(s)
                .map(Some)
                .ok_or_else(|| bad(line, name, &format!("'{s}' is not a whole number")))
        };
        let op_name = field("op");
        let op = Op::from_name(op_name).ok_or_else(|| {
            let names: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
            bad(
                line,
                "op",
                &format!(
                    "unknown op '{op_name}' (expected one of {})",
                    names.join(", ")
                ),
            )
        })?;
        let mut ev = Event::new(op);
        ev.seq = match num("seq")? {
            Some(s) => s,
            None => self.last_seq.map_or(0, |l| l + 1),
        };
        if self.last_seq.is_some_and(|l| ev.seq <= l) {
            return Err(bad(
                line,
                "seq",
                "sequence numbers must increase from row to row",
            ));
        }
        self.last_seq = Some(ev.seq);
        ev.thread = match num("thread")? {
            Some(t) => {
                u32::try_from(t).map_err(|_| bad(line, "thread", "thread number too large"))?
            }
            None => 0,
        };
        ev.ts_ns = num("ts_ns")?.unwrap_or(n * 100);
        ev.latency_ns = match num("latency_ns")? {
            Some(l) => {
                u32::try_from(l).map_err(|_| bad(line, "latency_ns", "latency too large"))?
            }
            None => 0,
        };
        ev.callsite = match num("callsite")? {
            Some(c) => Some(u32::try_from(c).map_err(|_| bad(line, "callsite", "id too large"))?),
            None => None,
        };
        ev.failed = match field("failed") {
            "" | "0" => false,
            "1" => true,
            s => return Err(bad(line, "failed", &format!("'{s}' is not 1 or 0"))),
        };
        ev.kind = match field("noscan") {
            "" => PtrKind::Unknown,
            "1" => PtrKind::Noscan,
            "0" => PtrKind::Scan,
            s => return Err(bad(line, "noscan", &format!("'{s}' is not 1 or 0"))),
        };
        let id = field("id");
        if op.takes_address() {
            self.take_old(cols, rec, line, op, id, &mut ev, &num)?;
        }
        if op.returns_object() {
            ev.size =
                num("size")?.ok_or_else(|| bad(line, "size", &format!("{op} needs a size")))?;
            if op.has_nmemb() {
                ev.nmemb = num("nmemb")?.unwrap_or(1);
            }
            if op.has_align() {
                ev.align = num("align")?
                    .ok_or_else(|| bad(line, "align", &format!("{op} needs an alignment")))?;
            }
            let explicit = num("addr")?;
            if !ev.failed && ev.requested_bytes() > 0 || explicit.is_some_and(|a| a != 0) {
                if id.is_empty() {
                    return Err(bad(line, "id", "an allocation needs an id"));
                }
                if self.live.contains_key(id) {
                    return Err(bad(
                        line,
                        "id",
                        &format!("id '{id}' is already live; free it first"),
                    ));
                }
                ev.addr = explicit.unwrap_or_else(|| self.synthesise(&ev));
                if ev.addr != 0 {
                    self.live.insert(id.to_string(), ev.addr);
                }
            } else {
                ev.addr = explicit.unwrap_or(0);
            }
        }
        Ok(ev)
    }

    /// Fills `old_addr` for free / realloc / reallocarray and retires the old id.
    #[allow(clippy::too_many_arguments)]
    fn take_old(
        &mut self,
        cols: &Columns,
        rec: &csv::StringRecord,
        line: u64,
        op: Op,
        id: &str,
        ev: &mut Event,
        num: &dyn Fn(&str) -> Result<Option<u64>>,
    ) -> Result<()> {
        let (column, old_id) = if op == Op::Free {
            ("id", id)
        } else if cols.index.contains_key("old_id") {
            ("old_id", cols.get(rec, "old_id"))
        } else if self.live.contains_key(id) {
            ("id", id)
        } else {
            ("id", "")
        };
        let explicit = num("old_addr")?;
        if old_id.is_empty() {
            // free(NULL) / realloc(NULL, n), or an address outside the id namespace (export of an
            // anomaly).
            ev.old_addr = explicit.unwrap_or(0);
            return Ok(());
        }
        let Some(&addr) = self.live.get(old_id) else {
            return Err(bad(
                line,
                column,
                &format!("id '{old_id}' is not live (never allocated, or already freed)"),
            ));
        };
        ev.old_addr = explicit.unwrap_or(addr);
        let keeps_old = op != Op::Free && ev.failed && ev.requested_bytes() > 0;
        if !keeps_old {
            self.live.remove(old_id);
        }
        Ok(())
    }

    fn synthesise(&mut self, ev: &Event) -> u64 {
        let align = if ev.align.is_power_of_two() {
            ev.align.max(16)
        } else {
            16
        };
        let addr = self.next_addr.next_multiple_of(align);
        self.next_addr = addr + ev.requested_bytes().max(1).next_multiple_of(16) + 16;
        addr
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn bad(line: u64, column: &str, what: &str) -> TraceError {
    TraceError::Csv {
        line,
        column: column.to_string(),
        what: what.to_string(),
    }
}

fn csv_error(e: &csv::Error, column: &str) -> TraceError {
    let line = e.position().map_or(0, |p| p.line());
    let what = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("row has {len} fields but the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_string(),
        _ => e.to_string(),
    };
    bad(line, column, &what)
}

/// Writes events as CSV with every column, so that an import gives back the same events.
pub struct Exporter<W: Write> {
    out: csv::Writer<W>,
    /// Live addresses and the id (seq of the allocating event) they were given.
    live: rustc_hash::FxHashMap<u64, u64>,
}

impl<W: Write> Exporter<W> {
    pub fn new(out: W) -> Result<Self> {
        let mut out = csv::Writer::from_writer(out);
        out.write_record(EXPORT).map_err(io_error)?;
        Ok(Exporter {
            out,
            live: Default::default(),
        })
    }

    pub fn write(&mut self, ev: &Event) -> Result<()> {
        let opt = |v: u64, on: bool| if on { v.to_string() } else { String::new() };
        let mut old_id = String::new();
        if ev.op.takes_address() && ev.old_addr != 0 {
            if let Some(&id) = self.live.get(&ev.old_addr) {
                old_id = id.to_string();
                if ev.releases() {
                    self.live.remove(&ev.old_addr);
                }
            }
        }
        let mut id = String::new();
        if ev.op == Op::Free {
            std::mem::swap(&mut id, &mut old_id);
        } else if ev.addr != 0 {
            id = ev.seq.to_string();
            self.live.insert(ev.addr, ev.seq);
        }
        let noscan = match ev.kind {
            PtrKind::Unknown => "",
            PtrKind::Noscan => "1",
            PtrKind::Scan => "0",
        };
        let rec = [
            ev.seq.to_string(),
            ev.thread.to_string(),
            ev.ts_ns.to_string(),
            ev.op.name().to_string(),
            id,
            old_id,
            opt(ev.size, ev.op.returns_object()),
            opt(ev.nmemb, ev.op.has_nmemb()),
            opt(ev.align, ev.op.has_align()),
            noscan.to_string(),
            (ev.failed as u8).to_string(),
            ev.latency_ns.to_string(),
            hex(ev.addr, ev.op.returns_object()),
            hex(ev.old_addr, ev.op.takes_address()),
            ev.callsite.map_or(String::new(), |c| c.to_string()),
        ];
        self.out.write_record(&rec).map_err(io_error)
    }

    pub fn finish(mut self) -> Result<W> {
        self.out.flush()?;
        self.out
            .into_inner()
            .map_err(|e| TraceError::Write(e.into_error()))
    }
}

/// Addresses read better in hex; empty when the op has no such field.
fn hex(v: u64, on: bool) -> String {
    if on {
        format!("{v:#x}")
    } else {
        String::new()
    }
}

fn io_error(e: csv::Error) -> TraceError {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => TraceError::Write(io),
        other => TraceError::Invalid(format!("{other:?}")),
    }
}
