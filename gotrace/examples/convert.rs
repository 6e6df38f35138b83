//! Times reading and converting a Go trace without writing anything (a development aid:
//! `cargo run --release -p gotrace --example convert -- FILE`). The class table is Go's
//! (literal here: this aid has no replayer to take it from).
use gotrace::side::Record;
use gotrace::{Converter, FreeTime, GoTraceReader, Item, Options, Sink};

struct Count(u64);
impl Sink for Count {
    type Error = ();
    fn event(&mut self, _: &traces::Event) -> Result<(), ()> {
        self.0 += 1;
        Ok(())
    }
    fn record(&mut self, _: &Record) -> Result<(), ()> {
        Ok(())
    }
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: convert FILE");
    let t = std::time::Instant::now();
    let f = std::fs::File::open(&path).expect("open");
    let mut r = GoTraceReader::open(f).expect("header");
    let class_bytes = std::env::args()
        .nth(2)
        .map(|s| s.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or_else(|| vec![0u32; 68]);
    let opts = Options {
        class_bytes,
        frees: FreeTime::Sweep,
        source: path,
    };
    let mut c = Converter::new(opts, Count(0));
    let mut n = 0u64;
    while let Some(item) = r.next_item().expect("read") {
        match item {
            Item::Generation(g) => c.generation(&g, r.format()).map_err(|_| ()).unwrap(),
            Item::Event(e) => {
                n += 1;
                c.event(&e).unwrap_or_else(|_| panic!())
            }
        }
    }
    let (sink, _) = c.finish().map_err(|_| ()).unwrap();
    let s = t.elapsed().as_secs_f64();
    println!(
        "{n} Go events -> {} events in {s:.3} s: {:.1} M Go events/s",
        sink.0,
        n as f64 / s / 1e6
    );
}
