//! Perf counters around a replay, through `perf-event2`.
//!
//! Each counter is opened on its own (not as a group), for this process and the threads it
//! starts afterwards (`inherit`), user space only (so `perf_event_paranoid` 2 still allows it).
//! A counter the machine does not offer (virtual machines have no hardware PMU; a high
//! `perf_event_paranoid` forbids some) is kept with the reason and reported as "not supported":
//! a replay never fails for it. Counts are scaled when the kernel multiplexed a counter
//! (`count * time_enabled / time_running`).
//!
//! A [`Snapshot`] is a reading of every counter; the difference of two snapshots is the cost of
//! what ran between them, which is how phases (warm-up, steady state, GC) are measured.

use std::collections::BTreeMap;

use perf_event::events::{Cache, CacheId, CacheOp, CacheResult, Event, Hardware, Software};
use perf_event::{Builder, Counter};
use serde::Serialize;

/// Makes the builder of one counter.
type MakeBuilder = Box<dyn Fn() -> Builder<'static>>;

/// Every counter allocscope asks for, with the name it reports.
fn wanted() -> Vec<(&'static str, MakeBuilder)> {
    fn b<E: Event + Clone + 'static>(e: E) -> MakeBuilder {
        Box::new(move || Builder::new(e.clone()))
    }
    let cache = |which, result| Cache {
        which,
        operation: CacheOp::READ,
        result,
    };
    vec![
        ("cycles", b(Hardware::CPU_CYCLES)),
        ("instructions", b(Hardware::INSTRUCTIONS)),
        ("branch_misses", b(Hardware::BRANCH_MISSES)),
        ("cache_references", b(Hardware::CACHE_REFERENCES)),
        ("cache_misses", b(Hardware::CACHE_MISSES)),
        ("l1d_load_misses", b(cache(CacheId::L1D, CacheResult::MISS))),
        (
            "dtlb_load_misses",
            b(cache(CacheId::DTLB, CacheResult::MISS)),
        ),
        ("page_faults", b(Software::PAGE_FAULTS)),
        ("minor_faults", b(Software::PAGE_FAULTS_MIN)),
        ("major_faults", b(Software::PAGE_FAULTS_MAJ)),
        ("context_switches", b(Software::CONTEXT_SWITCHES)),
        ("task_clock_ns", b(Software::TASK_CLOCK)),
    ]
}

struct Slot {
    name: &'static str,
    counter: Result<Counter, String>,
}

/// The open counters of one measurement.
pub struct Counters {
    slots: Vec<Slot>,
}

/// One reading of every counter: scaled counts, or why a counter is missing.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    values: BTreeMap<&'static str, Result<u64, String>>,
}

/// A counter's value in a report: a count, or `"not supported: <reason>"`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reading {
    Count(u64),
    NotSupported(String),
}

impl Counters {
    /// Opens every counter it can, enabled and counting from now.
    pub fn open() -> Counters {
        let slots = wanted()
            .into_iter()
            .map(|(name, make)| {
                let counter = make()
                    .observe_self()
                    .any_cpu()
                    .inherit(true)
                    .exclude_kernel(true)
                    .exclude_hv(true)
                    .enabled(true)
                    .build()
                    .map_err(|e| format!("not supported: {}", reason(&e)));
                Slot { name, counter }
            })
            .collect();
        Counters { slots }
    }

    /// Reads every counter now.
    pub fn snapshot(&mut self) -> Snapshot {
        let values = self
            .slots
            .iter_mut()
            .map(|s| {
                let v = match &mut s.counter {
                    Ok(c) => c
                        .read_count_and_time()
                        .map(|ct| scale(ct.count, ct.time_enabled, ct.time_running))
                        .map_err(|e| format!("not supported: read failed: {e}")),
                    Err(why) => Err(why.clone()),
                };
                (s.name, v)
            })
            .collect();
        Snapshot { values }
    }
}

