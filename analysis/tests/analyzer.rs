//! The analyzer on events built by hand: placement rules (tiny, malloc header, large pages),
//! realloc continuity, and the bounded timeline.

use analysis::analyze::TraceInfo;
use analysis::Analyzer;
use replayer::sizeclass::SizeClasses;
use traces::{Event, Op, PtrKind};

fn alloc(seq: u64, addr: u64, size: u64, kind: PtrKind, thread: u32) -> Event {
    let mut e = Event::new(Op::Malloc);
    e.seq = seq;
    e.ts_ns = seq * 10;
    e.addr = addr;
    e.size = size;
    e.kind = kind;
    e.thread = thread;
    e
}

fn free(seq: u64, addr: u64, thread: u32) -> Event {
    let mut e = Event::new(Op::Free);
    e.seq = seq;
    e.ts_ns = seq * 10;
    e.old_addr = addr;
    e.thread = thread;
    e
}

#[test]
fn placement_rules() {
    let mut a = Analyzer::new(SizeClasses::go());
    // Scan 600 B: + 8 B malloc header = 608 -> class 640 (waste 40, header counted in it).
    a.add(&alloc(0, 0x1000, 600, PtrKind::Scan, 0));
    // Scan 8 B: not tiny (tiny is noscan only) -> class 8, no waste.
    a.add(&alloc(1, 0x2000, 8, PtrKind::Scan, 0));
    // Noscan 8 B on two threads: two tiny blocks (one open block per thread).
    a.add(&alloc(2, 0x3000, 8, PtrKind::Noscan, 0));
    a.add(&alloc(3, 0x4000, 8, PtrKind::Noscan, 1));
    // Zero-size: no memory.
    a.add(&alloc(4, 0x5000, 0, PtrKind::Unknown, 0));
    // Large: 32769 B -> 5 pages of 8 KiB.
    a.add(&alloc(5, 0x6000, 32769, PtrKind::Unknown, 0));
    a.add(&free(6, 0x6000, 1));
    let r = a.finish(TraceInfo::default(), None);
    let w = &r.waste;
    assert_eq!(w.malloc_header_bytes, 8);
    let c640 = w.classes.iter().find(|c| c.size_bytes == 640).unwrap();
    assert_eq!((c640.allocs, c640.waste_bytes), (1, 40));
    assert_eq!(w.tiny.blocks, 2);
    assert_eq!(w.tiny.waste_bytes, 16);
    assert_eq!(w.zero_size_allocs, 1);
    assert_eq!(w.large.rounded_bytes, 5 * 8192);
    assert_eq!(r.workload.per_thread[&1].cross_thread_frees, 1);
    assert_eq!(r.frag.live_rounded_at_end_bytes, 640 + 8 + 16 + 16);
}

#[test]
fn realloc_continues_the_object_and_the_timeline_stays_bounded() {
    let mut a = Analyzer::new(SizeClasses::go());
    let mut seq = 0;
    a.add(&alloc(seq, 0x10, 100, PtrKind::Unknown, 0));
    for (i, size) in [200u64, 400, 300].iter().enumerate() {
        seq += 1;
        let mut e = Event::new(Op::Realloc);
        e.seq = seq;
        e.old_addr = 0x10 + i as u64 * 0x100;
        e.addr = if i == 2 {
            e.old_addr
        } else {
            e.old_addr + 0x100
        };
        e.size = *size;
        a.add(&e);
    }
    for i in 0..10_000u64 {
        seq += 1;
        a.add(&alloc(seq, 0x100_0000 + i * 64, 48, PtrKind::Unknown, 0));
    }
    let r = a.finish(TraceInfo::default(), None);
    let re = &r.workload.realloc;
    assert_eq!(
        (re.resizes, re.grow, re.shrink, re.in_place, re.moved),
        (3, 2, 1, 1, 2)
    );
    assert_eq!(re.moved_bytes, 100 + 200);
    assert_eq!(re.longest_chain, 3);
    assert_eq!(r.workload.frees, 0, "a realloc is not a death");
    assert!(r.frag.timeline.len() <= analysis::frag::MAX_POINTS);
    let last = r.frag.timeline.last().unwrap();
    assert_eq!(last.live_requested_bytes, 300 + 10_000 * 48);
    assert_eq!(r.frag.peak_live_requested_bytes, 300 + 10_000 * 48);
}
