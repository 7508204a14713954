//! skiff: run ECS-style tasks on edge hosts without a container daemon.

/// Print one line to stderr with a single write(2), so that lines from skiff never
/// interleave with container output forwarded to the same terminal.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }};
}

mod agent;
mod cgroup;
mod cli;
mod control;
mod image;
mod net;
// Used by the agent and the control plane, which are being built against it.
#[allow(dead_code)]
mod proto;
mod runtime;
mod task;
mod taskdef;
mod timing;

fn main() {
    std::process::exit(cli::main());
}
