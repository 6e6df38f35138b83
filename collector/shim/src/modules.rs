//! The modules (executable, shared libraries) loaded in the process: for the unwinder (their
//! `.eh_frame` call-frame information) and for the trace (path, build-id, load bias, executable
//! ranges), so that every return address can be tied to a module and an offset, here or on another
//! machine with the same files.
//!
//! Found with `dl_iterate_phdr` from the program headers the loader keeps in memory: PT_LOAD
//! segments give the ranges, PT_GNU_EH_FRAME the `.eh_frame_hdr` section (whose header points to
//! `.eh_frame`), PT_NOTE the GNU build-id. The unwind sections of the modules loaded before the
//! recorder's constructor ran (the program and its dependency tree: they are never unloaded) are
//! read where the loader mapped them; those of modules loaded later are copied, since a module
//! unloaded (dlclose) must not leave an unwinder reading unmapped memory. Scans run in the
//! writer's passes, and in a hook whose stack ran into code of no known module while the loader
//! says it loaded or unloaded something since the last scan (`rescan_in_hook`): a library opened,
//! used and closed between two writer passes still has its stacks and its module record.

use std::ffi::CStr;

use recorder_protocol::elf::{build_id, read_encoded};

/// One loaded module.
#[derive(Clone, Debug)]
pub struct LoadedModule {
    pub path: String,
    /// GNU build-id, raw bytes (empty when the module has none).
    pub build_id: Vec<u8>,
    /// Load bias: runtime address minus the address stated in the file.
    pub bias: u64,
    /// Executable segments: (start, end) runtime addresses and the file offset of `start`.
    pub exec: Vec<(u64, u64, u64)>,
    /// Every PT_LOAD segment's runtime range (for the unwinder's module range).
    pub span: (u64, u64),
    /// `.eh_frame_hdr`: stated address and bytes.
    pub eh_frame_hdr: Option<(u64, Section)>,
    /// `.eh_frame`: stated address and bytes (to the end of its segment: the header's table
    /// indexes into it, so a longer slice is harmless).
    pub eh_frame: Option<(u64, Section)>,
}

/// Bytes of a section: where the loader mapped them (a module that is never unloaded), or a copy.
#[derive(Clone, Debug)]
pub enum Section {
    Mapped(&'static [u8]),
    Copied(Vec<u8>),
}

impl Default for Section {
    fn default() -> Section {
        Section::Copied(Vec::new())
    }
}

impl std::ops::Deref for Section {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Section::Mapped(b) => b,
            Section::Copied(v) => v,
        }
    }
}

/// The modules loaded before the constructor (path, load bias): never unloaded.
static PERMANENT: std::sync::Mutex<Vec<(String, u64)>> = std::sync::Mutex::new(Vec::new());

/// The bytes of `[start, end)` of this process's memory.
///
/// # Safety
/// The range is mapped and readable (a PT_LOAD segment of a loaded module).
unsafe fn copy_memory(start: u64, end: u64) -> Vec<u8> {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(start as *const u8, (end - start) as usize) }.to_vec()
}