impl Snapshot {
    /// What was counted between `earlier` and `self`.
    pub fn since(&self, earlier: &Snapshot) -> BTreeMap<String, Reading> {
        self.values
            .iter()
            .map(|(name, v)| {
                let r = match (v, earlier.values.get(name)) {
                    (Ok(now), Some(Ok(then))) => Reading::Count(now.saturating_sub(*then)),
                    (Err(why), _) | (_, Some(Err(why))) => Reading::NotSupported(why.clone()),
                    (Ok(now), None) => Reading::Count(*now),
                };
                (name.to_string(), r)
            })
            .collect()
    }
}

/// Counters accumulated over many short stretches (the GC phase of a replay: every GC cycle's
/// work). `enter`/`leave` nest; only the outermost pair reads the counters.
pub struct PhaseCounters {
    counters: Counters,
    depth: u32,
    start: Option<Snapshot>,
    total: BTreeMap<String, Reading>,
    /// Stretches measured.
    pub stretches: u64,
}

impl PhaseCounters {
    pub fn open() -> PhaseCounters {
        let mut counters = Counters::open();
        let s = counters.snapshot();
        PhaseCounters {
            total: s.since(&s),
            counters,
            depth: 0,
            start: None,
            stretches: 0,
        }
    }

    pub fn enter(&mut self) {
        if self.depth == 0 {
            self.start = Some(self.counters.snapshot());
        }
        self.depth += 1;
    }

    pub fn leave(&mut self) {
        debug_assert!(self.depth > 0, "leave without enter");
        self.depth -= 1;
        if self.depth > 0 {
            return;
        }
        let Some(start) = self.start.take() else {
            return;
        };
        let d = self.counters.snapshot().since(&start);
        for (name, r) in d {
            match (self.total.get_mut(&name), r) {
                (Some(Reading::Count(t)), Reading::Count(n)) => *t += n,
                (Some(_), _) => {}
                (None, r) => {
                    self.total.insert(name, r);
                }
            }
        }
        self.stretches += 1;
    }

    /// The sums so far.
    pub fn total(&self) -> BTreeMap<String, Reading> {
        self.total.clone()
    }
}

fn scale(count: u64, enabled: u64, running: u64) -> u64 {
    if running == 0 || running >= enabled {
        count
    } else {
        (count as u128 * enabled as u128 / running as u128) as u64
    }
}

fn reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) | Some(libc::ENODEV) => {
            "the CPU or hypervisor does not offer this event".into()
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "not permitted (see /proc/sys/kernel/perf_event_paranoid)".into()
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_counters_count_page_faults_and_hardware_ones_degrade_cleanly() {
        let mut counters = Counters::open();
        let before = counters.snapshot();
        // Touch 64 fresh pages: at least that many minor faults. The pages come from a new
        // anonymous mapping (the model's arena), never from the allocator: a heap buffer may
        // reuse memory already faulted in (glibc moves its mmap threshold after a free).
        let len = 64 * 4096;
        let base = crate::arena::ARENA_HINT_ADDR;
        let mut arena = crate::arena::Arena::new(base, true);
        arena.map(base, len).unwrap();
        arena.touch(base, len, 1);
        let after = counters.snapshot();
        let d = after.since(&before);
        assert_eq!(d.len(), wanted().len());
        match &d["page_faults"] {
            Reading::Count(n) => assert!(*n >= 32, "only {n} page faults for 64 fresh pages"),
            Reading::NotSupported(why) => panic!("software page faults unavailable: {why}"),
        }
        assert!(matches!(d["task_clock_ns"], Reading::Count(n) if n > 0));
        // Hardware counters: either counted, or reported with a reason; never an error.
        for name in [
            "cycles",
            "instructions",
            "l1d_load_misses",
            "dtlb_load_misses",
        ] {
            match &d[name] {
                Reading::Count(_) => {}
                Reading::NotSupported(why) => assert!(why.starts_with("not supported"), "{why}"),
            }
        }
        let json = serde_json::to_value(&d).unwrap();
        assert!(json["page_faults"].is_u64());
    }
}
