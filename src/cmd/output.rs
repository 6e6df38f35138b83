//! Output files: every verb that writes a file writes it here, so that an output never destroys
//! an input and is never left half-written.
//!
//! The rules, the same for every verb (and said in each verb's `--help`):
//! - An output that is one of the verb's inputs (the same path, or the same file through a
//!   symlink or a hard link: same device and inode) is refused before any work starts.
//! - A file is written to a temporary file in the destination's own directory (created with
//!   O_EXCL under an unpredictable name, with the mode the final file gets) and renamed into
//!   place when it is complete. On any failure, and on SIGINT, SIGTERM or SIGHUP, the temporary
//!   file is removed: the destination holds either its old content or the whole new file.
//! - An existing regular file the user named is replaced (the convention for `-o`). A symlink at
//!   the destination is replaced by the new file, never written through. A destination that is
//!   a stream (a FIFO, a character device such as /dev/null or /dev/stdout) is written directly:
//!   there is nothing to rename there.
//! - A directory output (`report -o DIR`, `--csv DIR`, `--hlog DIR`) is created when missing and
//!   reused when it exists; each file allocscope writes in it follows the rules above, and other
//!   files in it are left alone.
//!
//! Library writers that take a path (the replayer's CSV and hlog writers, the report's CSV
//! tables) write into a private staging directory next to the destination; the files are then
//! renamed into place the same way.

use std::fs::{self, File, Permissions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, bail, Result};

/// One input of a verb, as a file identity.
struct Input {
    what: String,
    path: PathBuf,
    /// (device, inode) when the input exists.
    id: Option<(u64, u64)>,
    canonical: Option<PathBuf>,
}

/// The inputs of one verb, and the outputs it has claimed.
#[derive(Default)]
pub struct Outputs {
    inputs: Vec<Input>,
}

impl Outputs {
    pub fn new() -> Outputs {
        Outputs::default()
    }

    /// Adds an input (`what` names it in messages, e.g. "the trace"). Paths that do not exist
    /// are kept by name only.
    pub fn input(mut self, what: &str, path: &Path) -> Outputs {
        self.inputs.push(Input {
            what: what.to_string(),
            path: path.to_path_buf(),
            id: fs::metadata(path).ok().map(|m| (m.dev(), m.ino())),
            canonical: canonical(path),
        });
        self
    }

    /// Refuses `out` (given with `flag`) when it is, or resolves to, one of the inputs.
    pub fn check(&self, flag: &str, out: &Path) -> Result<()> {
        let id = fs::metadata(out).ok().map(|m| (m.dev(), m.ino()));
        let canon = canonical(out);
        for i in &self.inputs {
            let same_inode = id.is_some() && id == i.id;
            let same_path = canon.is_some() && canon == i.canonical;
            if same_inode || same_path {
                let how = if out == i.path {
                    String::new()
                } else {
                    format!(" (the same file as {})", i.path.display())
                };
                bail!(
                    "{flag} {} is {}{how}: writing it would destroy the input; choose another file",
                    out.display(),
                    i.what
                );
            }
        }
        Ok(())
    }

    /// Checks a directory output: refused when it is an input, an error when it exists and is
    /// not a directory.
    pub fn check_dir(&self, flag: &str, dir: &Path) -> Result<()> {
        self.check(flag, dir)?;
        match fs::metadata(dir) {
            Ok(m) if !m.is_dir() => bail!(
                "{flag} {}: exists and is not a directory; choose a directory",
                dir.display()
            ),
            _ => Ok(()),
        }
    }

    /// Writes `bytes` to `out` (see the module rules).
    pub fn write(&self, flag: &str, out: &Path, bytes: &[u8]) -> Result<()> {
        let mut f = self.create(flag, out)?;
        f.write_all(bytes).map_err(|e| write_error(out, e))?;
        f.commit()
    }

