//! Shared inputs for allocscope's benchmarks (`benches/benches/*.rs`, criterion) and the
//! end-to-end scripts beside them (`benches/*.sh`).

use traces::{Event, Op};

/// A malloc-heavy synthetic workload shaped like a real program's: mostly small sizes with a
/// long tail, frees mostly of recent objects (LIFO-ish) and some of old ones, addresses from a
/// size-segregated heap with reuse, timestamps 40-400 ns apart, latencies 15-120 ns.
/// Deterministic for given parameters; an endless iterator (take what you need). With a
/// `live_cap`, frees become likelier once a thread holds that many objects, so live memory
/// stays steady however long it runs.
pub struct Workload {
    rng: u64,
    threads: u32,
    live_cap: Option<usize>,
    live: Vec<Vec<u64>>,
    free_slots: Vec<Vec<u64>>,
    bump: u64,
    ts: u64,
    seq: u64,
}

impl Workload {
    pub fn new(threads: u32, live_cap: Option<usize>) -> Workload {
        Workload {
            rng: 0x9e37_79b9_7f4a_7c15,
            threads,
            live_cap,
            live: vec![Vec::new(); threads as usize],
            free_slots: vec![Vec::new(); 64],
            bump: 0x5600_0000_0000,
            ts: 0,
            seq: 0,
        }
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

impl Iterator for Workload {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let r = self.next_random();
        let t = (r % self.threads as u64) as u32;
        self.ts += 40 + (r >> 8) % 360;
        let mine = &mut self.live[t as usize];
        let free_pct = match self.live_cap {
            Some(cap) if mine.len() > cap => 52,
            _ => 48,
        };
        let mut ev = if !mine.is_empty() && (r >> 20) % 100 < free_pct {
            let idx = if (r >> 30).is_multiple_of(4) {
                (r >> 34) as usize % mine.len()
            } else {
                mine.len() - 1
            };
            let addr = mine.swap_remove(idx);
            self.free_slots[(addr as usize >> 4) % 64].push(addr);
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
            let addr = match self.free_slots[class].pop() {
                Some(a) => a,
                None => {
                    // The class sits in bits 4-9; the bump moves above them, so addresses are
                    // unique.
                    let a = self.bump | ((class as u64) << 4);
                    self.bump += (size.next_multiple_of(16) + 64) << 6;
                    a
                }
            };
            mine.push(addr);
            let op = if (r >> 56).is_multiple_of(20) {
                Op::Calloc
            } else {
                Op::Malloc
            };
            let mut e = Event::new(op);
            e.addr = addr;
            e.size = size;
            e
        };
        ev.seq = self.seq;
        self.seq += 1;
        ev.thread = t;
        ev.ts_ns = self.ts;
        ev.latency_ns = 15 + ((r >> 12) % 106) as u32;
        Some(ev)
    }
}

/// `n` events of [`Workload`] over `threads` threads, without a live cap.
pub fn realistic_events(n: usize, threads: u32) -> Vec<Event> {
    Workload::new(threads, None).take(n).collect()
}
