//! What one container runs: the task definition's container merged with its image's config,
//! the way Docker (and so ECS) merges them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroup;
use crate::image::manifest::ImageConfig;

/// Docker's PATH for images that set none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything the shim needs to create one container. Written by the task engine, read by the
/// single-threaded shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    pub hostname: String,
    /// Overlay lower directories, top layer first.
    pub lower_dirs: Vec<PathBuf>,
    pub upper_dir: PathBuf,
    pub work_dir: PathBuf,
    /// Where the overlay is mounted (inside the container's mount namespace only).
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub cgroup: Cgroup,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error(
        "no command specified: neither the container nor its image sets entryPoint or command"
    )]
    NoCommand,
}

/// The process of a container: argv, environment and working directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
}

/// Merges a container's `entryPoint`, `command`, `environment` and `workingDirectory` with the
/// image config as Docker does:
/// - a non-empty `entryPoint` replaces the image's, and then the image's Cmd is not used;
/// - an empty `entryPoint` ([]) clears the image's entrypoint;
/// - `command`, when non-empty, replaces the image's Cmd;
/// - environment: the image's, then the container's (same name: the container wins), PATH
///   defaulted, HOSTNAME set.
pub fn merge_process(
    entry_point: Option<&[String]>,
    command: Option<&[String]>,
    environment: &[(String, String)],
    working_directory: Option<&str>,
    hostname: &str,
    image: &ImageConfig,
) -> Result<Process, SpecError> {
    let user_cmd = command.filter(|c| !c.is_empty());
    let (ep, cmd): (Vec<String>, Vec<String>) = match entry_point {
        Some(ep) if !ep.is_empty() => (
            ep.to_vec(),
            user_cmd.map(<[String]>::to_vec).unwrap_or_default(),
        ),
        Some(_) => (
            Vec::new(),
            user_cmd
                .map(<[String]>::to_vec)
                .or_else(|| image.cmd.clone())
                .unwrap_or_default(),
        ),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            user_cmd
                .map(<[String]>::to_vec)
                .or_else(|| image.cmd.clone())
                .unwrap_or_default(),
        ),
    };
    let args: Vec<String> = ep.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }

    let mut env: Vec<(String, String)> = Vec::new();
    let set = |k: &str, v: &str, env: &mut Vec<(String, String)>| match env
        .iter_mut()
        .find(|(n, _)| n == k)
    {
        Some(slot) => slot.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for kv in image.env.iter().flatten() {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(k, v, &mut env);
    }
    for (k, v) in environment {
        set(k, v, &mut env);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        env.push(("HOSTNAME".into(), hostname.to_string()));
    }
    let cwd = working_directory
        .filter(|w| !w.is_empty())
        .map(String::from)
        .or_else(|| image.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    Ok(Process {
        args,
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd,
    })
}

/// Parses an image's StopSignal ("SIGTERM", "TERM", "15"); None when absent or unknown.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.trim().to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn img(ep: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfig {
        ImageConfig {
            entrypoint: ep.map(s),
            cmd: cmd.map(s),
            env: Some(s(&["PATH=/bin", "A=image", "B=image"])),
            working_dir: Some("/srv".into()),
            ..Default::default()
        }
    }

    #[test]
    fn entrypoint_and_command_merge() {
        let i = img(Some(&["/entry"]), Some(&["default"]));
        let m = |ep: Option<&[&str]>, cmd: Option<&[&str]>| {
            let ep = ep.map(s);
            let cmd = cmd.map(s);
            merge_process(ep.as_deref(), cmd.as_deref(), &[], None, "h", &i).map(|p| p.args)
        };
        assert_eq!(m(None, None).unwrap(), s(&["/entry", "default"]));
        assert_eq!(m(None, Some(&["x"])).unwrap(), s(&["/entry", "x"]));
        assert_eq!(m(Some(&["/other"]), None).unwrap(), s(&["/other"]));
        assert_eq!(
            m(Some(&["/other"]), Some(&["y"])).unwrap(),
            s(&["/other", "y"])
        );
        assert_eq!(m(Some(&[]), None).unwrap(), s(&["default"]));
        assert_eq!(m(Some(&[]), Some(&["z"])).unwrap(), s(&["z"]));
        assert_eq!(m(None, Some(&[])).unwrap(), s(&["/entry", "default"]));
        let empty = ImageConfig::default();
        assert_eq!(
            merge_process(None, None, &[], None, "h", &empty),
            Err(SpecError::NoCommand)
        );
    }

    #[test]
    fn env_and_cwd() {
        let i = img(None, Some(&["sh"]));
        let env = vec![
            ("B".to_string(), "task".to_string()),
            ("C".to_string(), "task".to_string()),
        ];
        let p = merge_process(None, None, &env, None, "web", &i).unwrap();
        assert_eq!(
            p.env,
            s(&["PATH=/bin", "A=image", "B=task", "C=task", "HOSTNAME=web"])
        );
        assert_eq!(p.cwd, "/srv");
        let p = merge_process(
            None,
            None,
            &[],
            Some("/data"),
            "web",
            &ImageConfig {
                cmd: Some(s(&["x"])),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.cwd, "/data");
        assert_eq!(p.env[0], format!("PATH={DEFAULT_PATH}"));
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("quit"), Some(3));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGNOPE"), None);
    }
}
