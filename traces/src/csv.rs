//! The CSV text form of a trace (contract in DESIGN.md), for hand-written workloads and for export.
//!
//! Columns are named by the header row, in any order. `op`, `id` and `size` are required; the
//! optional ones are `thread`, `align`, `ts_ns`, `noscan` (1 or 0), `old_id`, `addr`, and, so that
//! an export imports back to the same events, `seq`, `nmemb`, `failed`, `latency_ns`,
//! `old_addr`, `callsite`. Unknown columns are an error naming the column.
//!
//! `id` names an object: the new object for allocating ops, the freed object for `free`. A
//! `realloc` moves `old_id` to `id`; without `old_id` it resizes `id` in place when `id` is live
//! (and acts as malloc otherwise). Without `addr`, addresses are synthesised: never zero, never
//! given twice, aligned as requested, above every address the CSV gave itself.
//!
//! A request no allocator could satisfy ([`Event::could_succeed`]: `malloc(2^64-1)`, an
//! alignment of 2^63) is imported as a failed call (address 0, `failed`), as the real allocator
//! would answer, and so is a request the synthetic address space can no longer hold. The id of
//! a failed allocation then names NULL: a later `free` or `realloc` of it passes NULL.

use std::collections::HashMap;
use std::io::{Read, Write};

use crate::event::{Event, Op, PtrKind};
use crate::live::{LiveSet, Passed};
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
        synthetic: Synthetic {
            next: SYNTHETIC_BASE,
        },
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
    /// Object ids and their addresses: live objects, and (address 0) ids whose allocation
    /// failed, which a later `free` or `realloc` passes as NULL, as the program would.
    live: HashMap<String, u64>,
    synthetic: Synthetic,
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
        // The request and its outcome first: whether a realloc released its block depends on it.
        let mut returns = None;
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
            let addr = self.outcome(&mut ev, num("addr")?);
            ev.addr = addr.unwrap_or(0);
            returns = Some(addr);
        }
        if op.takes_address() {
            self.take_old(cols, rec, line, op, id, &mut ev, &num)?;
        }
        if let Some(addr) = returns {
            self.take_new(line, id, addr)?;
        }
        Ok(ev)
    }

    /// Decides what an allocating call returned (`None`: no object, a NULL) and marks it failed
    /// when it could not succeed: a request no allocator could satisfy
    /// ([`Event::could_succeed`]) fails whatever the row says, as the real allocator would answer.
    fn outcome(&mut self, ev: &mut Event, explicit: Option<u64>) -> Option<u64> {
        if !ev.could_succeed() {
            ev.failed = true;
            return None;
        }
        match explicit {
            Some(0) => None,
            Some(addr) => {
                self.synthetic.skip_past(addr, ev.requested_bytes());
                Some(addr)
            }
            None if ev.failed || ev.requested_bytes() == 0 => None,
            None => {
                let addr = self.synthetic.place(ev);
                ev.failed = addr.is_none();
                addr
            }
        }
    }

    /// Fills `old_addr` for free / realloc / reallocarray and retires the old id when the call
    /// released it.
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
        } else if self.live.get(id).is_some_and(|&a| a != 0) {
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
        if ev.releases() {
            self.live.remove(old_id);
        }
        Ok(())
    }

    /// Gives the object `id` the address the call returned (`None`: NULL).
    fn take_new(&mut self, line: u64, id: &str, addr: Option<u64>) -> Result<()> {
        let Some(addr) = addr else {
            if !id.is_empty() && !self.live.contains_key(id) {
                self.live.insert(id.to_string(), 0);
            }
            return Ok(());
        };
        if id.is_empty() {
            return Err(bad(line, "id", "an allocation needs an id"));
        }
        if self.live.get(id).is_some_and(|&a| a != 0) {
            return Err(bad(
                line,
                "id",
                &format!("id '{id}' is already live; free it first"),
            ));
        }
        self.live.insert(id.to_string(), addr);
        Ok(())
    }
}

