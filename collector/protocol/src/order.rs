//! The order rule for a `realloc` that moves its block.
//!
//! Calls that return memory take their sequence number after the real call, calls that release it
//! before, so a free always precedes the reuse of its address. A moving `realloc` does both: inside
//! the call it gets the new block and releases the old one, and another thread can get the old
//! block back (and take its number) before the `realloc` returns and takes its own. Read in seq
//! order that would be an allocation of a live address, then a realloc of it: a double allocation
//! in a correct program.
//!
//! The shim records, with each realloc, its *window*: how far the sequence counter moved while the
//! call ran. Every call numbered inside the window overlapped the realloc in time. If one of them,
//! from another thread, got the realloc's old block, the realloc really released it first: this
//! rule moves the realloc just before that call and shifts the calls in between one number up.
//! Only calls of other threads move, and they keep their order among themselves, so each thread's
//! own order is unchanged. The writer applies it to each batch it writes (the realloc's thread holds
//! the watermark at the window's start until the call returns, so the whole window is in one
//! batch), and `record` applies it to what it recovers from a dead process.
//!
//! The new block cannot need the opposite move: allocators get it before they release the old one,
//! so a free of the new block by another thread was numbered before any reuse of the old one. A
//! batch where that does not hold is left as it is.

use traces::{Event, Op};

/// An event on its way to the trace, with its realloc window (0 for other calls) and whatever the
/// caller keeps with it (`tag`: the writer's ring index).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pending<T> {
    pub event: Event,
    pub window: u32,
    pub tag: T,
}

/// Applies the rule to `batch` (sorted by seq). Returns how many reallocs moved.
pub fn order_moving_reallocs<T>(batch: &mut [Pending<T>]) -> usize {
    let mut moved = 0;
    for j in 0..batch.len() {
        let r = batch[j].event;
        let w = batch[j].window;
        let moving = matches!(r.op, Op::Realloc | Op::Reallocarray)
            && !r.failed
            && r.old_addr != 0
            && r.addr != 0
            && r.addr != r.old_addr;
        if !moving || w == 0 {
            continue;
        }
        let window_start = r.seq.saturating_sub(w as u64);
        // The earliest call of another thread inside the window that got the old block.
        let mut first = None;
        let mut k = j;
        while k > 0 && batch[k - 1].event.seq > window_start {
            k -= 1;
            let e = &batch[k].event;
            if e.thread != r.thread && e.allocates() && e.addr == r.old_addr {
                first = Some(k);
            }
        }
        let Some(i) = first else { continue };
        let base = batch[i].event.seq;
        let contiguous = r.seq - base == (j - i) as u64;
        let frees_new_block = batch[i..j]
            .iter()
            .any(|p| p.event.releases() && p.event.old_addr == r.addr);
        if !contiguous || frees_new_block {
            continue;
        }
        batch[i..=j].rotate_right(1);
        for (n, p) in batch[i..=j].iter_mut().enumerate() {
            p.event.seq = base + n as u64;
        }
        moved += 1;
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, thread: u32, op: Op, addr: u64, old: u64) -> Pending<u32> {
        let mut e = Event::new(op);
        e.seq = seq;
        e.thread = thread;
        e.addr = addr;
        e.old_addr = old;
        e.size = 16;
        Pending {
            event: e,
            window: 0,
            tag: thread,
        }
    }

    fn with_window(mut p: Pending<u32>, window: u32) -> Pending<u32> {
        p.window = window;
        p
    }

    #[test]
    fn a_reuse_numbered_inside_the_window_moves_the_realloc_before_it() {
        // Thread 0 reallocs 0xA -> 0xB (window 3: the counter was at 7 when it began); thread 1
        // got 0xA back at seq 8, thread 2 did something unrelated at 9.
        let mut batch = vec![
            ev(7, 3, Op::Malloc, 0xC, 0),
            ev(8, 1, Op::Malloc, 0xA, 0),
            ev(9, 2, Op::Free, 0, 0xD),
            with_window(ev(10, 0, Op::Realloc, 0xB, 0xA), 3),
        ];
        assert_eq!(order_moving_reallocs(&mut batch), 1);
        let got: Vec<(u64, u32, u32)> = batch
            .iter()
            .map(|p| (p.event.seq, p.event.thread, p.window))
            .collect();
        assert_eq!(got, vec![(7, 3, 0), (8, 0, 3), (9, 1, 0), (10, 2, 0)]);
        assert!(
            batch.iter().all(|p| p.tag == p.event.thread),
            "tags move along"
        );
    }

    #[test]
    fn calls_outside_the_window_or_of_the_same_thread_do_not_move_it() {
        let mut batch = vec![
            ev(5, 1, Op::Malloc, 0xA, 0), // before the window: a real anomaly, left alone
            ev(6, 2, Op::Malloc, 0xE, 0),
            with_window(ev(7, 0, Op::Realloc, 0xB, 0xA), 1),
        ];
        assert_eq!(order_moving_reallocs(&mut batch), 0);
        assert_eq!(batch[2].event.seq, 7);
        // A realloc in place never moves.
        let mut batch = vec![
            ev(1, 1, Op::Malloc, 0xA, 0),
            with_window(ev(2, 0, Op::Realloc, 0xA, 0xA), 5),
        ];
        assert_eq!(order_moving_reallocs(&mut batch), 0);
    }

    #[test]
    fn a_free_of_the_new_block_in_the_window_keeps_the_batch_as_it_is() {
        let mut batch = vec![
            ev(1, 1, Op::Malloc, 0xA, 0),
            ev(2, 2, Op::Free, 0, 0xB),
            with_window(ev(3, 0, Op::Realloc, 0xB, 0xA), 3),
        ];
        assert_eq!(order_moving_reallocs(&mut batch), 0);
    }
}