/// Reads one module from the loader's record of it.
///
/// # Safety
/// `info` is a valid `dl_phdr_info` handed to a `dl_iterate_phdr` callback that is running.
unsafe fn module_of(
    info: &libc::dl_phdr_info,
    permanent: Option<&[(String, u64)]>,
) -> Option<LoadedModule> {
    let bias = info.dlpi_addr;
    // SAFETY: the loader's program header table of this module, `dlpi_phnum` entries.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string owned by the loader.
        unsafe { CStr::from_ptr(info.dlpi_name) }
            .to_string_lossy()
            .into_owned()
    };
    if name.starts_with("linux-vdso") || name.starts_with("linux-gate") {
        return None;
    }
    let path = if name.is_empty() {
        std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        name
    };
    // None: the constructor's scan, where every module is one of the program's own.
    let mapped = permanent.is_none_or(|list| list.iter().any(|(p, b)| *p == path && *b == bias));
    let section = |start: u64, end: u64| {
        if mapped {
            // SAFETY: a readable part of a loaded segment of a module that is never unloaded.
            Section::Mapped(unsafe {
                std::slice::from_raw_parts(start as *const u8, (end - start) as usize)
            })
        } else {
            // SAFETY: a readable part of a loaded segment.
            Section::Copied(unsafe { copy_memory(start, end) })
        }
    };
    let loads: Vec<&libc::Elf64_Phdr> =
        phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD).collect();
    let span = (
        loads.iter().map(|p| bias + p.p_vaddr).min()?,
        loads.iter().map(|p| bias + p.p_vaddr + p.p_memsz).max()?,
    );
    let exec = loads
        .iter()
        .filter(|p| p.p_flags & libc::PF_X != 0)
        .map(|p| (bias + p.p_vaddr, bias + p.p_vaddr + p.p_memsz, p.p_offset))
        .collect();
    let mut m = LoadedModule {
        path,
        build_id: Vec::new(),
        bias,
        exec,
        span,
        eh_frame_hdr: None,
        eh_frame: None,
    };
    for p in phdrs {
        let (start, end) = (bias + p.p_vaddr, bias + p.p_vaddr + p.p_filesz);
        if p.p_type == libc::PT_NOTE && m.build_id.is_empty() {
            // SAFETY: PT_NOTE lies inside a loaded, readable segment.
            m.build_id = build_id(&unsafe { copy_memory(start, end) }).unwrap_or_default();
        }
        if p.p_type == libc::PT_GNU_EH_FRAME && end > start + 4 {
            let hdr = section(start, end);
            let eh_frame_at = read_encoded(hdr[1], &hdr[4..], start + 4);
            let segment = eh_frame_at.and_then(|at| {
                loads
                    .iter()
                    .find(|l| (bias + l.p_vaddr..bias + l.p_vaddr + l.p_filesz).contains(&at))
                    .map(|l| (at, bias + l.p_vaddr + l.p_filesz))
            });
            if let Some((at, seg_end)) = segment {
                // [at, seg_end) lies inside a loaded PT_LOAD segment's file-backed part.
                m.eh_frame = Some((at - bias, section(at, seg_end)));
                m.eh_frame_hdr = Some((start - bias, hdr));
            }
        }
    }
    Some(m)
}

/// What `collect` fills, and the permanent modules (None: every module found is one).
type ScanData<'a> = (Vec<LoadedModule>, Option<&'a [(String, u64)]>);

unsafe extern "C" fn collect(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: `data` is the pair passed by `scan` for this call, `info` is valid during the call.
    let ((out, permanent), info) = unsafe { (&mut *(data as *mut ScanData), &*info) };
    // SAFETY: called from dl_iterate_phdr with a valid record.
    if let Some(m) = unsafe { module_of(info, *permanent) } {
        out.push(m);
    }
    0
}

/// Every module loaded now.
pub fn scan() -> Vec<LoadedModule> {
    let Ok(mut permanent) = PERMANENT.lock() else {
        return Vec::new();
    };
    let first = permanent.is_empty();
    let list = (!first).then_some(&permanent[..]);
    let mut data: ScanData = (Vec::new(), list);
    // SAFETY: `collect` matches the callback type and only uses `data` as the pair given here.
    unsafe { libc::dl_iterate_phdr(Some(collect), (&mut data as *mut ScanData).cast()) };
    let out = data.0;
    if first {
        // The constructor's scan: these modules are the program's own and stay loaded.
        *permanent = out.iter().map(|m| (m.path.clone(), m.bias)).collect();
    }
    out
}

/// What the trace has been told about modules: each module (by path and load bias) with its
/// number, and the loader's add/remove counters at the last scan.
struct Known {
    /// The load record of each module loaded now (its unload repeats it: a later record
    /// replaces an earlier one).
    modules: Vec<traces::Module>,
    next_id: u32,
    adds: u64,
    subs: u64,
    /// Records found by a scan in a hook, for the writer's next pass.
    pending: Vec<traces::Module>,
}

