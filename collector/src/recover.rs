//! Finishing the traces of process images that died.
//!
//! A process image finishes its own trace (index and end status) at exit and at exec. One that dies
//! otherwise (a signal, SIGKILL included, a crash) leaves a trace without an end, and in its ring
//! files in the spool directory every record it had not written yet (`recorder_protocol::ring`).
//! After the run, `record` adds those records to the trace, applies the same order rule the writer
//! applies, and finishes it with an end status that says what happened: killed by signal N when
//! `record` saw the signal (its own child), died otherwise, stopped when the recorder reported an
//! error for that trace.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use recorder_protocol::order::{order_moving_reallocs, Pending};
use recorder_protocol::ring::{parse_file_name, read_ring_file, Record};
use recorder_protocol::stacks;
use recorder_protocol::{to_event, Timebase};
use traces::{EndStatus, Ending, TraceReader, TraceWriter, WriterOptions};

use crate::RecordError;

/// A process image that wrote a trace (a `trace` line of the manifest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub pid: u32,
    pub image: u64,
    pub path: PathBuf,
}

/// How the run ended for the top process, as `record` saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopExit {
    pub pid: u32,
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// What happened to one trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finished {
    /// The image finished its trace itself: nothing to do.
    Already,
    /// `record` finished it: how, and how many events came from the rings.
    ByRecord(EndStatus),
    /// The image is still running (a process that outlived the command): left alone.
    StillRunning,
}

/// How far below the first record left in the rings a call in flight may have taken its seq (the
/// writer holds back what follows an unfinished call, so its hole is near the end).
const IN_FLIGHT_WINDOW: u64 = 1 << 16;

/// Ring files (and the stack trie file) of each (pid, image) in `spool`: what a process image
/// leaves there.
fn ring_files(spool: &Path) -> HashMap<(u32, u64), Vec<PathBuf>> {
    let mut by_image: HashMap<(u32, u64), Vec<PathBuf>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir(spool) else {
        return by_image;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let key = name
            .to_str()
            .and_then(|n| parse_file_name(n).or_else(|| stacks::parse_file_name(n)));
        if let Some(key) = key {
            by_image.entry(key).or_default().push(entry.path());
        }
    }
    by_image
}

/// True while some process maps one of `files` (the image that owns them is alive: a process
/// unmaps its ring files when it dies or execs, and a fork child maps its own).
fn mapped_by(pid: u32, files: &[PathBuf]) -> bool {
    let Ok(maps) = std::fs::read(format!("/proc/{pid}/maps")) else {
        return false;
    };
    let maps = String::from_utf8_lossy(&maps);
    files.iter().any(|f| maps.contains(&*f.to_string_lossy()))
}

/// True when `pid` exists (and is not a zombie).
fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            // The state follows the command name in parentheses, which may hold spaces.
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// Finishes every trace of `images` whose process image died without finishing it; removes the
/// ring files of every image that is not running. `errors` holds the recorder's error message per
/// trace path; `clock` is the calibration the session's processes used.
pub fn finish_traces(
    spool: Option<&Path>,
    images: &[Image],
    top: TopExit,
    errors: &HashMap<PathBuf, String>,
    clock: cycle_clock::Calibration,
) -> Vec<(PathBuf, Result<Finished, RecordError>)> {
    let mut rings = spool.map(ring_files).unwrap_or_default();
    // The last image of each pid is the one that may still run; earlier ones ended with an exec.
    let mut last_of_pid: HashMap<u32, u64> = HashMap::new();
    for im in images {
        last_of_pid.insert(im.pid, im.image);
    }
    let mut out = Vec::new();
    for im in images {
        let files = rings.remove(&(im.pid, im.image)).unwrap_or_default();
        let latest = last_of_pid.get(&im.pid) == Some(&im.image);
        let running = if files.is_empty() {
            latest && pid_alive(im.pid) && top.pid != im.pid
        } else {
            mapped_by(im.pid, &files)
        };
        let result = if running {
            Ok(Finished::StillRunning)
        } else {
            let signal = (latest && im.pid == top.pid)
                .then_some(top)
                .and_then(|t| t.signal);
            let r = finish_one(&im.path, &files, signal, errors.get(&im.path), clock);
            for f in &files {
                let _ = std::fs::remove_file(f);
            }
            r
        };
        out.push((im.path.clone(), result));
    }
    // Ring files of images that never wrote a trace line (they died in their constructor).
    for files in rings.values() {
        for f in files {
            let _ = std::fs::remove_file(f);
        }
    }
    out
}

/// The records of an image's ring files not yet in its trace, seq-ordered, duplicates (a ring that
/// moved to a new file while the process died) dropped, with the origin of the image's clock and
/// the in-flight watermarks of the rings whose thread died inside a hook.
fn pending_records(files: &[PathBuf]) -> (Vec<Record>, u64, Vec<u64>) {
    let mut all = Vec::new();
    let mut origin = 0;
    let mut watermarks = Vec::new();
    for f in files {
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        if let Ok(ring) = read_ring_file(&bytes) {
            origin = ring.origin;
            watermarks.extend(ring.inflight);
            all.extend(ring.pending);
        }
    }
    all.sort_unstable_by_key(|r| r.seq);
    all.dedup_by_key(|r| r.seq);
    (all, origin, watermarks)
}

