//! Phase marks for the start-up benchmark: when SKIFF_TIMINGS names a file, each process on
//! the path (skiff, its shim, a container's setup process) appends `pid phase nanoseconds`
//! lines with CLOCK_MONOTONIC times, comparable across processes. One write(2) each, so the
//! lines of concurrent processes never mix; nothing at all happens when the variable is unset.

use std::io::Write;

pub const ENV: &str = "SKIFF_TIMINGS";

/// The file, opened once per process (close-on-exec): a container's setup process inherits
/// it and can still write after `pivot_root` has taken the path away.
static FILE: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();

pub fn mark(phase: &str) {
    let file = FILE.get_or_init(|| {
        let path = std::env::var_os(ENV)?;
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .ok()
    });
    let Some(mut f) = file.as_ref() else {
        return;
    };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let ns = ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128;
    let line = format!("{} {phase} {ns}\n", std::process::id());
    let _ = f.write_all(line.as_bytes());
}
