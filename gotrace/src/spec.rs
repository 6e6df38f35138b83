//! Event types and how many arguments each carries: the part of the format's specification
//! (`internal/trace/tracev2/events.go` of Go 1.27, checked against 1.23 and 1.25) this reader
//! needs. Every timed event is a type byte, a varint time delta, then its other arguments as
//! varints; no timed event carries trailing data, so the argument count frames it.

use crate::format::Format;

/// Event type codes used by this crate (structural ones frame batches, timed ones are events).
pub mod ev {
    pub const EVENT_BATCH: u8 = 1;
    pub const STACKS: u8 = 2;
    pub const STRINGS: u8 = 4;
    pub const CPU_SAMPLES: u8 = 6;
    pub const FREQUENCY: u8 = 8;
    pub const PROCS_CHANGE: u8 = 9;
    pub const PROC_START: u8 = 10;
    pub const PROC_STOP: u8 = 11;
    pub const PROC_STEAL: u8 = 12;
    pub const PROC_STATUS: u8 = 13;
    pub const GC_ACTIVE: u8 = 28;
    pub const GC_BEGIN: u8 = 29;
    pub const GC_END: u8 = 30;
    pub const HEAP_ALLOC: u8 = 37;
    pub const HEAP_GOAL: u8 = 38;
    pub const EXPERIMENTAL_BATCH: u8 = 49;
    pub const SYNC: u8 = 50;
    pub const CLOCK_SNAPSHOT: u8 = 51;
    pub const END_OF_GENERATION: u8 = 52;
    // The AllocFree experiment (experiment 1).
    pub const SPAN: u8 = 128;
    pub const SPAN_ALLOC: u8 = 129;
    pub const SPAN_FREE: u8 = 130;
    pub const HEAP_OBJECT: u8 = 131;
    pub const HEAP_OBJECT_ALLOC: u8 = 132;
    pub const HEAP_OBJECT_FREE: u8 = 133;
    pub const GOROUTINE_STACK: u8 = 134;
    pub const GOROUTINE_STACK_ALLOC: u8 = 135;
    pub const GOROUTINE_STACK_FREE: u8 = 136;
}

/// The experiment id of the alloc/free events and tables.
pub const EXPERIMENT_ALLOC_FREE: u8 = 1;

/// Arguments of each timed event type 9..=51, time delta included (0: not a timed event).
const TIMED_ARGS: [u8; 52] = [
    0, 0, 0, 0, 0, 0, 0, 0, 0, // 0..=8: structural
    3, // 9 ProcsChange [dt, procs, stack]
    3, // 10 ProcStart [dt, p, p_seq]
    1, // 11 ProcStop
    4, // 12 ProcSteal [dt, p, p_seq, m]
    3, // 13 ProcStatus [dt, p, status]
    4, // 14 GoCreate
    2, // 15 GoCreateSyscall
    3, // 16 GoStart
    1, // 17 GoDestroy
    1, // 18 GoDestroySyscall
    3, // 19 GoStop
    3, // 20 GoBlock
    4, // 21 GoUnblock
    3, // 22 GoSyscallBegin
    1, // 23 GoSyscallEnd
    1, // 24 GoSyscallEndBlocked
    4, // 25 GoStatus
    3, // 26 STWBegin
    1, // 27 STWEnd
    2, // 28 GCActive [dt, seq]
    3, // 29 GCBegin [dt, seq, stack]
    2, // 30 GCEnd [dt, seq]
    2, // 31 GCSweepActive
    2, // 32 GCSweepBegin
    3, // 33 GCSweepEnd
    2, // 34 GCMarkAssistActive
    2, // 35 GCMarkAssistBegin
    1, // 36 GCMarkAssistEnd
    2, // 37 HeapAlloc [dt, bytes]
    2, // 38 HeapGoal [dt, bytes]
    2, // 39 GoLabel
    5, // 40 UserTaskBegin
    3, // 41 UserTaskEnd
    4, // 42 UserRegionBegin
    4, // 43 UserRegionEnd
    5, // 44 UserLog
    3, // 45 GoSwitch
    3, // 46 GoSwitchDestroy
    4, // 47 GoCreateBlocked
    5, // 48 GoStatusStack
    0, // 49 ExperimentalBatch: structural
    0, // 50 Sync: structural
    4, // 51 ClockSnapshot [dt, mono, sec, nsec] (format 25+)
];

/// Arguments of the experimental events 128..=136, time delta included.
const EXPERIMENTAL_ARGS: [u8; 9] = [4, 4, 2, 3, 3, 2, 3, 3, 2];

/// The most arguments a timed event has, time delta included.
pub const MAX_ARGS: usize = 5;

/// How many arguments (time delta included) a timed event of type `typ` carries in `format`,
/// or `None` when `typ` is not a timed event there.
#[inline]
pub fn timed_args(format: Format, typ: u8) -> Option<usize> {
    let n = match typ {
        ev::CLOCK_SNAPSHOT if format < Format::Go125 => 0,
        t if (t as usize) < TIMED_ARGS.len() => TIMED_ARGS[t as usize],
        t if (ev::SPAN..=ev::GOROUTINE_STACK_FREE).contains(&t) => {
            EXPERIMENTAL_ARGS[(t - ev::SPAN) as usize]
        }
        _ => 0,
    };
    (n > 0).then_some(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shape() {
        assert_eq!(timed_args(Format::Go126, ev::HEAP_OBJECT_ALLOC), Some(3));
        assert_eq!(timed_args(Format::Go126, ev::SPAN_ALLOC), Some(4));
        assert_eq!(timed_args(Format::Go123, ev::CLOCK_SNAPSHOT), None);
        assert_eq!(timed_args(Format::Go125, ev::CLOCK_SNAPSHOT), Some(4));
        assert_eq!(timed_args(Format::Go126, ev::EVENT_BATCH), None);
        assert_eq!(timed_args(Format::Go126, 137), None);
        assert_eq!(timed_args(Format::Go126, 255), None);
        assert!(TIMED_ARGS.iter().all(|&n| n as usize <= MAX_ARGS));
    }
}
