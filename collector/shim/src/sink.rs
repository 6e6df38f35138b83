//! The trace file as the writer sees it: a `File` that checks, before every write, that its
//! descriptor still refers to the file it created.
//!
//! Programs close descriptors they did not open (daemons `closefrom(3)` after fork) and reuse the
//! numbers; writing trace chunks into whatever the program opened next would corrupt its data. So
//! each write first compares the descriptor's device and inode with the ones saved at creation, and
//! fails (recording stops, the program goes on) when they differ. The descriptor is also moved to a
//! high number, out of the way of programs that assume the low ones are theirs. A descriptor found
//! replaced is never closed (the number is the program's now).

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::MetadataExt;

use traces::Rewind;

/// Lowest descriptor number the trace file is moved to.
const HIGH_FD: libc::c_int = 600;

pub struct GuardedFile {
    /// Closed on drop unless `replaced`: then the number belongs to the program now.
    file: ManuallyDrop<File>,
    dev: u64,
    ino: u64,
    replaced: bool,
}

impl Drop for GuardedFile {
    fn drop(&mut self) {
        if !self.replaced {
            // SAFETY: dropped once, here; `file` is not used after.
            unsafe { ManuallyDrop::drop(&mut self.file) };
        }
    }
}

impl GuardedFile {
    pub fn new(file: File) -> io::Result<GuardedFile> {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own returns a new descriptor (or -1), which we
        // then own alone; the original is closed when `file` is dropped.
        let high = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD) };
        let file = if high >= 0 {
            // SAFETY: `high` is a fresh descriptor owned by nobody else.
            unsafe { File::from_raw_fd(high) }
        } else {
            file
        };
        let meta = file.metadata()?;
        Ok(GuardedFile {
            dev: meta.dev(),
            ino: meta.ino(),
            file: ManuallyDrop::new(file),
            replaced: false,
        })
    }

    fn check(&mut self) -> io::Result<()> {
        let mut st: libc::stat = unsafe_zeroed_stat();
        // SAFETY: `st` is a valid out-pointer for fstat.
        let rc = unsafe { libc::fstat(self.file.as_raw_fd(), &mut st) };
        if rc != 0 || st.st_dev != self.dev || st.st_ino != self.ino {
            self.replaced = true;
            return Err(io::Error::other(
                "the program closed or replaced the trace file's descriptor; recording stopped",
            ));
        }
        Ok(())
    }
}

fn unsafe_zeroed_stat() -> libc::stat {
    // SAFETY: `stat` is plain data for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

impl Write for GuardedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.replaced {
            return Err(io::Error::other("trace descriptor lost"));
        }
        self.check()?;
        self.file.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.replaced {
            return Err(io::Error::other("trace descriptor lost"));
        }
        self.check()?;
        self.file.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.replaced {
            return Ok(());
        }
        self.file.flush()
    }
}

impl Rewind for GuardedFile {
    fn rewind_to(&mut self, len: u64) -> io::Result<()> {
        if self.replaced {
            return Err(io::Error::other("trace descriptor lost"));
        }
        self.check()?;
        self.file.rewind_to(len)
    }
}

/// The spool directory (shared ring files), held open like the trace file: moved to a high
/// descriptor number and checked (device, inode) before every use, so that a program that closed
/// it and reused the number never gets ring files in one of its own directories.
pub struct GuardedDir {
    fd: libc::c_int,
    dev: u64,
    ino: u64,
}

impl GuardedDir {
    /// Opens `path` (a directory, not through a symlink).
    pub fn open(path: &std::ffi::CStr) -> io::Result<GuardedDir> {
        // SAFETY: `path` is NUL-terminated; the flags open a directory read-only.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is ours; F_DUPFD_CLOEXEC returns a new descriptor or -1.
        let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, HIGH_FD) };
        let fd = if high >= 0 {
            // SAFETY: `fd` is ours and replaced by `high`.
            unsafe { libc::close(fd) };
            high
        } else {
            fd
        };
        let mut st = unsafe_zeroed_stat();
        // SAFETY: `st` is a valid out-pointer for fstat.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            let e = io::Error::last_os_error();
            // SAFETY: `fd` is ours.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        Ok(GuardedDir {
            fd,
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    fn intact(&self) -> bool {
        let mut st = unsafe_zeroed_stat();
        // SAFETY: `st` is a valid out-pointer for fstat.
        let rc = unsafe { libc::fstat(self.fd, &mut st) };
        rc == 0 && st.st_dev == self.dev && st.st_ino == self.ino
    }

    /// Creates the file `name` (which must not exist) of `bytes` bytes and maps it shared,
    /// read-write. None on any failure (nothing is left behind). No allocation: hooks call it.
    pub fn create_mapped(&self, name: &std::ffi::CStr, bytes: usize) -> Option<*mut u8> {
        if !self.intact() {
            return None;
        }
        // SAFETY: `name` is NUL-terminated and relative to our directory descriptor.
        let fd = unsafe {
            libc::openat(
                self.fd,
                name.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0o600,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is the file just created; ftruncate extends it with zeroes (sparse) and
        // mmap maps it shared; both results are checked.
        let p = unsafe {
            if libc::ftruncate(fd, bytes as libc::off_t) == 0 {
                libc::mmap(
                    std::ptr::null_mut(),
                    bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            } else {
                libc::MAP_FAILED
            }
        };
        // SAFETY: the mapping (if any) keeps the file; the descriptor is not needed any more.
        unsafe { libc::close(fd) };
        if p == libc::MAP_FAILED {
            self.unlink(name);
            return None;
        }
        Some(p.cast())
    }

    /// Removes the file `name` from the directory (errors ignored).
    pub fn unlink(&self, name: &std::ffi::CStr) {
        if self.intact() {
            // SAFETY: `name` is NUL-terminated and relative to our directory descriptor.
            unsafe { libc::unlinkat(self.fd, name.as_ptr(), 0) };
        }
    }
}