/// Synthesised addresses: a bump pointer from [`SYNTHETIC_BASE`] that never goes back, so an
/// address is never given twice; each object is aligned as requested (16 bytes at least, as
/// malloc's) and followed by a 16-byte gap. Later addresses also start above every explicit
/// address seen, so they never land on an object the CSV placed itself.
struct Synthetic {
    next: u64,
}

impl Synthetic {
    /// An address for the object `ev` asks for, or `None` when the 64-bit space left cannot
    /// hold it (a real allocator would be out of memory).
    fn place(&mut self, ev: &Event) -> Option<u64> {
        let align = if ev.op.has_align() && ev.align.is_power_of_two() {
            ev.align.max(16)
        } else {
            16
        };
        let addr = self.next.checked_next_multiple_of(align)?;
        let bytes = ev.requested_bytes().max(1).checked_next_multiple_of(16)?;
        self.next = addr.checked_add(bytes)?.checked_add(16)?;
        Some(addr)
    }

    /// The CSV placed an object of `bytes` at `addr` itself.
    fn skip_past(&mut self, addr: u64, bytes: u64) {
        if let Some(end) = addr.checked_add(bytes) {
            self.next = self.next.max(end);
        }
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
    /// The live blocks, by the shared rule, each with its id: the seq of the event that
    /// returned it.
    live: LiveSet<u64>,
}

impl<W: Write> Exporter<W> {
    pub fn new(out: W) -> Result<Self> {
        let mut out = csv::Writer::from_writer(out);
        out.write_record(EXPORT).map_err(io_error)?;
        Ok(Exporter {
            out,
            live: LiveSet::new(None),
        })
    }

