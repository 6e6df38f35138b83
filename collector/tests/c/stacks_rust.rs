// A Rust program with known allocating chains (collector/tests/stacks.rs), built with rustc -O
// -g (no frame pointers): 9 vectors from stacks_rust::main -> level_one -> level_two, whose
// mangled names must come out demangled, without their hashes.
use std::hint::black_box;

#[inline(never)]
fn level_two(n: usize) -> Vec<u64> {
    let mut v = Vec::with_capacity(n);
    v.push(n as u64);
    black_box(v)
}

#[inline(never)]
fn level_one(n: usize) -> Vec<u64> {
    let v = level_two(black_box(n));
    black_box(v)
}

fn main() {
    let mut keep = Vec::with_capacity(16);
    for i in 0..9 {
        keep.push(level_one(100 + i));
    }
    println!("vectors {}", black_box(keep).len());
}
