//! Recording a window of a long-running process: `--paused` with SIGUSR2 toggles, and `--duration`.
//! One test function: SIGUSR2 goes to this (the recording) process, so the cases must not overlap.

mod common;

use std::time::Duration;

#[test]
fn paused_toggle_and_duration() {
    let dir = tempfile::tempdir().unwrap();
    let exe = common::compile("steady", dir.path());

    // Paused and never resumed: an empty trace, and no "blind spot" warning.
    let d = tempfile::tempdir().unwrap();
    let o = common::record(
        d.path(),
        &[exe.clone().into_os_string(), "300".into()],
        |o| o.paused = true,
    );
    assert_eq!(o.exit_code, 0);
    assert_eq!(o.processes.len(), 1);
    assert_eq!(o.processes[0].events, 0);
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);

    // --duration: recording stops after 0.3 s of a 1.5 s run; the program runs to its end.
    let d = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let o = common::record(
        d.path(),
        &[exe.clone().into_os_string(), "1500".into()],
        |o| o.duration = Some(Duration::from_millis(300)),
    );
    assert_eq!(o.exit_code, 0);
    assert!(started.elapsed() >= Duration::from_millis(1400));
    let evs = common::events(&o.processes[0].path);
    assert!(evs.len() > 100, "{} events", evs.len());
    let last = evs.last().unwrap().ts_ns;
    assert!(
        last < 900_000_000,
        "last event at {last} ns: recording went on after --duration"
    );

    // --paused, then SIGUSR2 after 400 ms starts recording.
    let d = tempfile::tempdir().unwrap();
    let toggler = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(400));
        // SAFETY: kill has no memory-safety preconditions; record installed a SIGUSR2 handler
        // in this process long before (it starts the command first thing).
        unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) };
    });
    let o = common::record(d.path(), &[exe.into_os_string(), "1000".into()], |o| {
        o.paused = true
    });
    toggler.join().unwrap();
    assert_eq!(o.exit_code, 0);
    let evs = common::events(&o.processes[0].path);
    assert!(evs.len() > 100, "{} events", evs.len());
    let first = evs.first().unwrap().ts_ns;
    assert!(
        first > 300_000_000,
        "first event at {first} ns, before the SIGUSR2"
    );

    // A second SIGUSR2 pauses again, and says so.
    let d = tempfile::tempdir().unwrap();
    let exe = common::compile("steady", d.path());
    let toggler = std::thread::spawn(|| {
        for wait in [300, 400] {
            std::thread::sleep(Duration::from_millis(wait));
            // SAFETY: as above.
            unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) };
        }
    });
    let opts = collector::RecordOptions {
        output: Some(d.path().join("trace.atrace")),
        command: vec![exe.into_os_string(), "1200".into()],
        paused: true,
        ..collector::RecordOptions::default()
    };
    let mut lines = Vec::new();
    let o = collector::record(&opts, |l| lines.push(l.to_string())).unwrap();
    toggler.join().unwrap();
    assert!(lines.iter().any(|l| l == "recording started"), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("recording paused after")),
        "{lines:?}"
    );
    let evs = common::events(&o.processes[0].path);
    let (first, last) = (evs[0].ts_ns, evs[evs.len() - 1].ts_ns);
    assert!(
        first > 200_000_000 && last < 1_000_000_000,
        "events from {first} to {last} ns: outside the window"
    );
}
