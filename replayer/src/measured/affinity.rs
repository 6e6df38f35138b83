//! Pinning replay threads to CPUs (`--pin`), through `sched_setaffinity`.
#![allow(unsafe_code)]

/// Pins the calling thread to `cpu`. The error is one line for the user.
pub fn pin_current_thread(cpu: usize) -> Result<(), String> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(format!("CPU {cpu} is out of range"));
    }
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE (checked above), so CPU_SET stays inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!(
            "cannot pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Pins thread number `n` of a replay to its CPU (`cpus[n % len]`); nothing when `cpus` is empty.
pub fn pin_nth(cpus: &[usize], n: usize) -> Result<(), String> {
    match cpus.len() {
        0 => Ok(()),
        len => pin_current_thread(cpus[n % len]),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pins_to_cpu_zero_and_rejects_nonsense() {
        super::pin_current_thread(0).unwrap();
        assert!(super::pin_current_thread(1 << 20).is_err());
    }
}