/// The seqs the trace at `path` already holds between `lo` and `hi` (only the chunks whose range
/// overlaps are decoded).
fn seqs_in_trace(
    reader: &TraceReader,
    lo: u64,
    hi: u64,
) -> Result<HashSet<u64>, traces::TraceError> {
    let mut seen = HashSet::new();
    let mut buf = Vec::new();
    for c in reader.chunks() {
        if c.last_seq < lo || c.first_seq > hi {
            continue;
        }
        buf.clear();
        reader.read_chunk(c, &mut buf)?;
        seen.extend(buf.iter().map(|e| e.seq).filter(|s| (lo..=hi).contains(s)));
    }
    Ok(seen)
}

fn finish_one(
    path: &Path,
    files: &[PathBuf],
    signal: Option<i32>,
    error: Option<&String>,
    clock: cycle_clock::Calibration,
) -> Result<Finished, RecordError> {
    let err = |source| RecordError::Trace {
        path: path.display().to_string(),
        source,
    };
    let (mut records, origin, watermarks) = pending_records(files);
    let reader = TraceReader::open(path).map_err(err)?;
    let previous_end = reader.end_status().cloned();
    if records.is_empty() && previous_end.is_some() {
        return Ok(Finished::Already);
    }
    // (A finished trace with events left in its rings: late frees of a process killed after its
    // exit path began.)
    //
    // The seqs that neither the trace nor the rings hold were taken by calls that had not
    // returned when the process died (at most one per thread): the end status lists them. Each
    // lies above its ring's in-flight watermark (which the writer may have passed, after a while,
    // for a thread stalled in its hook), or near the end: those windows are searched.
    let trace_hi = reader.chunks().iter().map(|c| c.last_seq).max();
    let hi = records.last().map(|r| r.seq).max(trace_hi).unwrap_or(0);
    let lo = records
        .first()
        .map_or(hi, |r| r.seq.min(hi))
        .saturating_sub(IN_FLIGHT_WINDOW);
    let mut windows: Vec<(u64, u64)> = watermarks
        .iter()
        .filter(|&&w| w < lo)
        .map(|&w| (w, w.saturating_add(IN_FLIGHT_WINDOW).min(lo)))
        .chain([(lo, hi)])
        .collect();
    windows.sort_unstable();
    let mut seen = HashSet::new();
    for &(a, b) in &windows {
        seen.extend(seqs_in_trace(&reader, a, b).map_err(err)?);
    }
    records.retain(|r| !seen.contains(&r.seq));
    let in_flight: Vec<u64> = if trace_hi.is_some() || !records.is_empty() {
        let mut held: HashSet<u64> = seen;
        held.extend(records.iter().map(|r| r.seq));
        let mut holes: Vec<u64> = windows
            .iter()
            .flat_map(|&(a, b)| a..=b)
            .filter(|s| !held.contains(s))
            .collect();
        holes.sort_unstable();
        holes.dedup();
        holes
    } else {
        Vec::new()
    };
    // More holes than threads could have made is not calls in flight: left for readers to report.
    let rings = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "ring"))
        .count();
    let in_flight = if in_flight.len() <= rings.max(1) {
        in_flight
    } else {
        Vec::new()
    };
    // Stack nodes the process had not written yet: after those the trace holds.
    let nodes_in_trace = reader.stacks().0.len();
    let nodes: Vec<(u32, u64)> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "stacks"))
        .filter_map(|f| std::fs::read(f).ok())
        .filter_map(|b| stacks::read_stack_file(&b, nodes_in_trace + 1).ok())
        .flatten()
        .map(|(_, parent, addr)| (parent, addr))
        .collect();
    drop(reader);
    let time = Timebase { origin, clock };
    let mut batch: Vec<Pending<()>> = records
        .iter()
        .map(|r| Pending {
            event: to_event(r, &time),
            window: r.window(),
            tag: (),
        })
        .collect();
    order_moving_reallocs(&mut batch);
    let mut end = match (error, previous_end) {
        (Some(e), _) => EndStatus {
            note: e.clone(),
            ..EndStatus::new(Ending::Stopped)
        },
        // Finished already, then a few late events were left in the rings.
        (None, Some(end)) => end,
        (None, None) => match signal {
            Some(sig) => EndStatus {
                signal: Some(sig),
                ..EndStatus::new(Ending::Killed)
            },
            None => EndStatus::new(Ending::Died),
        },
    };
    end.recovered_events += batch.len() as u64;
    end.in_flight = in_flight;
    let resumed = TraceWriter::resume(path, WriterOptions::default()).map_err(err)?;
    let mut w = resumed.writer;
    if !nodes.is_empty() {
        w.write_stacks(nodes_in_trace + 1, &nodes).map_err(err)?;
    }
    let events: Vec<traces::Event> = batch.iter().map(|p| p.event).collect();
    for part in events.chunks(1 << 20) {
        let watermark = part.last().map_or(0, |e| e.seq + 1);
        w.write_chunk(part, watermark).map_err(err)?;
    }
    w.finish_with(&end).map_err(err)?;
    Ok(Finished::ByRecord(end))
}
