//! Writes a large realistic trace for `benches/report_scale.sh` (which times `allocscope report`
//! on it). Not a criterion benchmark: `cargo bench --bench report_scale -- OUT.atrace N` writes N
//! events to OUT.atrace, streaming (memory bounded by the live objects, not by N).
//!
//! The workload follows `benches::realistic_events` (mostly small sizes with a long tail,
//! LIFO-ish frees, size-segregated address reuse, 40-400 ns apart, 15-120 ns latencies), with
//! one change so that it can run for billions of events: each thread keeps about
//! [`LIVE_PER_THREAD`] objects live (frees become likelier above it), so live memory is steady.

use traces::{Event, Header, Op, TraceWriter};

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
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut live: Vec<Vec<u64>> = vec![Vec::new(); THREADS as usize];
    let mut free_slots: Vec<Vec<u64>> = vec![Vec::new(); 64];
    let mut bump = 0x5600_0000_0000u64;
    let mut ts = 0u64;
    for seq in 0..n {
        let r = next();
        let t = (r % THREADS as u64) as u32;
        ts += 40 + (r >> 8) % 360;
        let mine = &mut live[t as usize];
        let free_pct = if mine.len() > LIVE_PER_THREAD { 52 } else { 48 };
        let mut ev = if !mine.is_empty() && (r >> 20) % 100 < free_pct {
            let idx = if (r >> 30) % 4 == 0 {
                (r >> 34) as usize % mine.len()
            } else {
                mine.len() - 1
            };
            let addr = mine.swap_remove(idx);
            free_slots[(addr as usize >> 4) % 64].push(addr);
            let mut e = Event::new(Op::Free);
            e.old_addr = addr;
            e
        } else {
            let size = match (r >> 40) % 100 {
                0..=59 => 8 + (r >> 48) % 56,
                60..=89 => 64 + (r >> 48) % 448,
                90..=98 => 512 + (r >> 48) % 3584,
                _ => 4096 + (r >> 48) % 60000,
            };
            let class = (size as usize / 16).min(63);
            let addr = match free_slots[class].pop() {
                Some(a) => a,
                None => {
                    let a = bump | ((class as u64) << 4);
                    bump += (size.next_multiple_of(16) + 64) << 6;
                    a
                }
            };
            mine.push(addr);
            let op = if (r >> 56) % 20 == 0 {
                Op::Calloc
            } else {
                Op::Malloc
            };
            let mut e = Event::new(op);
            if op == Op::Calloc {
                e.nmemb = 1;
            }
            e.addr = addr;
            e.size = size;
            e
        };
        ev.seq = seq;
        ev.thread = t;
        ev.ts_ns = ts;
        ev.latency_ns = 15 + ((r >> 12) % 106) as u32;
        w.push(&ev).expect("write event");
    }
    w.finish().expect("finish trace");
}
