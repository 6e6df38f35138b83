//! Reading back a process's trace after the run: what `record` prints, and a completeness check
//! (sequence numbers must be contiguous: a gap is a lost event).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use traces::TraceReader;

use crate::RecordError;

/// One trace file (one process image) as read back.
#[derive(Clone, Debug, Default)]
pub struct ProcessSummary {
    pub path: PathBuf,
    pub pid: u32,
    pub command: Vec<String>,
    pub events: u64,
    /// Distinct recorder thread numbers seen.
    pub threads: u64,
    /// From the first to the last event, ns.
    pub duration_ns: u64,
    /// How long the process image lived, ns, as the recorder reported at its last flush (0 when
    /// it did not report).
    pub lifetime_ns: u64,
    /// Size of the trace file, bytes.
    pub bytes: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Sequence numbers missing between the first and the last (lost events: must be 0).
    pub missing: u64,
    /// Events the recorder says it wrote to this file (from its last flush report), if it reported.
    pub written: Option<u64>,
    /// Times hooks of the process waited for the writer (ring full): backpressure, not loss.
    pub waits: u64,
    /// What capturing stacks cost, as the recorder reported at its last flush.
    pub unwinding: recorder_protocol::manifest::UnwindStats,
    /// A problem met reading (for example a tail cut off by SIGKILL), after every good event.
    pub problem: Option<String>,
    /// How the recording ended (None: the trace has no end record: it was cut).
    pub ended: Option<traces::EndStatus>,
}

impl ProcessSummary {
    pub fn bytes_per_event(&self) -> f64 {
        if self.events == 0 {
            0.0
        } else {
            self.bytes as f64 / self.events as f64
        }
    }

    /// The stack-capture figures for `record -v`, when stacks were captured.
    pub fn unwind_line(&self) -> Option<String> {
        let u = &self.unwinding;
        (u.captures > 0).then(|| {
            let frames = u.frames_unwound + u.frames_reused;
            format!(
                "pid {}: {} stacks captured, {:.1} frames each, {:.1}% of them taken over from \
                 the thread's previous stack, {:.1} unwound; unwind-rule cache hit {:.1}%",
                self.pid,
                u.captures,
                frames as f64 / u.captures as f64,
                100.0 * u.frames_reused as f64 / frames.max(1) as f64,
                u.frames_unwound as f64 / u.captures as f64,
                100.0 * u.cache_hits as f64 / u.cache_lookups.max(1) as f64
            )
        })
    }

    /// One line for the terminal.
    pub fn line(&self) -> String {
        let cmd = self.command.join(" ");
        let cmd = if cmd.chars().count() > 60 {
            format!("{}...", cmd.chars().take(57).collect::<String>())
        } else {
            cmd
        };
        format!(
            "pid {} ({}): {} events, {} threads, {:.2} s, {} trace bytes, {:.2} bytes/event -> {}",
            self.pid,
            cmd,
            self.events,
            self.threads,
            self.duration_ns as f64 / 1e9,
            self.bytes,
            self.bytes_per_event(),
            self.path.display()
        )
    }
}

/// Summarises a trace from its chunk directory, decoding only the first and last chunks (for the
/// duration): cheap even for billions of events. Counts and sequence gaps come from the directory
/// (chunks may overlap in seq, so a gap is `span - count`); threads are counted in the decoded
/// chunks only, so callers that know better (the recorder's own count) may overwrite `threads`.
/// [`verify`] reads every event instead.
pub fn summarize(path: &Path) -> Result<ProcessSummary, RecordError> {
    let err = |source| RecordError::Trace {
        path: path.display().to_string(),
        source,
    };
    let reader = TraceReader::open(path).map_err(err)?;
    let mut s = base(&reader, path);
    let chunks = reader.chunks();
    s.events = reader.event_count();
    if let (Some(lo), Some(hi)) = (
        chunks.iter().map(|c| c.first_seq).min(),
        chunks.iter().map(|c| c.last_seq).max(),
    ) {
        s.first_seq = Some(lo);
        s.last_seq = Some(hi);
        s.missing = (hi - lo + 1).saturating_sub(s.events);
    }
    s.missing = s.missing.saturating_sub(in_flight_gaps(&s));
    s.problem = reader.problems().first().map(|e| e.to_string());
    let mut threads = HashSet::new();
    let (mut first_ts, mut last_ts) = (u64::MAX, 0u64);
    let ends = [
        chunks.iter().min_by_key(|c| c.first_seq),
        chunks.iter().max_by_key(|c| c.last_seq),
    ];
    let mut buf = Vec::new();
    for c in ends.into_iter().flatten() {
        buf.clear();
        reader.read_chunk(c, &mut buf).map_err(err)?;
        for ev in &buf {
            threads.insert(ev.thread);
            first_ts = first_ts.min(ev.ts_ns);
            last_ts = last_ts.max(ev.ts_ns);
        }
    }
    s.threads = threads.len() as u64;
    s.duration_ns = last_ts.saturating_sub(first_ts.min(last_ts));
    Ok(s)
}

fn base(reader: &TraceReader, path: &Path) -> ProcessSummary {
    let h = reader.header();
    ProcessSummary {
        path: path.to_path_buf(),
        pid: h.pid,
        command: h.command.clone(),
        bytes: reader.file_len(),
        ended: reader.end_status().cloned(),
        ..ProcessSummary::default()
    }
}

/// Reads every event of a trace (in seq order) and checks its sequence numbers.
pub fn verify(path: &Path) -> Result<ProcessSummary, RecordError> {
    let err = |source| RecordError::Trace {
        path: path.display().to_string(),
        source,
    };
    let reader = TraceReader::open(path).map_err(err)?;
    let mut s = base(&reader, path);
    let mut threads = HashSet::new();
    let (mut first_ts, mut last_ts) = (u64::MAX, 0u64);
    for ev in reader.events() {
        match ev {
            Ok(ev) => {
                if let Some(last) = s.last_seq {
                    s.missing += ev.seq.saturating_sub(last + 1);
                } else {
                    s.first_seq = Some(ev.seq);
                }
                s.last_seq = Some(ev.seq);
                s.events += 1;
                threads.insert(ev.thread);
                first_ts = first_ts.min(ev.ts_ns);
                last_ts = last_ts.max(ev.ts_ns);
            }
            Err(e) => {
                s.problem = Some(e.to_string());
                break;
            }
        }
    }
    s.missing = s.missing.saturating_sub(in_flight_gaps(&s));
    s.threads = threads.len() as u64;
    s.duration_ns = last_ts.saturating_sub(first_ts.min(last_ts));
    Ok(s)
}

/// The gaps the end status explains: seqs taken by calls that had not returned when the process
/// was killed (never in the trace, never lost).
fn in_flight_gaps(s: &ProcessSummary) -> u64 {
    let (Some(lo), Some(hi), Some(end)) = (s.first_seq, s.last_seq, &s.ended) else {
        return 0;
    };
    end.in_flight.iter().filter(|&&q| lo < q && q < hi).count() as u64
}
