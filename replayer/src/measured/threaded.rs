//! Multithreaded replay: each recorded thread on its own OS thread, with cross-thread frees
//! synchronised so that a free never runs before its allocation (as glibc's trace_run does).
//!
//! Synchronisation is per slot. Every slot has a generation counter: even while the slot is
//! empty, odd while it holds an object. Walking the ops in global (seq) order at plan time gives
//! each op the generation it must see before it runs: an allocation into a slot waits for the
//! slot's previous free, a free waits for its allocation, a realloc waits for both of its slots.
//! After running, an op advances the generations it touched. Since the global order is itself a
//! valid schedule, the globally earliest op not yet run always has what it waits for: the replay
//! cannot deadlock. Waiting is a spin with `yield_now` after a short while, so waits between
//! threads on one core do not burn a whole time slice.
//!
//! Threads run their ops in their own recorded order; the interleaving between threads is the
//! OS's, so timings vary run to run while the memory each op sees does not depend on it (each
//! free still follows its allocation).

use std::sync::atomic::{AtomicU32, Ordering};

use crate::engine::{Op, OpKind};

/// One op of a thread's plan: the op, and the generations it waits for.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// Index into the compiled op stream.
    pub op: u32,
    /// Generation `slot` must have before the op runs.
    pub slot_gen: u32,
    /// Generation `aux` must have before a realloc runs (unused otherwise).
    pub aux_gen: u32,
}

/// Per-thread step lists, in each thread's own order.
#[derive(Debug, Default)]
pub struct Plan {
    pub threads: Vec<Vec<Step>>,
    /// Slots the plan uses (the compiled stream's slot count).
    pub slots: u32,
}

/// Builds the plan. `thread_of[i]` is the dense thread index (0..n) of op `i`.
pub fn plan(ops: &[Op], thread_of: &[u16], slots: u32) -> Plan {
    assert_eq!(ops.len(), thread_of.len(), "one thread per op");
    let n = thread_of
        .iter()
        .copied()
        .max()
        .map_or(0, |t| t as usize + 1);
    let mut threads: Vec<Vec<Step>> = vec![Vec::new(); n];
    let mut gens = vec![0u32; slots as usize];
    for (i, (op, &t)) in ops.iter().zip(thread_of).enumerate() {
        let slot_gen = gens[op.slot as usize];
        let mut aux_gen = 0;
        match op.kind {
            OpKind::Alloc | OpKind::Free => gens[op.slot as usize] += 1,
            OpKind::Realloc if op.aux == op.slot => {
                // In place: live to live, a free and an allocation.
                gens[op.slot as usize] += 2;
            }
            OpKind::Realloc => {
                aux_gen = gens[op.aux as usize];
                gens[op.aux as usize] += 1;
                gens[op.slot as usize] += 1;
            }
        }
        threads[t as usize].push(Step {
            op: i as u32,
            slot_gen,
            aux_gen,
        });
    }
    Plan { threads, slots }
}

/// The shared generation counters of a running replay.
pub struct Gates {
    gens: Vec<AtomicU32>,
}

