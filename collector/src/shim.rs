//! The preload shim, embedded at build time (see `build.rs`), and its installation.
//!
//! `install()` writes the bytes once to `$XDG_CACHE_HOME/allocscope` (or `~/.cache/allocscope`, or
//! `$TMPDIR/allocscope-<uid>` without a home), a directory of mode 0700 owned by the user, in a file
//! named after the content hash. An existing file is reused only if it is ours, not group/world
//! writable and has exactly the embedded bytes; otherwise it is replaced atomically (write + rename).

use std::fs;
use std::hash::Hasher;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::RecordError;

static SHIM: &[u8] = include_bytes!(env!("ALLOCSCOPE_EMBEDDED_SHIM"));

/// The embedded shared object.
pub fn shim_bytes() -> &'static [u8] {
    SHIM
}

/// A stable 64-bit FNV-1a hash of the shim (names the cached file).
pub fn shim_hash() -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.write(SHIM);
    h.finish()
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

pub(crate) fn uid() -> u32 {
    fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// The private cache directory (created 0700 when missing; refused when not ours or open to others).
pub fn cache_dir() -> Result<PathBuf, RecordError> {
    let dir = if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        PathBuf::from(x).join("allocscope")
    } else if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        PathBuf::from(h).join(".cache").join("allocscope")
    } else {
        std::env::temp_dir().join(format!("allocscope-{}", uid()))
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| {
            RecordError::Setup(format!(
                "cannot create the cache directory {}: {e}; set XDG_CACHE_HOME to a writable place",
                dir.display()
            ))
        })?;
    let meta = fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != uid() || meta.mode() & 0o022 != 0 {
        return Err(RecordError::Setup(format!(
            "{} is not a private directory of yours (owner, mode 0700); remove it or set XDG_CACHE_HOME",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Writes the shim to the cache (once per version) and returns its path.
pub fn install() -> Result<PathBuf, RecordError> {
    let dir = cache_dir()?;
    let path = dir.join(format!("libcollector_shim-{:016x}.so", shim_hash()));
    if is_intact(&path) {
        return Ok(path);
    }
    // Unique per call: sessions of one process (tests, threads) may install at the same time.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        "libcollector_shim.{}.{}.tmp",
        std::process::id(),
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o500)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| {
            RecordError::Setup(format!(
                "cannot write the recorder library to {}: {e}",
                tmp.display()
            ))
        })?;
    let written = f.write_all(SHIM).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, &path)) {
        let _ = fs::remove_file(&tmp);
        return Err(RecordError::Setup(format!(
            "cannot write the recorder library to {}: {e}",
            path.display()
        )));
    }
    Ok(path)
}

fn is_intact(path: &Path) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.uid() != uid() || meta.permissions().mode() & 0o022 != 0 {
        return false;
    }
    meta.len() == SHIM.len() as u64 && fs::read(path).is_ok_and(|b| b == SHIM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_shim_is_a_shared_object_exporting_the_hooks() {
        assert!(SHIM.starts_with(b"\x7fELF"), "not an ELF file");
        for sym in [
            "malloc",
            "free",
            "calloc",
            "realloc",
            "posix_memalign",
            "execve",
            "execl",
        ] {
            let needle = format!("\0{sym}\0");
            assert!(
                SHIM.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{sym} not in the symbol table"
            );
        }
    }

    #[test]
    fn install_writes_once_and_repairs_a_changed_copy() {
        let dir = tempfile::tempdir().unwrap();
        // The process environment is shared by tests: only this test sets XDG_CACHE_HOME, and the
        // value it sets is a private directory, so other tests (which use the default) still work.
        std::env::set_var("XDG_CACHE_HOME", dir.path());
        let p = install().unwrap();
        assert!(p.starts_with(dir.path()));
        let mode = fs::metadata(p.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(fs::read(&p).unwrap(), SHIM);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, b"tampered").unwrap();
        assert_eq!(install().unwrap(), p);
        assert_eq!(fs::read(&p).unwrap(), SHIM);
    }
}
