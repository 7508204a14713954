//! Running a further process inside a running container (`skiff exec`, health checks): a
//! child of the single-threaded shim that joins the container's namespaces and cgroup and then
//! goes through the same last steps as the container's own process (rlimits, user, working
//! directory, capabilities, no_new_privs, seccomp, close-on-exec, exec).
//!
//! The PID namespace is entered by the shim around the fork (`setns` on a PID namespace only
//! places the children made afterwards), so the child is born inside it and stays a direct
//! child of the shim, which reaps it and can kill it. The child then joins the cgroup (through
//! the host's cgroup paths, so before the mount namespace), the cgroup namespace, IPC, UTS,
//! network and, last, the mount namespace, which also puts it at the container's root.

use std::fs::File;
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::unistd::{pipe2, Pid};

use super::process::{
    self, await_exec, child_main, fork_child, ExecPlan, Never, Spawned, StartFailure, IN_CHILD,
};
use super::spec::ContainerSpec;

/// What to run in the container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecProcess {
    /// The command and its arguments (the first looked up in the container's PATH).
    pub args: Vec<String>,
    /// `NAME=value` on top of the container's environment.
    pub env: Vec<String>,
    /// `uid`, `uid:gid`, `name` or `name:group`; the container's user when None.
    pub user: Option<String>,
}

/// The namespaces joined in the child, in order (the PID namespace is entered around the
/// fork; the mount namespace comes last because the cgroup is joined through host paths).
const JOINED: &[(&str, CloneFlags)] = &[
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Starts `process` in the container of `spec` whose process `target` is (seen from the
/// shim). Must only be called from a single-threaded process (the shim). On success the
/// process has exec'd; its stdout and stderr are pipes (`Spawned::stderr` is always Some).
pub fn exec_in(
    spec: &ContainerSpec,
    target: Pid,
    process: &ExecProcess,
) -> Result<Spawned, StartFailure> {
    let sys = |what: &str, e: nix::errno::Errno| StartFailure::new(125, format!("{what}: {e}"));
    if process.args.is_empty() {
        return Err(StartFailure::new(125, "no command given"));
    }
    // Every namespace file is opened before the fork: a target that exits meanwhile fails
    // here, with its name, rather than half-way in the child.
    let open = |ns: &str| {
        let p = format!("/proc/{target}/ns/{ns}");
        File::open(&p).map(OwnedFd::from).map_err(|e| (p, e))
    };
    let not_running = |(p, e): (String, std::io::Error)| {
        StartFailure::new(125, format!("the container is not running ({p}: {e})"))
    };
    let pid_ns = open("pid").map_err(not_running)?;
    let mut joins = Vec::new();
    for (ns, flag) in JOINED {
        match open(ns) {
            Ok(fd) => joins.push((*ns, *flag, fd)),
            // Kernels without cgroup namespaces (before 4.6).
            Err((_, e)) if *ns == "cgroup" && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(pe) => return Err(not_running(pe)),
        }
    }
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| sys("pipe", e))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| sys("pipe", e))?;
    let (sync_r, sync_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| sys("pipe", e))?;

    let (pid, born_in_cgroup) =
        fork_child(libc::SIGCHLD, &spec.cgroup, Some(&pid_ns), "container's")?;
    if pid == IN_CHILD {
        drop(out_r);
        drop(err_r);
        drop(sync_r);
        child_main(sync_w, || {
            child(spec, process, out_w, err_w, joins, born_in_cgroup)
        });
    }
    drop(out_w);
    drop(err_w);
    drop(sync_w);
    await_exec(pid, sync_r)?;
    Ok(Spawned {
        pid,
        stdout: out_r,
        stderr: Some(err_r),
        tty: false,
    })
}

fn child(
    spec: &ContainerSpec,
    exec: &ExecProcess,
    out_w: OwnedFd,
    err_w: OwnedFd,
    joins: Vec<(&str, CloneFlags, OwnedFd)>,
    born_in_cgroup: bool,
) -> Result<Never, StartFailure> {
    let fail = |msg: String| StartFailure::new(125, msg);
    process::reset_process_state()?;
    process::set_output(&out_w, &err_w)?;
    if !born_in_cgroup {
        spec.cgroup
            .join_single_threaded()
            .map_err(|e| fail(e.to_string()))?;
    }
    for (ns, flag, fd) in joins {
        nix::sched::setns(&fd, flag)
            .map_err(|e| fail(format!("join the container's {ns} namespace: {e}")))?;
    }
    // setns into the mount namespace left us at its root: the container's.
    process::stdin_from_dev_null()?;
    process::apply_rlimits(spec)?;
    let user = exec.user.as_deref().or(spec.user.as_deref());
    let ids = process::resolve_user(user)?;
    let env = process::process_env(spec.env(), &exec.env, &ids);
    // The container made its working directory when it started; nothing is created here.
    process::enter_working_dir(spec, false)?;
    let plan = ExecPlan::new(spec, &exec.args, env, ids)?;
    plan.drop_privileges()?;
    // A change of credentials clears the parent-death signal: set it again, so that an exec'd
    // process of another user does not outlive the shim either.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if nix::unistd::getppid().as_raw() == 1 {
        return Err(fail("the shim went away".into()));
    }
    plan.exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_that_is_gone_is_not_running() {
        // No process has pid 0 in /proc: the namespaces cannot be opened.
        let spec: ContainerSpec = serde_json::from_value(serde_json::json!({
            "name": "gone", "lower_dirs": [], "upper_dir": "/x", "work_dir": "/x",
            "rootfs": "/x", "cgroup": {"mode": "V1", "dirs": [], "memory_dir": null},
            "oci": {"ociVersion": "1.0.2", "process": {"cwd": "/", "args": ["true"], "user": {"uid": 0, "gid": 0}}},
            "user": null, "init": false, "share_pid_with": null, "share_ipc_with": null,
            "essential": true, "stop_signal": 15, "stop_timeout": 1,
            "log_path": "/x", "etc_dir": "/x"
        }))
        .unwrap();
        let p = ExecProcess {
            args: vec!["true".into()],
            ..Default::default()
        };
        let Err(err) = exec_in(&spec, Pid::from_raw(0), &p) else {
            panic!("started")
        };
        assert_eq!(err.exit_code, 125);
        assert!(err.msg.contains("not running"), "{}", err.msg);
        let Err(err) = exec_in(&spec, Pid::this(), &ExecProcess::default()) else {
            panic!("started")
        };
        assert!(err.msg.contains("no command"), "{}", err.msg);
    }
}
