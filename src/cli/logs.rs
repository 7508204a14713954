//! `skiff logs TASK [CONTAINER]`: a container's output from its json-file log, which the shim
//! writes whether or not a skiff process is attached.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Args;

use super::EXIT_RUNNER_ERROR;
use crate::runtime::logfile::{parse_time, read_records, LogStream};

#[derive(Args)]
pub struct LogsArgs {
    /// The task's id (or a unique prefix of it).
    task: String,
    /// The container (may be left out when the task has one).
    container: Option<String>,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
    /// Only lines since a time (RFC 3339, e.g. 2026-11-22T08:00:00Z) or a duration ago
    /// (90s, 10m, 2h).
    #[arg(long)]
    since: Option<String>,
    /// Prefix each line with its time.
    #[arg(short = 't', long)]
    timestamps: bool,
}

/// "90s", "10m", "2h", "1d" → a duration.
fn parse_ago(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// The task directory whose id starts with `prefix` (exactly one).
pub fn find_task(state_dir: &Path, prefix: &str) -> Result<PathBuf, String> {
    let tasks = state_dir.join("tasks");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&tasks)
        .map_err(|e| format!("{}: {e}", tasks.display()))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    match found.len() {
        0 => Err(format!("no task {prefix:?} in {}", tasks.display())),
        1 => Ok(found.remove(0)),
        n => Err(format!(
            "{n} tasks start with {prefix:?}: give more of the id"
        )),
    }
}

pub fn run(args: LogsArgs, state_dir: &Path) -> i32 {
    match logs(args, state_dir) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("skiff: logs: {e}");
            EXIT_RUNNER_ERROR
        }
    }
}

fn logs(args: LogsArgs, state_dir: &Path) -> Result<(), String> {
    if args.task.is_empty() {
        return Err("the task id is empty".into());
    }
    let task_dir = find_task(state_dir, &args.task)?;
    let containers_dir = task_dir.join("containers");
    let container = match args.container {
        Some(c) => c,
        None => {
            let names: Vec<String> = std::fs::read_dir(&containers_dir)
                .map_err(|e| format!("{}: {e}", containers_dir.display()))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect();
            match names.as_slice() {
                [one] => one.clone(),
                _ => {
                    return Err(format!(
                        "the task has {} containers ({}): name one",
                        names.len(),
                        names.join(", ")
                    ))
                }
            }
        }
    };
    let path = containers_dir.join(&container).join("container.log");
    if !containers_dir.join(&container).is_dir() {
        return Err(format!("the task has no container {container:?}"));
    }
    let since = match &args.since {
        None => None,
        Some(s) => Some(
            parse_time(s)
                .or_else(|| parse_ago(s).and_then(|d| SystemTime::now().checked_sub(d)))
                .ok_or_else(|| {
                    format!("--since {s:?}: expected an RFC 3339 time or a duration like 10m")
                })?,
        ),
    };
    let records = match read_records(&path, since, args.tail) {
        Ok(r) => r,
        // A container that has not written anything yet has no log file.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for r in records {
        let w: &mut dyn Write = match r.stream {
            LogStream::Stdout => &mut out,
            LogStream::Stderr => &mut err,
        };
        if args.timestamps {
            let _ = write!(w, "{} ", r.time);
        }
        let _ = w.write_all(r.log.as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_ago() {
        assert_eq!(super::parse_ago("90s").unwrap().as_secs(), 90);
        assert_eq!(super::parse_ago("10m").unwrap().as_secs(), 600);
        assert_eq!(super::parse_ago("2h").unwrap().as_secs(), 7200);
        assert!(super::parse_ago("2x").is_none());
        assert!(super::parse_ago("h").is_none());
    }
}
