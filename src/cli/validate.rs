//! `skiff validate [--family F] [--lenient] FILE...`: ECS's rules, without running anything.

use std::path::PathBuf;

use clap::Args;

use crate::taskdef::{parse_task_definition_with, ParseOptions, TaskDefError};

#[derive(Args)]
pub struct ValidateArgs {
    /// The family, over the files' own; a bare containerDefinitions array otherwise takes its
    /// file's name.
    #[arg(long)]
    family: Option<String>,
    /// Unknown keys are warnings instead of errors.
    #[arg(long)]
    lenient: bool,
    /// Task definition files (JSON).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Exit code when a file is invalid (or unreadable).
const EXIT_INVALID: i32 = 1;

/// Checks every file and prints `FILE: valid (...)`, or each problem as `FILE: path:
/// message`. Exits 0 only when every file is valid.
pub fn run(args: ValidateArgs) -> i32 {
    let mut code = 0;
    for file in &args.files {
        let name = file.display().to_string();
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{name}: {e}");
                code = EXIT_INVALID;
                continue;
            }
        };
        let opts = ParseOptions {
            family: args.family.clone(),
            file_name: file.file_name().map(|f| f.to_string_lossy().into_owned()),
            lenient: args.lenient,
        };
        let parsed = parse_task_definition_with(&bytes, &opts);
        for w in &parsed.warnings {
            eprintln!("warning: {name}: {w}");
        }
        match parsed.result {
            Ok(td) => {
                let n = td.containers.len();
                println!(
                    "{name}: valid (family {}, {n} container{})",
                    td.family,
                    if n == 1 { "" } else { "s" }
                );
            }
            Err(TaskDefError::Invalid(errs)) => {
                code = EXIT_INVALID;
                for e in errs {
                    eprintln!("{name}: {e}");
                }
            }
            Err(e @ TaskDefError::Json(_)) => {
                code = EXIT_INVALID;
                eprintln!("{name}: {e}");
            }
        }
    }
    code
}