    /// Lets a library writer that takes a path write `out`: it writes a temporary file that
    /// then replaces `out`. Errors name `out`, not the temporary file.
    pub fn write_with<E>(
        &self,
        flag: &str,
        out: &Path,
        write: impl FnOnce(&Path) -> std::result::Result<(), E>,
    ) -> Result<()>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let f = self.create(flag, out)?;
        let tmp = match &f.sink {
            Sink::Temp { tmp, .. } => tmp.path().to_path_buf(),
            Sink::Stream(_) => out.to_path_buf(),
        };
        write(&tmp).map_err(|e| library_error(out, e))?;
        f.commit()
    }

    /// Lets a library writer that fills a directory write into `dir`: it writes a private
    /// staging directory inside `dir`, whose files then replace their namesakes in `dir`.
    /// Returns the files written.
    pub fn write_dir_with<E>(
        &self,
        flag: &str,
        dir: &Path,
        write: impl FnOnce(&Path) -> std::result::Result<(), E>,
    ) -> Result<Vec<PathBuf>>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        self.check_dir(flag, dir)?;
        fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
        let stage = Registered::new(
            tempfile::Builder::new()
                .prefix(".allocscope-")
                .tempdir_in(dir)
                .map_err(|e| write_error(dir, e))?,
        );
        write(stage.path()).map_err(|e| library_error(dir, e))?;
        let mut names: Vec<PathBuf> = fs::read_dir(stage.path())
            .map_err(|e| write_error(dir, e))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| write_error(dir, e))?;
        names.sort();
        let finals: Vec<PathBuf> = names
            .iter()
            .map(|p| dir.join(p.file_name().unwrap_or_default()))
            .collect();
        for out in &finals {
            self.check(flag, out)?;
        }
        for (tmp, out) in names.iter().zip(&finals) {
            set_mode_like(tmp, out).map_err(|e| write_error(out, e))?;
            fs::rename(tmp, out).map_err(|e| write_error(out, e))?;
        }
        Ok(finals)
    }

    /// Opens `out` for writing: a temporary file in its directory, or the stream itself when
    /// `out` is a FIFO or a character device. [`Staged::commit`] puts it in place; dropping it
    /// uncommitted removes the temporary file.
    pub fn create(&self, flag: &str, out: &Path) -> Result<Staged> {
        self.check(flag, out)?;
        let existing = fs::metadata(out).ok();
        if let Some(m) = &existing {
            let t = m.file_type();
            if t.is_fifo() || t.is_char_device() {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(out)
                    .map_err(|e| write_error(out, e))?;
                return Ok(Staged {
                    dest: out.to_path_buf(),
                    sink: Sink::Stream(f),
                });
            }
            if m.is_dir() {
                bail!("{flag} {}: is a directory; name a file", out.display());
            }
            if !t.is_file() {
                bail!(
                    "{flag} {}: exists and is not a regular file; choose another name",
                    out.display()
                );
            }
        }
        let dir = match out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            bail!(
                "cannot write {}: directory {} does not exist; create it or choose another path",
                out.display(),
                dir.display()
            );
        }
        // A new file gets 0666 less the umask, as `File::create` would give it; a replaced
        // file keeps its mode.
        let mode = existing.as_ref().map_or(0o666, |m| m.mode() & 0o7777);
        let name = out.file_name().unwrap_or_default().to_string_lossy();
        let prefix = format!(".{name}.");
        // Created and listed for removal as one step (the list's lock is held): a signal that
        // comes in between still finds the file listed.
        install_cleanup();
        let (tmp, registered) = {
            let mut list = cleanup_list().lock().unwrap_or_else(|e| e.into_inner());
            let tmp = tempfile::Builder::new()
                .prefix(&prefix)
                .suffix(".tmp")
                .permissions(Permissions::from_mode(mode))
                .tempfile_in(dir)
                .map_err(|e| write_error(out, e))?;
            list.push(tmp.path().to_path_buf());
            let registered = Deregister(tmp.path().to_path_buf());
            (tmp, registered)
        };
        if existing.is_some() {
            tmp.as_file()
                .set_permissions(Permissions::from_mode(mode))
                .map_err(|e| write_error(out, e))?;
        }
        Ok(Staged {
            dest: out.to_path_buf(),
            sink: Sink::Temp { tmp, registered },
        })
    }
}

/// An output being written.
pub struct Staged {
    dest: PathBuf,
    sink: Sink,
}

