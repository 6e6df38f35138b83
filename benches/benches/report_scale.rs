//! Writes a large realistic trace for `benches/report_scale.sh` (which times `allocscope report`
//! on it). Not a criterion benchmark: `cargo bench --bench report_scale -- OUT.atrace N` writes N
//! events to OUT.atrace, streaming (memory bounded by the live objects, not by N).
//!
//! The workload is `benches::Workload` with a live cap, so that it can run for billions of events:
//! each thread keeps about [`LIVE_PER_THREAD`] objects live, so live memory is steady.

use traces::{Header, TraceWriter};

const LIVE_PER_THREAD: usize = 50_000;
const THREADS: u32 = 4;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(out), Some(n)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: cargo bench --bench report_scale -- OUT.atrace EVENTS");
        return;
    };
    let header = Header {
        command: vec!["benches/report_scale".into()],
        ..Header::default()
    };
    let mut w = TraceWriter::create(std::path::Path::new(out), &header).expect("create trace");
    for ev in benches::Workload::new(THREADS, Some(LIVE_PER_THREAD)).take(n as usize) {
        w.push(&ev).expect("write event");
    }
    w.finish().expect("finish trace");
}
