//! `skiff logs TASK [CONTAINER]`: a container's output from its json-file log, which the shim
//! writes whether or not a skiff process is attached.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Args;

use super::EXIT_RUNNER_ERROR;
use crate::runtime::logfile::{parse_time, read_records_and_follow, LogRecord, LogStream};
use crate::runtime::proto::Status;

#[derive(Args)]
pub struct LogsArgs {
    /// The task's id (or a unique prefix of it) or name.
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
    /// Keep printing new lines until the task stops.
    #[arg(short = 'f', long)]
    follow: bool,
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

/// The task directory of the task named by `key` (its name, id or a unique id prefix).
pub fn find_task(state_dir: &Path, key: &str) -> Result<PathBuf, String> {
    crate::task::store::find(state_dir, key).map(|v| v.dir)
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
    // A container that has not written anything yet has no log file.
    let (records, mut follow) = match read_records_and_follow(&path, since, args.tail) {
        Ok((r, f)) => (r, Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    print_records(&records, args.timestamps);
    if !args.follow {
        return Ok(());
    }
    loop {
        // Read the state before the file: lines written before the task stopped are then
        // all in the file when it says so.
        let stopped = match crate::task::store::read(&task_dir) {
            Some(v) => v.status() == Status::Stopped,
            None => true,
        };
        if follow.is_none() {
            follow = match read_records_and_follow(&path, since, None) {
                Ok((r, f)) => {
                    print_records(&r, args.timestamps);
                    Some(f)
                }
                Err(_) => None,
            };
        } else if let Some(f) = follow.as_mut() {
            let r = f.next().map_err(|e| format!("{}: {e}", path.display()))?;
            print_records(&r, args.timestamps);
        }
        if stopped {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print_records(records: &[LogRecord], timestamps: bool) {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for r in records {
        let w: &mut dyn Write = match r.stream {
            LogStream::Stdout => &mut out,
            LogStream::Stderr => &mut err,
        };
        if timestamps {
            let _ = write!(w, "{} ", r.time);
        }
        let _ = w.write_all(r.log.as_bytes());
    }
    let _ = out.flush();
}