    pub fn write(&mut self, ev: &Event) -> Result<()> {
        let opt = |v: u64, on: bool| if on { v.to_string() } else { String::new() };
        let step = self.live.step(ev);
        let mut old_id = match step.passed {
            Passed::Released(b) | Passed::Kept(b) => b.data.to_string(),
            Passed::Nothing | Passed::NotLive(_) => String::new(),
        };
        if let Some(born) = step.born {
            born.data = ev.seq;
        }
        let mut id = String::new();
        if ev.op == Op::Free {
            std::mem::swap(&mut id, &mut old_id);
        } else if ev.addr != 0 {
            id = ev.seq.to_string();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::LiveSet;
    use crate::{Header, TraceReader};

    /// Imports `csv` and reads the events back from a real trace file.
    fn import_text(csv: &str) -> Result<Vec<Event>> {
        let mut w = TraceWriter::new(Vec::new(), &Header::default())?;
        import(csv.as_bytes(), &mut w)?;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.atrace");
        std::fs::write(&path, w.finish()?).unwrap();
        TraceReader::open(&path)?.events().collect()
    }

    /// Every synthesised object: non-zero, aligned as asked, not overlapping another live one.
    fn assert_valid_addresses(events: &[Event]) {
        let mut live: std::collections::BTreeMap<u64, u64> = Default::default();
        for e in events {
            if e.releases() {
                live.remove(&e.old_addr);
            }
            if e.allocates() {
                let size = e.requested_bytes().max(1);
                if e.op.has_align() && e.align.is_power_of_two() {
                    assert_eq!(e.addr % e.align, 0, "{e:?} not aligned");
                }
                assert_eq!(e.addr % 16, 0, "{e:?}");
                let end = e.addr.checked_add(size).expect("object wraps past 2^64");
                if let Some((&a, &s)) = live.range(..=e.addr).next_back() {
                    assert!(a + s <= e.addr, "{e:?} overlaps the object at {a:#x}");
                }
                if let Some((&a, _)) = live.range(e.addr..).next() {
                    assert!(end <= a, "{e:?} overlaps the object at {a:#x}");
                }
                live.insert(e.addr, size);
            }
        }
    }

    #[test]
    fn requests_no_allocator_could_satisfy_become_failed_calls() {
        let csv = "op,id,size,nmemb,align\n\
                   malloc,huge,18446744073709551615,,\n\
                   free,huge,,,\n\
                   calloc,overflow,4611686018427387904,8,\n\
                   posix_memalign,a63,64,,9223372036854775808\n\
                   aligned_alloc,a48,64,,281474976710656\n\
                   malloc,big,281474976710657,,\n\
                   malloc,ok,100,,\n\
                   realloc,ok2,18446744073709551615,,\n\
                   free,ok,,,\n";
        let ev = import_text(csv).unwrap();
        for i in [0, 2, 3, 4, 5] {
            assert!(ev[i].failed && ev[i].addr == 0, "{:?}", ev[i]);
        }
        // The id of a failed allocation names NULL: its free is free(NULL).
        assert_eq!((ev[1].op, ev[1].old_addr), (Op::Free, 0));
        // realloc(NULL, 2^64-1) fails too; `ok` is freed after it.
        assert!(ev[7].failed && ev[7].old_addr == 0 && ev[7].addr == 0);
        assert!(ev[6].allocates() && ev[8].old_addr == ev[6].addr);
        let mut set = LiveSet::<()>::new(None);
        for e in &ev {
            set.step(e);
        }
        assert_eq!(set.anomalies().failed_calls, 6);
        assert_eq!(set.anomalies().inconsistencies(), 0);
    }

    #[test]
    fn huge_alignments_get_valid_distinct_addresses() {
        let mut csv = String::from("op,id,size,align\n");
        for (i, shift) in [4u32, 12, 21, 30, 40, 44, 46, 47, 47, 47]
            .iter()
            .enumerate()
        {
            csv += &format!("posix_memalign,p{i},{},{}\n", 1u64 << 20, 1u64 << shift);
            csv += &format!("malloc,m{i},{},\n", 24 + i);
        }
        let ev = import_text(&csv).unwrap();
        assert!(ev.iter().all(|e| e.allocates()), "{ev:?}");
        assert_valid_addresses(&ev);
    }

    #[test]
    fn the_synthetic_space_running_out_fails_requests_instead_of_wrapping() {
        // 2^48-byte requests (the most one can get): the 64-bit space holds 2^16 of them.
        let mut csv = String::from("op,id,size\n");
        for i in 0..70_000 {
            csv += &format!("malloc,o{i},{}\n", 1u64 << 48);
        }
        let ev = import_text(&csv).unwrap();
        let ok = ev.iter().filter(|e| e.allocates()).count();
        assert!((60_000..70_000).contains(&ok), "{ok} allocated");
        assert!(ev[ok..].iter().all(|e| e.failed && e.addr == 0));
        assert_valid_addresses(&ev);
    }

    #[test]
    fn synthesised_addresses_never_land_on_given_ones() {
        let csv = "op,id,size,addr\n\
                   malloc,a,100,0x10000000\n\
                   malloc,b,100,\n\
                   malloc,c,64,0x10000400\n\
                   malloc,d,4096,\n";
        let ev = import_text(csv).unwrap();
        assert!(ev.iter().all(|e| e.allocates()));
        assert_valid_addresses(&ev);
    }

    #[test]
    fn a_failed_realloc_keeps_its_object_and_realloc_to_zero_frees_it() {
        let csv = "op,id,old_id,size,failed\n\
                   malloc,p,,100,\n\
                   realloc,q,p,500,1\n\
                   free,p,,,\n\
                   malloc,r,,100,\n\
                   realloc,,r,0,1\n\
                   malloc,s,,10,\n\
                   realloc,,s,0,\n";
        let ev = import_text(csv).unwrap();
        assert_eq!(
            ev[2].old_addr, ev[0].addr,
            "p is still live after the failed realloc"
        );
        assert!(!ev[1].releases() && ev[1].failed_call());
        for (i, alloc) in [(4, 3), (6, 5)] {
            assert_eq!(ev[i].old_addr, ev[alloc].addr);
            assert!(ev[i].frees_by_realloc() && ev[i].releases() && !ev[i].failed_call());
        }
        let mut set = LiveSet::<()>::new(None);
        for e in &ev {
            set.step(e);
        }
        assert_eq!((set.len(), set.anomalies().failed_calls), (0, 1));
    }
}
