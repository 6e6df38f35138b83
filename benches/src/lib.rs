//! Shared inputs for allocscope's benchmarks (`benches/benches/*.rs`, criterion) and the
//! end-to-end scripts beside them (`benches/*.sh`).

use traces::{Event, Op};

/// A malloc-heavy synthetic workload shaped like a real program's: mostly small sizes with a
/// long tail, frees mostly of recent objects (LIFO-ish) and some of old ones, addresses from a
/// size-segregated heap with reuse, timestamps 40-400 ns apart, latencies 15-120 ns.
/// Deterministic for a given `n` and `threads`.
pub fn realistic_events(n: usize, threads: u32) -> Vec<Event> {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut live: Vec<Vec<u64>> = vec![Vec::new(); threads as usize];
    let mut free_slots: Vec<Vec<u64>> = vec![Vec::new(); 64];
    let mut bump = 0x5600_0000_0000u64;
    let mut ts = 0u64;
    let mut out = Vec::with_capacity(n);
    for seq in 0..n as u64 {
        let r = next();
        let t = (r % threads as u64) as u32;
        ts += 40 + (r >> 8) % 360;
        let mine = &mut live[t as usize];
        let mut ev = if !mine.is_empty() && (r >> 20) % 100 < 48 {
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
                    bump += size.next_multiple_of(16) + 64;
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
            e.addr = addr;
            e.size = size;
            e
        };
        ev.seq = seq;
        ev.thread = t;
        ev.ts_ns = ts;
        ev.latency_ns = 15 + ((r >> 12) % 106) as u32;
        out.push(ev);
    }
    out
}
