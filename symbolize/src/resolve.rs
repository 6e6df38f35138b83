//! Asking blazesym for the names of one module's addresses.

use std::path::{Path, PathBuf};

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{CodeInfo, Input, Sym, Symbolized, Symbolizer};
use rustc_hash::FxHashMap;

use crate::Frame;

/// Names of `addrs` (file addresses, as looked up) from `files`, best first: an address the
/// first file does not name is asked of the next. An address no file names maps to no frames.
/// Errors that stop a whole file (not ELF, unreadable) are notes.
pub fn names(
    files: &[PathBuf],
    addrs: &[u64],
    dirs: &[PathBuf],
    notes: &mut Vec<String>,
) -> FxHashMap<u64, Vec<Frame>> {
    let symbolizer = Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .set_debug_dirs(Some(dirs))
        .build();
    let mut out: FxHashMap<u64, Vec<Frame>> = FxHashMap::default();
    let mut left: Vec<u64> = addrs.to_vec();
    for file in files {
        left = ask(&symbolizer, file, &left, 0, &mut out, notes);
    }
    // A return address at the very start of a function is no call's: it is where a signal
    // handler returns to (the signal trampoline, `__restore_rt`), and the byte before it is
    // another function's or none. Such an address is named by the function it starts.
    for file in files {
        left = ask(&symbolizer, file, &left, 1, &mut out, notes);
    }
    for addr in left {
        out.insert(addr, Vec::new());
    }
    out
}

/// Asks `file` for the names of `addrs` (each looked up at `addr + shift`; with a shift, only a
/// function starting exactly there counts); returns the addresses still unnamed.
fn ask(
    symbolizer: &Symbolizer,
    file: &Path,
    addrs: &[u64],
    shift: u64,
    out: &mut FxHashMap<u64, Vec<Frame>>,
    notes: &mut Vec<String>,
) -> Vec<u64> {
    if addrs.is_empty() {
        return Vec::new();
    }
    let at: Vec<u64> = addrs.iter().map(|a| a.wrapping_add(shift)).collect();
    let src = Source::Elf(Elf::new(file));
    let found = match symbolizer.symbolize(&src, Input::VirtOffset(&at)) {
        Ok(found) => found,
        Err(e) => {
            if shift == 0 {
                notes.push(format!("{}: cannot read its symbols: {e}", file.display()));
            }
            return addrs.to_vec();
        }
    };
    let mut still = Vec::new();
    for (&addr, s) in addrs.iter().zip(found) {
        match s {
            Symbolized::Sym(sym) if !sym.name.is_empty() && (shift == 0 || sym.offset == 0) => {
                out.insert(addr, frames(&sym));
            }
            _ => still.push(addr),
        }
    }
    still
}

/// The frames of one symbolized address, innermost first: the inlined calls from the deepest
/// out, then the function that holds the address.
fn frames(sym: &Sym<'_>) -> Vec<Frame> {
    let place = |c: Option<&CodeInfo<'_>>| match c {
        Some(c) => (Some(c.to_path().display().to_string()), c.line),
        None => (None, None),
    };
    let mut out = Vec::with_capacity(sym.inlined.len() + 1);
    for f in sym.inlined.iter().rev() {
        let (file, line) = place(f.code_info.as_ref());
        out.push(Frame {
            function: f.name.to_string(),
            file,
            line,
            inlined: true,
        });
    }
    let (file, line) = place(sym.code_info.as_deref());
    out.push(Frame {
        function: sym.name.to_string(),
        file,
        line,
        inlined: false,
    });
    out
}
