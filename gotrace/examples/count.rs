//! Counts a Go trace's events by type (a development aid: `cargo run -p gotrace --example count -- FILE`).
fn main() {
    let path = std::env::args().nth(1).expect("usage: count FILE");
    let f = std::fs::File::open(&path).expect("open");
    let mut r = gotrace::GoTraceReader::open(f).expect("header");
    let mut counts = std::collections::BTreeMap::<u8, u64>::new();
    let mut gens = 0;
    let t = std::time::Instant::now();
    let mut last = 0u64;
    let mut backwards = 0u64;
    while let Some(item) = r.next_item().expect("read") {
        match item {
            gotrace::Item::Generation(g) => {
                gens += 1;
                eprintln!(
                    "gen {} types {} info {:?} clock {:?}",
                    g.number,
                    g.types.len(),
                    g.info,
                    g.clock
                );
            }
            gotrace::Item::Event(e) => {
                *counts.entry(e.typ).or_default() += 1;
                if e.time < last {
                    backwards += 1;
                }
                last = e.time;
            }
        }
    }
    let n: u64 = counts.values().sum();
    println!(
        "{gens} generations, {n} events in {:?}, {backwards} backwards",
        t.elapsed()
    );
    for (t, c) in counts {
        println!("{t:4} {c}");
    }
    for p in r.problems() {
        println!("problem: {p}");
    }
}
