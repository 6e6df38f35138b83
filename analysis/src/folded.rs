//! Folded stacks (`export --format folded`): the text flamegraph.pl, inferno and speedscope read.
//!
//! One line per distinct symbolized stack: its frames root first, joined by `;`, a space, and the
//! stack's weight ([`Weight`]). Frames are function names (inlined calls are frames of their
//! own), `NAME+0xADDR` where a frame cannot be named ([`symbolize::Place::label`]), `[no stack]`
//! for calls recorded without one and `[unknown stack]` for a node the trace's table does not
//! hold (a damaged stack chunk). Stacks whose names are the same (two call lines in one
//! function) are one line; lines with weight 0 are left out; lines are sorted, so the same
//! trace always gives the same file.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;

use symbolize::Symbols;
use traces::StackTable;

use crate::stacks::{StackId, StackProfile, StackWeights};

/// The frame shown for allocating calls recorded without a stack.
pub const NO_STACK: &str = "[no stack]";
/// The frame shown for a stack whose node the trace's table does not hold.
pub const UNKNOWN_STACK: &str = "[unknown stack]";

/// What a folded line's number counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weight {
    /// Allocating calls.
    Allocs,
    /// Requested bytes.
    Bytes,
    /// Requested bytes still live at the end of the trace.
    Leaked,
    /// Requested bytes live at the peak of live requested bytes.
    Peak,
    /// Bytes lost to size-class rounding (the report's pass only: the exports' profile has
    /// none).
    Waste,
    /// Bytes of the Go model's HeapInuse at its peak (a report given a Go-model replay).
    GoHeap,
}

impl Weight {
    pub fn of(self, w: &StackWeights) -> u64 {
        match self {
            Weight::Allocs => w.allocs,
            Weight::Bytes => w.bytes,
            Weight::Leaked => w.leaked_bytes,
            Weight::Peak => w.peak_bytes,
            Weight::Waste => w.waste_bytes,
            Weight::GoHeap => w.go_heap_bytes,
        }
    }
}

/// The frame names of stack `id`, innermost first (see the module comment).
pub fn frame_names<'s>(
    id: StackId,
    first_seq: u64,
    table: &StackTable,
    symbols: &'s Symbols,
) -> Vec<Cow<'s, str>> {
    let Some(leaf) = id else {
        return vec![Cow::Borrowed(NO_STACK)];
    };
    if table.node(leaf).is_none() {
        return vec![Cow::Borrowed(UNKNOWN_STACK)];
    }
    symbols
        .stack(table, leaf, first_seq)
        .iter()
        .flat_map(|p| p.names())
        .collect()
}

/// The folded lines of `profile` weighted by `weight`: (frames root first joined by `;`, weight),
/// sorted by frames, stacks with the same names summed, zero weights left out.
pub fn lines(
    profile: &StackProfile,
    table: &StackTable,
    symbols: &Symbols,
    weight: Weight,
) -> Vec<(String, u64)> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for (id, w) in profile.sorted() {
        let n = weight.of(w);
        if n == 0 {
            continue;
        }
        let names = frame_names(id, w.first_seq, table, symbols);
        let line = join(names.iter().rev().map(|n| n.as_ref()));
        *out.entry(line).or_default() += n;
    }
    out.into_iter().collect()
}

/// A folded line's frames: `names` (root first) joined by `;`, each through [`push_frame`].
pub fn join<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut line = String::new();
    for (i, name) in names.enumerate() {
        if i > 0 {
            line.push(';');
        }
        push_frame(&mut line, name);
    }
    line
}

/// Appends a frame name with the folded format's separators taken out: `;` (between frames)
/// becomes `:`, line breaks become spaces.
fn push_frame(line: &mut String, name: &str) {
    line.extend(name.chars().map(|c| match c {
        ';' => ':',
        '\n' | '\r' => ' ',
        c => c,
    }));
}

/// Writes folded `lines` to `out`.
pub fn write(lines: &[(String, u64)], mut out: impl Write) -> std::io::Result<()> {
    for (frames, n) in lines {
        writeln!(out, "{frames} {n}")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_inside_names_are_replaced() {
        let mut s = String::new();
        push_frame(&mut s, "a;b\nc");
        assert_eq!(s, "a:b c");
    }

    #[test]
    fn stacks_without_names_and_unknown_nodes() {
        let mut table = StackTable::new();
        assert!(table.push(1, 0, 0x1000));
        assert!(table.push(2, 1, 0x2000));
        let symbols = Symbols::default();
        let mut profile = StackProfile::default();
        let w = |allocs| StackWeights {
            allocs,
            bytes: allocs * 10,
            ..StackWeights::default()
        };
        profile.stacks.insert(None, w(1));
        profile.stacks.insert(Some(2), w(2));
        profile.stacks.insert(Some(77), w(3));
        let got = lines(&profile, &table, &symbols, Weight::Bytes);
        assert_eq!(
            got,
            [
                ("0x1000;0x2000".to_string(), 20),
                (NO_STACK.to_string(), 10),
                (UNKNOWN_STACK.to_string(), 30),
            ]
        );
        assert!(lines(&profile, &table, &symbols, Weight::Leaked).is_empty());
    }
}
