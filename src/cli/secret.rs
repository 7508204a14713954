//! `skiff secret set|ls|rm`: the local secret store that containers' `secrets[].valueFrom`
//! resolve against in standalone mode. Values are read from stdin or a file, never from the
//! command line (where `ps` would show them), and never printed.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::EXIT_RUNNER_ERROR;
use crate::task::secrets;

#[derive(Args)]
pub struct SecretArgs {
    #[command(subcommand)]
    cmd: SecretCmd,
}

#[derive(Subcommand)]
enum SecretCmd {
    /// Store a secret under NAME (its valueFrom, or the name an ARN ends in); the value comes
    /// from stdin, or from --from-file. A trailing newline is dropped.
    Set {
        name: String,
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// The stored secrets' names (never their values).
    Ls,
    /// Remove secrets.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub fn run(args: SecretArgs, state_dir: &Path) -> i32 {
    match args.cmd {
        SecretCmd::Set { name, from_file } => {
            let mut value = String::new();
            let read = match &from_file {
                Some(f) => std::fs::read_to_string(f)
                    .map(|v| value = v)
                    .map_err(|e| format!("{}: {e}", f.display())),
                None => std::io::stdin()
                    .read_to_string(&mut value)
                    .map(|_| ())
                    .map_err(|e| format!("stdin: {e}")),
            };
            if let Err(e) = read {
                eprintln!("skiff: secret set {name}: {e}");
                return EXIT_RUNNER_ERROR;
            }
            if value.ends_with('\n') {
                value.pop();
                if value.ends_with('\r') {
                    value.pop();
                }
            }
            match secrets::set(state_dir, &name, &value) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("skiff: {e}");
                    EXIT_RUNNER_ERROR
                }
            }
        }
        SecretCmd::Ls => {
            for (name, updated) in secrets::list(state_dir) {
                let t = crate::runtime::logfile::time_string(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(updated),
                );
                println!("{name}\t{}", &t[..19]);
            }
            0
        }
        SecretCmd::Rm { names } => {
            let mut rc = 0;
            for n in names {
                if let Err(e) = secrets::remove(state_dir, &n) {
                    eprintln!("skiff: {e}");
                    rc = EXIT_RUNNER_ERROR;
                }
            }
            rc
        }
    }
}
