//! `skiff volume ls|rm`: the shared named volumes (`dockerVolumeConfiguration` with scope
//! `shared`) that outlive their tasks, as `podman volume ls|rm` shows and removes them.

use std::path::Path;

use clap::{Args, Subcommand};
use serde_json::json;

use super::EXIT_RUNNER_ERROR;
use crate::task::volumes;

#[derive(Args)]
pub struct VolumeArgs {
    #[command(subcommand)]
    cmd: VolumeCmd,
}

#[derive(Subcommand)]
enum VolumeCmd {
    /// The shared volumes: driver and name (--json: also labels, data directory, creation).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove shared volumes and their data; refused while a task that has not stopped
    /// mounts one.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub fn run(args: VolumeArgs, state_dir: &Path) -> i32 {
    match args.cmd {
        VolumeCmd::Ls { json } => {
            let vols = volumes::list_shared(state_dir);
            if json {
                let v: Vec<_> = vols
                    .iter()
                    .map(|v| {
                        json!({
                            "Name": v.name,
                            "Driver": v.driver,
                            "Scope": "shared",
                            "Labels": v.labels,
                            "Mountpoint": v.mountpoint,
                            "CreatedAt": crate::runtime::logfile::time_string(
                                std::time::UNIX_EPOCH
                                    + std::time::Duration::from_secs(v.created_at),
                            ),
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).expect("json serializes")
                );
            } else {
                let mut out = format!("{:<11}{}\n", "DRIVER", "VOLUME NAME");
                for v in &vols {
                    out.push_str(&format!("{:<11}{}\n", v.driver, v.name));
                }
                print!("{out}");
            }
            0
        }
        VolumeCmd::Rm { names } => {
            let mut rc = 0;
            for n in names {
                match volumes::remove_shared(state_dir, &n) {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("skiff: volume rm: {e}");
                        rc = EXIT_RUNNER_ERROR;
                    }
                }
            }
            rc
        }
    }
}
