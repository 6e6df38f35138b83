//! The digest that ties a replay JSON to the trace it replayed: `replay` writes it into the
//! JSON's `trace` object and `report --replay` checks it (with the event count) before it puts
//! the replay's figures beside the trace's.
//!
//! It is computed from what the public traces API says about a file without decoding it: the
//! header (recorder, command, pid, start time, host...), the file length and the chunk directory
//! (offset, compressed length, event count and seq range of every chunk), as SHA-256 in hex,
//! prefixed `sha256:`. It names a recording, cheaply for any size: two recordings differ in
//! their header (pid and start time), and a trace rewritten or cut differs in its directory.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The digest of an open trace.
pub fn of(reader: &traces::TraceReader) -> String {
    let mut h = Sha256::new();
    h.update(b"allocscope trace digest 1\0");
    h.update(serde_json::to_vec(reader.header()).unwrap_or_default());
    h.update(reader.file_len().to_le_bytes());
    for c in reader.chunks() {
        h.update(c.offset.to_le_bytes());
        h.update(c.compressed_len.to_le_bytes());
        h.update(c.count.to_le_bytes());
        h.update(c.first_seq.to_le_bytes());
        h.update(c.last_seq.to_le_bytes());
    }
    let bytes = h.finalize();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Adds `digest` to a replay document's `trace` object.
pub fn stamp(doc: &mut Value, digest: &str) {
    if let Some(t) = doc.get_mut("trace").and_then(Value::as_object_mut) {
        t.insert("digest".into(), Value::String(digest.to_string()));
    }
}

/// What a replay JSON says about the trace it replayed, set against the trace at hand.
#[derive(Debug, PartialEq, Eq)]
pub enum Match {
    Same,
    /// An older replay JSON without a digest whose event count matches.
    NoDigest,
}

/// Checks that the replay `doc` (read from `replay_name`) is of the trace `reader` (at
/// `trace_name`). An error says which figure differs and what to do.
pub fn check(
    doc: &Value,
    replay_name: &str,
    reader: &traces::TraceReader,
    trace_name: &str,
) -> Result<Match, String> {
    let redo = format!("run `allocscope replay {trace_name} --json {replay_name}` to make one");
    let Some(t) = doc.get("trace").and_then(Value::as_object) else {
        return Err(format!(
            "{replay_name}: has no \"trace\" object: not a replay JSON; {redo}"
        ));
    };
    let events = reader.event_count();
    match t.get("events").and_then(Value::as_u64) {
        Some(n) if n == events => {}
        Some(n) => {
            return Err(format!(
                "{replay_name}: is the replay of another trace ({n} events, {trace_name} has \
                 {events}); {redo}"
            ))
        }
        None => {
            return Err(format!(
                "{replay_name}: its \"trace\" object has no event count; {redo}"
            ))
        }
    }
    match t.get("digest").and_then(Value::as_str) {
        Some(d) if d == of(reader) => Ok(Match::Same),
        Some(_) => Err(format!(
            "{replay_name}: is the replay of another trace (its digest differs from \
             {trace_name}'s, though both have {events} events); {redo}"
        )),
        None => Ok(Match::NoDigest),
    }
}
