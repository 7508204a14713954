//! `skiff info`: what this host offers and how skiff sees its cgroups.

use clap::Args;
use serde_json::json;

use super::EXIT_RUNNER_ERROR;
use crate::agent::capacity;
use crate::cgroup::{Hierarchy, Placement};

#[derive(Args)]
pub struct InfoArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Memory (MiB) kept for the host and skiff, not offered to tasks.
    #[arg(long, env = "ECS_RESERVED_MEMORY", default_value_t = 0)]
    reserved_memory: u64,
}

pub fn run(args: InfoArgs, placement: &Placement) -> i32 {
    let cap = match capacity::capacity(args.reserved_memory) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skiff: info: {e}");
            return EXIT_RUNNER_ERROR;
        }
    };
    let cg = Hierarchy::detect(placement);
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let (mode, controllers, parent, cg_err) = match &cg {
        Ok(h) => (
            Some(match h.mode {
                crate::cgroup::Mode::V1 => "v1",
                crate::cgroup::Mode::V2 => "v2",
            }),
            h.controllers.clone(),
            h.parent.dirs.clone(),
            None,
        ),
        Err(e) => (None, vec![], vec![], Some(e.to_string())),
    };
    let hybrid = std::path::Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
    if args.json {
        let v = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "os": "linux",
            "architecture": std::env::consts::ARCH,
            "kernel": kernel,
            "capacity": cap,
            "cgroup": {
                "mode": mode,
                "hybrid": hybrid && mode == Some("v1"),
                "controllers": controllers,
                "parent": parent,
                "error": cg_err,
            },
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        println!("skiff {}", env!("CARGO_PKG_VERSION"));
        println!(
            "host:        linux/{} (kernel {kernel})",
            std::env::consts::ARCH
        );
        println!("cpu:         {} units ({} cores)", cap.cpu_units, cap.cores);
        println!(
            "memory:      {} MiB ({} MiB total, {} MiB reserved)",
            cap.memory_mib, cap.memory_total_mib, cap.memory_reserved_mib
        );
        match (mode, cg_err) {
            (Some(m), _) => {
                let m = if hybrid && m == "v1" {
                    "v1 (hybrid host)"
                } else {
                    m
                };
                println!("cgroups:     {m}; controllers: {}", controllers.join(", "));
                for p in parent {
                    println!("             {}", p.display());
                }
            }
            (None, Some(e)) => println!("cgroups:     unusable: {e}"),
            (None, None) => {}
        }
    }
    0
}