static KNOWN: std::sync::Mutex<Known> = std::sync::Mutex::new(Known {
    modules: Vec::new(),
    next_id: 0,
    adds: u64::MAX,
    subs: u64::MAX,
    pending: Vec::new(),
});

/// The loader's counters at the last scan (a hook compares them without the lock).
static SCANNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

/// Set by a hook whose stack ran into an address of no known module (a library loaded since the
/// last scan): the writer rescans at its next pass.
pub static STALE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

unsafe extern "C" fn counters(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: `data` is the pair passed by `loader_counters`, `info` is valid during the call.
    unsafe {
        let out = &mut *(data as *mut (u64, u64));
        *out = ((*info).dlpi_adds, (*info).dlpi_subs);
    }
    1 // the counters are the same in every record: one is enough
}

/// The loader's count of modules ever loaded and unloaded.
fn loader_counters() -> (u64, u64) {
    let mut out = (0u64, 0u64);
    // SAFETY: `counters` matches the callback type and only writes the pair given here.
    unsafe { libc::dl_iterate_phdr(Some(counters), (&mut out as *mut (u64, u64)).cast()) };
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rescans the modules when the loader loaded or unloaded any since the last scan (or when
/// `fresh`: a new trace, which must be told every module), installs an unwinder for them, and
/// returns the module records the trace needs: new modules (loaded before the event numbered
/// `seq`), unloads, and what scans in hooks found. Writer only: it allocates and takes the
/// loader's lock.
pub fn refresh(fresh: bool, seq: u64) -> Vec<traces::Module> {
    let Ok(mut known) = KNOWN.lock() else {
        return Vec::new();
    };
    let counters = loader_counters();
    let stale = STALE.swap(false, std::sync::atomic::Ordering::Relaxed);
    if fresh {
        known.modules.clear();
        known.pending.clear();
    }
    if fresh || stale || counters != (known.adds, known.subs) {
        update(&mut known, counters, fresh, seq);
    }
    std::mem::take(&mut known.pending)
}

/// Called by a hook whose stack stopped at an address no module covers: rescans (and installs a
/// new unwinder) only when the loader's counters moved since the last scan (JIT code costs one
/// look at the counters) and no other thread is scanning (never waits: a thread inside
/// `dl_iterate_phdr`'s callback may be allocating while another holds this lock). True when a
/// new unwinder is in place, so the stack is worth unwinding again.
pub fn rescan_in_hook(seq: u64) -> bool {
    let counters = loader_counters();
    if pack(counters) == SCANNED.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    let Ok(mut known) = KNOWN.try_lock() else {
        return false;
    };
    if counters == (known.adds, known.subs) {
        return false;
    }
    update(&mut known, counters, false, seq);
    true
}

fn pack((adds, subs): (u64, u64)) -> u64 {
    adds.wrapping_shl(32) ^ subs
}

/// Scans, installs the unwinder and queues the records of what changed since `known`.
fn update(known: &mut Known, counters: (u64, u64), fresh: bool, seq: u64) {
    (known.adds, known.subs) = counters;
    SCANNED.store(pack(counters), std::sync::atomic::Ordering::Relaxed);
    let now = scan();
    crate::unwind::install(&now);
    let mut records = std::mem::take(&mut known.pending);
    // Unloaded: known, not there any more.
    known.modules.retain(|k| {
        let here = now.iter().any(|m| m.path == k.path && m.bias == k.bias);
        if !here {
            records.push(traces::Module {
                unloaded_seq: Some(seq),
                ..k.clone()
            });
        }
        here
    });
    for m in &now {
        if known
            .modules
            .iter()
            .any(|k| k.path == m.path && k.bias == m.bias)
        {
            continue;
        }
        let record = traces::Module {
            id: known.next_id,
            path: m.path.clone(),
            build_id: hex(&m.build_id),
            bias: m.bias,
            ranges: m.exec.clone(),
            loaded_seq: if fresh { 0 } else { seq },
            unloaded_seq: None,
        };
        known.next_id += 1;
        known.modules.push(record.clone());
        records.push(record);
    }
    known.pending = records;
}
