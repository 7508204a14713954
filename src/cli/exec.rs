//! `skiff exec TASK CONTAINER -- CMD...`: runs a command in a running container through the
//! task's shim, streams its output, and exits with its exit code (125 when skiff could not
//! run it, 126 when it cannot be executed, 127 when it is not found, as `docker exec`).

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::logs::find_task;
use super::EXIT_RUNNER_ERROR;
use crate::runtime::proto::{Command, Event, OutputStream, Status, TaskState};

#[derive(Args)]
pub struct ExecArgs {
    /// The task's id (or a unique prefix of it).
    task: String,
    /// The container to run the command in.
    container: String,
    /// The command and its arguments (after `--` when they start with a dash).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
    /// Run as this user (uid, uid:gid, name or name:group) instead of the container's.
    #[arg(short, long)]
    user: Option<String>,
    /// An environment variable on top of the container's: NAME=value, or NAME to pass on
    /// skiff's own.
    #[arg(short, long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Kill the command (SIGKILL) after this many milliseconds.
    #[arg(long, hide = true)]
    timeout_ms: Option<u64>,
}

pub async fn run(args: ExecArgs, state_dir: &Path) -> i32 {
    match exec(args, state_dir).await {
        Ok(code) => code,
        Err((code, msg)) => {
            eprintln!("skiff: exec: {msg}");
            code
        }
    }
}

/// `NAME` alone takes skiff's own value (left out when unset), as `docker exec -e` does.
fn env_entries(given: &[String]) -> Vec<String> {
    given
        .iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e.clone())
            } else {
                std::env::var(e).ok().map(|v| format!("{e}={v}"))
            }
        })
        .collect()
}

async fn exec(args: ExecArgs, state_dir: &Path) -> Result<i32, (i32, String)> {
    let fail = |msg: String| (EXIT_RUNNER_ERROR, msg);
    if args.task.is_empty() {
        return Err(fail("the task id is empty".into()));
    }
    let task_dir = find_task(state_dir, &args.task).map_err(fail)?;
    let sock = match crate::task::connect(&task_dir).await {
        Ok(s) => s,
        // The shim removes its socket when the task has stopped.
        Err(e) => {
            return Err(fail(match TaskState::read(&task_dir) {
                Ok(st) if st.known_status == Status::Stopped => {
                    format!("task {} has stopped", st.task_id)
                }
                _ => format!("cannot reach the task's shim: {e}"),
            }))
        }
    };
    let (rd, mut wr) = sock.into_split();
    let id = format!("exec-{}", std::process::id());
    let cmd = Command::Exec {
        container: args.container.clone(),
        id: id.clone(),
        cmd: args.command,
        env: env_entries(&args.env),
        user: args.user,
        timeout_ms: args.timeout_ms,
    };
    let mut line = serde_json::to_vec(&cmd).expect("command serializes");
    line.push(b'\n');
    wr.write_all(&line)
        .await
        .map_err(|e| fail(format!("send to the task's shim: {e}")))?;

    let container = &args.container;
    let mut lines = BufReader::new(rd).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        // Every event of the task comes too: only this exec's matter here.
        let Ok(ev) = serde_json::from_str::<Event>(&line) else {
            continue;
        };
        match ev {
            Event::ExecOutput {
                id: i,
                stream,
                data,
            } if i == id => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| fail(format!("bad output from the shim: {e}")))?;
                let _ = match stream {
                    OutputStream::Stdout => {
                        let mut o = std::io::stdout().lock();
                        o.write_all(&bytes).and_then(|()| o.flush())
                    }
                    OutputStream::Stderr => {
                        let mut o = std::io::stderr().lock();
                        o.write_all(&bytes).and_then(|()| o.flush())
                    }
                };
            }
            Event::ExecExited {
                id: i,
                exit_code,
                timed_out,
            } if i == id => {
                if timed_out {
                    eprintln!(
                        "skiff: exec: container {container}: killed after its timeout of {} ms",
                        args.timeout_ms.unwrap_or(0)
                    );
                }
                return Ok(exit_code);
            }
            Event::ExecFailed {
                id: i,
                exit_code,
                error,
            } if i == id => return Err((exit_code, format!("container {container}: {error}"))),
            _ => {}
        }
    }
    Err(fail(format!(
        "container {container}: the task's shim went away before the command ended"
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn env_names_alone_take_our_value() {
        std::env::set_var("SKIFF_EXEC_TEST_VAR", "v1");
        let got = super::env_entries(&[
            "A=b=c".into(),
            "SKIFF_EXEC_TEST_VAR".into(),
            "SKIFF_EXEC_TEST_UNSET_VAR".into(),
        ]);
        assert_eq!(got, vec!["A=b=c", "SKIFF_EXEC_TEST_VAR=v1"]);
    }
}