enum Sink {
    Temp {
        tmp: tempfile::NamedTempFile,
        /// Removes the path from the signal-time clean-up list when dropped.
        registered: Deregister,
    },
    Stream(File),
}

impl Staged {
    /// Renames the complete file into place.
    pub fn commit(self) -> Result<()> {
        let dest = self.dest;
        match self.sink {
            Sink::Stream(mut f) => f.flush().map_err(|e| write_error(&dest, e)),
            Sink::Temp { tmp, registered } => {
                tmp.as_file()
                    .sync_data()
                    .map_err(|e| write_error(&dest, e))?;
                // Under the clean-up list's lock: a signal cannot remove the file mid-rename.
                let mut list = cleanup_list().lock().unwrap_or_else(|e| e.into_inner());
                let renamed = tmp.persist(&dest);
                list.retain(|q| q != &registered.0);
                drop(list);
                renamed.map_err(|e| write_error(&dest, e.error))?;
                Ok(())
            }
        }
    }
}

impl Write for Staged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.sink {
            // The file itself: NamedTempFile's own Write would add the temporary path to errors.
            Sink::Temp { tmp, .. } => tmp.as_file_mut().write(buf),
            Sink::Stream(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Temp { tmp, .. } => tmp.as_file_mut().flush(),
            Sink::Stream(f) => f.flush(),
        }
    }
}

/// "cannot write FILE: <OS error>", one line.
pub fn write_error(path: &Path, e: std::io::Error) -> anyhow::Error {
    anyhow!("cannot write {}: {}", path.display(), e)
}

/// A library writer's error: the OS error under it when there is one (the library's message
/// names a temporary path), else the library's own message.
fn library_error<E: std::error::Error + Send + Sync + 'static>(out: &Path, e: E) -> anyhow::Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return anyhow!("cannot write {}: {}", out.display(), io);
        }
        cause = c.source();
    }
    anyhow!("cannot write {}: {e}", out.display())
}

/// Gives `tmp` the mode of an existing `out` (a new file keeps the mode it was created with).
fn set_mode_like(tmp: &Path, out: &Path) -> std::io::Result<()> {
    match fs::metadata(out) {
        Ok(m) if m.is_file() => fs::set_permissions(tmp, Permissions::from_mode(m.mode() & 0o7777)),
        _ => Ok(()),
    }
}

/// The canonical form of `p`, or of its parent joined with its name when `p` does not exist.
fn canonical(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = fs::canonicalize(p) {
        return Some(c);
    }
    let name = p.file_name()?;
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(fs::canonicalize(parent).ok()?.join(name))
}

// ---- clean-up on signals -------------------------------------------------------------------

/// Temporary paths to remove if the process is ended by a signal.
fn cleanup_list() -> &'static Mutex<Vec<PathBuf>> {
    static LIST: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    LIST.get_or_init(|| Mutex::new(Vec::new()))
}

/// Installs (once) a thread that, on SIGINT, SIGTERM or SIGHUP, removes the temporary paths
/// still listed and then ends the process as the signal would have.
fn install_cleanup() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            return;
        };
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                // Held until the process ends: no commit can rename a file being removed.
                let list = cleanup_list().lock().unwrap_or_else(|e| e.into_inner());
                for p in list.iter() {
                    if p.is_dir() {
                        let _ = fs::remove_dir_all(p);
                    } else {
                        let _ = fs::remove_file(p);
                    }
                }
                let _ = signal_hook::low_level::emulate_default_handler(sig);
                std::process::exit(128 + sig);
            }
        });
    });
}

/// Lists `p` for removal on a signal until the returned guard is dropped.
fn register(p: &Path) -> Deregister {
    install_cleanup();
    cleanup_list()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(p.to_path_buf());
    Deregister(p.to_path_buf())
}

struct Deregister(PathBuf);

impl Drop for Deregister {
    fn drop(&mut self) {
        let mut list = cleanup_list().lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|q| q != &self.0);
    }
}

/// A staging directory listed for removal on a signal; removed (with its content) when dropped.
struct Registered {
    dir: tempfile::TempDir,
    _guard: Deregister,
}

impl Registered {
    fn new(dir: tempfile::TempDir) -> Registered {
        let guard = register(dir.path());
        Registered { dir, _guard: guard }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}
