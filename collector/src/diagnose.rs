//! Why a command left no trace, or an empty one: the blind spots of an LD_PRELOAD recorder.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Finds the file `command` runs (PATH search when it has no slash).
pub fn resolve(command: &OsStr) -> Option<PathBuf> {
    let p = Path::new(command);
    if p.components().count() > 1 || command.to_string_lossy().contains('/') {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
}

/// What kind of executable a file is, as far as LD_PRELOAD is concerned.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// Dynamically linked ELF: the loader honours LD_PRELOAD.
    Dynamic,
    /// ELF without an interpreter: no dynamic loader, no preload.
    Static,
    /// setuid/setgid: the loader ignores LD_PRELOAD (secure-execution mode).
    SetId,
    /// A script (`#!`): what matters is the interpreter.
    Script,
    Unknown,
}

/// Classifies an executable file.
pub fn classify(path: &Path) -> Kind {
    let Ok(meta) = std::fs::metadata(path) else {
        return Kind::Unknown;
    };
    if meta.mode() & 0o6000 != 0 {
        return Kind::SetId;
    }
    let Ok(bytes) = std::fs::read(path) else {
        return Kind::Unknown;
    };
    if bytes.starts_with(b"#!") {
        return Kind::Script;
    }
    match has_interp(&bytes) {
        Some(true) => Kind::Dynamic,
        Some(false) => Kind::Static,
        None => Kind::Unknown,
    }
}

/// For a 64-bit little-endian ELF: whether it has a PT_INTERP program header.
fn has_interp(b: &[u8]) -> Option<bool> {
    if b.len() < 64 || &b[0..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]) as usize)
    };
    let phoff = u64::from_le_bytes(b.get(0x20..0x28)?.try_into().ok()?) as usize;
    let phentsize = u16_at(0x36)?;
    let phnum = u16_at(0x38)?;
    for i in 0..phnum {
        let off = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let ty = u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?);
        if ty == 3 {
            return Some(true); // PT_INTERP
        }
    }
    Some(false)
}

/// The plain message for a run where no process loaded the recorder.
pub fn no_trace_message(command: &OsStr) -> String {
    let name = command.to_string_lossy();
    let why = match resolve(command).map(|p| classify(&p)) {
        Some(Kind::Static) => format!("'{name}' is statically linked, so the dynamic loader (and LD_PRELOAD) never runs"),
        Some(Kind::SetId) => format!("'{name}' is setuid/setgid, and the loader ignores LD_PRELOAD for such programs"),
        _ => format!("no process of '{name}' loaded the recorder (a static or setuid program, or one that clears LD_PRELOAD)"),
    };
    format!("nothing was recorded: {why}; its allocations cannot be traced with allocscope record")
}

/// The plain message for a process that loaded the recorder, ran a while, and made no allocation
/// call through the dynamic malloc symbols.
pub fn few_events_message(pid: u32, lifetime_ns: u64) -> String {
    format!(
        "pid {pid} ran {:.1} s without one call to malloc/free and friends: either it needs none, or \
         it allocates in a way the recorder cannot see (Go, or an allocator such as jemalloc or \
         mimalloc linked in)",
        lifetime_ns as f64 / 1e9
    )
}

/// True when the executable at `path` was built by the Go toolchain (it carries Go's build-info
/// block, whose header starts with `\xff Go buildinf:`). Such a program allocates its heap with the
/// Go runtime, not malloc, even when it is dynamically linked (cgo).
pub fn is_go_program(path: &Path) -> bool {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    std::fs::read(path)
        .map(|b| b.windows(MAGIC.len()).any(|w| w == MAGIC))
        .unwrap_or(false)
}

/// The plain message for a process that runs a Go program: the recorder sees only its C (cgo)
/// allocations; the runtime's own trace holds its heap.
pub fn go_program_message(pid: u32, program: &str, events: u64) -> String {
    format!(
        "pid {pid} runs a Go program ('{program}'): Go allocates its heap in its own runtime, not \
         with malloc, so the {events} events recorded are only its C (cgo) calls. To see its heap, \
         take the runtime's own trace with GODEBUG=traceallocfree=1 (for a test binary: \
         `GODEBUG=traceallocfree=1 go test -trace trace.out`; in a program: runtime/trace.Start; \
         for a service: /debug/pprof/trace) and import it with `allocscope import trace.out`"
    )
}

/// The plain message for a process that exec'd a program which did not load the recorder.
pub fn exec_untraced_message(pid: u32, program: &str) -> String {
    let why = match resolve(program.as_ref()).map(|p| classify(&p)) {
        Some(Kind::Static) => "it is statically linked".to_string(),
        Some(Kind::SetId) => {
            "it is setuid/setgid and the loader ignores LD_PRELOAD for it".to_string()
        }
        _ => "a static or setuid program, or LD_PRELOAD was cleared".to_string(),
    };
    format!("pid {pid} ran '{program}', which did not load the recorder ({why}): its allocations are not traced")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn classifies_dynamic_static_setid_and_scripts() {
        assert_eq!(classify(&resolve("sh".as_ref()).unwrap()), Kind::Dynamic);
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        assert_eq!(classify(&script), Kind::Script);
        // An ELF header with no program headers at all: no PT_INTERP, so static.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let stat = dir.path().join("static");
        std::fs::write(&stat, &elf).unwrap();
        assert_eq!(classify(&stat), Kind::Static);
        let setid = dir.path().join("setuid");
        std::fs::copy(resolve("sh".as_ref()).unwrap(), &setid).unwrap();
        std::fs::set_permissions(&setid, std::fs::Permissions::from_mode(0o4755)).unwrap();
        assert_eq!(classify(&setid), Kind::SetId);
        assert!(no_trace_message(setid.as_os_str()).contains("setuid"));
        assert_eq!(classify(&dir.path().join("missing")), Kind::Unknown);
    }

    #[test]
    fn recognises_go_build_info() {
        let dir = tempfile::tempdir().unwrap();
        let go = dir.path().join("go");
        let mut bytes = b"\x7fELF junk".to_vec();
        bytes.extend_from_slice(b"\xff Go buildinf:\x08\x02 more");
        std::fs::write(&go, &bytes).unwrap();
        assert!(is_go_program(&go));
        assert!(!is_go_program(&resolve("sh".as_ref()).unwrap()));
        assert!(go_program_message(7, "srv", 14).contains("GODEBUG=traceallocfree=1"));
    }
}