impl Gates {
    pub fn new(slots: u32) -> Gates {
        Gates {
            gens: (0..slots).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Waits until `slot` reaches generation `gen`.
    #[inline]
    pub fn wait(&self, slot: u32, gen: u32) {
        let g = &self.gens[slot as usize];
        let mut spins = 0u32;
        while g.load(Ordering::Acquire) != gen {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Waits for everything `step` needs.
    #[inline]
    pub fn enter(&self, op: &Op, step: &Step) {
        self.wait(op.slot, step.slot_gen);
        if op.kind == OpKind::Realloc && op.aux != op.slot {
            self.wait(op.aux, step.aux_gen);
        }
    }

    /// Publishes what `op` did (Release: the object's memory is visible to whoever waits next).
    #[inline]
    pub fn leave(&self, op: &Op) {
        let by = if op.kind == OpKind::Realloc && op.aux == op.slot {
            2
        } else {
            1
        };
        self.gens[op.slot as usize].fetch_add(by, Ordering::Release);
        if op.kind == OpKind::Realloc && op.aux != op.slot {
            self.gens[op.aux as usize].fetch_add(1, Ordering::Release);
        }
    }

    /// The current generation of a slot.
    #[cfg(test)]
    fn gen(&self, slot: u32) -> u32 {
        self.gens[slot as usize].load(Ordering::Acquire)
    }
}

/// Runs `plan`: each recorded thread's steps on its own scoped OS thread, in its own order,
/// every step between [`Gates::enter`] and [`Gates::leave`].
///
/// `setup(n)` makes the n-th thread's state (and may pin it to a CPU). When it fails, that
/// thread still passes every gate of its ops, without running them, so that no other thread
/// waits forever; the first such error is returned after the run. `step` runs one op.
pub fn run<S: Send, E: Send>(
    plan: &Plan,
    ops: &[Op],
    setup: impl Fn(usize) -> Result<S, E> + Sync,
    step: impl Fn(&mut S, &Step, &Op) + Sync,
) -> Result<Vec<S>, E> {
    let gates = Gates::new(plan.slots);
    let results: Vec<Result<S, E>> = std::thread::scope(|sc| {
        let handles: Vec<_> = plan
            .threads
            .iter()
            .enumerate()
            .filter(|(_, steps)| !steps.is_empty())
            .map(|(n, steps)| {
                let (gates, setup, step) = (&gates, &setup, &step);
                sc.spawn(move || {
                    let mut state = setup(n);
                    for st in steps {
                        let op = &ops[st.op as usize];
                        gates.enter(op, st);
                        if let Ok(s) = &mut state {
                            step(s, st, op);
                        }
                        gates.leave(op);
                    }
                    state
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a replay thread panicked"))
            .collect()
    });
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex;

    fn op(kind: OpKind, slot: u32, aux: u32) -> Op {
        Op {
            size_bytes: 32,
            slot,
            aux,
            kind,
            call: crate::engine::Call::Malloc,
            noscan: true,
            align_log2: 4,
            p: 0,
            thread: 0,
        }
    }

    /// Thread 0 allocates, thread 1 frees what thread 0 allocated, slots get reused across
    /// threads; whatever the OS interleaving, every free sees its allocation done first.
    #[test]
    fn cross_thread_frees_never_run_before_their_allocation() {
        let mut ops = Vec::new();
        let mut thread_of = Vec::new();
        for round in 0..2000u32 {
            let slot = round % 7;
            ops.push(op(OpKind::Alloc, slot, 0));
            thread_of.push((round % 3) as u16);
            ops.push(op(OpKind::Free, slot, 0));
            thread_of.push(((round + 1) % 3) as u16);
        }
        let plan = plan(&ops, &thread_of, 7);
        assert_eq!(plan.threads.len(), 3);
        let gates = Gates::new(7);
        // What each slot holds: 0 empty, else the op index that filled it.
        let held: Vec<AtomicU64> = (0..7).map(|_| AtomicU64::new(0)).collect();
        let log = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for steps in &plan.threads {
                let (gates, ops, held, log) = (&gates, &ops, &held, &log);
                s.spawn(move || {
                    for step in steps {
                        let o = &ops[step.op as usize];
                        gates.enter(o, step);
                        let h = &held[o.slot as usize];
                        match o.kind {
                            OpKind::Alloc => {
                                assert_eq!(h.swap(step.op as u64 + 1, Ordering::Relaxed), 0)
                            }
                            _ => assert_ne!(h.swap(0, Ordering::Relaxed), 0, "free before alloc"),
                        }
                        log.lock().unwrap().push(step.op);
                        gates.leave(o);
                    }
                });
            }
        });
        assert_eq!(log.into_inner().unwrap().len(), 4000);
        for slot in 0..7 {
            assert_eq!(gates.gen(slot) % 2, 0, "slot {slot} left live");
        }
    }

    /// A thread whose setup fails still lets the others through its gates.
    #[test]
    fn a_failed_thread_setup_is_an_error_not_a_hang() {
        let ops = [
            op(OpKind::Alloc, 0, 0),
            op(OpKind::Free, 0, 0),
            op(OpKind::Alloc, 0, 0),
        ];
        let p = plan(&ops, &[0, 1, 0], 1);
        let done = AtomicU64::new(0);
        let r = run(
            &p,
            &ops,
            |n| if n == 1 { Err("cannot pin") } else { Ok(()) },
            |_, _, _| {
                done.fetch_add(1, Ordering::Relaxed);
            },
        );
        assert_eq!(r.unwrap_err(), "cannot pin");
        assert_eq!(
            done.load(Ordering::Relaxed),
            2,
            "thread 0 ran both of its ops"
        );
    }

    #[test]
    fn realloc_waits_for_both_slots() {
        let ops = [
            op(OpKind::Alloc, 0, 0),
            op(OpKind::Realloc, 1, 0),
            op(OpKind::Realloc, 1, 1),
        ];
        let p = plan(&ops, &[0, 1, 0], 2);
        let r = p.threads[1][0];
        assert_eq!((r.slot_gen, r.aux_gen), (0, 1));
        let in_place = p.threads[0][1];
        assert_eq!(in_place.slot_gen, 1);
    }
}
