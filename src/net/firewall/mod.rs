//! NAT and port forwarding in tables and chains that only skiff owns, so that removal is
//! exact and the host's own rules are never touched.
//!
//! Backend, chosen once: nftables through the `nft` binary (table `ip skiff`, see `nft.rs`),
//! or, where `nft` is absent, iptables with chains `SKIFF`, `SKIFF-POSTROUTING` and
//! `SKIFF-FORWARD` reached by one jump each from the built-in chains (`iptables.rs`).
//!
//! Each port rule carries the comment `skiff:<task>/<container>`; removing a task's rules,
//! or those of every task that is gone (reconcile), lists skiff's rules and deletes exactly
//! those with the task's comment (by handle in nftables, by their full spec in iptables).
//! Skiff processes serialize their firewall changes with a flock (`STATE/net/firewall.lock`).

mod iptables;
mod nft;

use std::fmt;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::ipam::Subnet;
use super::ports::Proto;
use super::state::{lock_exclusive, Flock};
use super::{invalid, io_err, owner_task, NetError};

/// Marks skiff's port rules: `skiff:<owner>`.
const TAG: &str = "skiff:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nft,
    Iptables,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Nft => "nft",
            Backend::Iptables => "iptables",
        })
    }
}

/// An executable by name on PATH or in the sbin directories (PATH often lacks them).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    found
}

impl Backend {
    /// `choice` ("nft" or "iptables") when given; else nft when it is installed and the
    /// kernel answers it, else iptables.
    pub fn detect(choice: Option<&str>) -> Result<Backend, NetError> {
        match choice {
            Some("nft") => Ok(Backend::Nft),
            Some("iptables") => Ok(Backend::Iptables),
            Some(other) => Err(invalid(
                "firewall",
                format!("backend {other:?}: want nft or iptables"),
            )),
            None if find_program("nft").is_some()
                && run_status("nft", &["list", "tables"], None).is_ok_and(|(ok, _, _)| ok) =>
            {
                Ok(Backend::Nft)
            }
            None if find_program("iptables").is_some() => Ok(Backend::Iptables),
            None => Err(invalid("firewall", "neither nft nor iptables is installed")),
        }
    }
}

/// The bridge the base rules are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub bridge: String,
    pub subnet: Subnet,
}

/// One forwarded port: host `proto/host_port` to `addr:container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub proto: Proto,
    pub host_port: u16,
    pub addr: Ipv4Addr,
    pub container_port: u16,
}

/// A port rule skiff made, as found in the firewall.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnedRule {
    owner: String,
    /// nft: the rule's handle; iptables: its spec as iptables-save prints it, after `-A`.
    id: String,
}

/// The owner in a rule comment `skiff:<owner>`.
fn owner_of_comment(comment: &str) -> Option<&str> {
    comment.strip_prefix(TAG).filter(|o| !o.is_empty())
}

/// Runs a firewall program; its stderr is the error message when it fails.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, NetError> {
    let (ok, out, err) = run_status(program, args, stdin)?;
    if !ok {
        return Err(invalid(
            format!("firewall: {program} {}", args.join(" ")),
            err.trim(),
        ));
    }
    Ok(out)
}

/// Runs a firewall program: (success, stdout, stderr).
fn run_status(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<(bool, String, String), NetError> {
    let exe = find_program(program).unwrap_or_else(|| PathBuf::from(program));
    let object = format!("firewall: {program}");
    let mut child = Command::new(&exe)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(&object, "run"))?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(text.as_bytes())
            .map_err(io_err(&object, "write script"))?;
    }
    let out = child.wait_with_output().map_err(io_err(&object, "wait"))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// skiff's firewall rules, in the network namespace of the calling thread.
#[derive(Debug, Clone)]
pub struct Firewall {
    backend: Backend,
    lock: PathBuf,
}

impl Firewall {
    pub fn new(backend: Backend, state_dir: &Path) -> Firewall {
        Firewall {
            backend,
            lock: state_dir.join("net").join("firewall.lock"),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn locked(&self) -> Result<Flock, NetError> {
        lock_exclusive(&self.lock)
    }

    /// Creates skiff's table or chains and (re)writes the base rules for the bridge:
    /// masquerade of the subnet leaving through other interfaces, of 127.0.0.0/8 leaving
    /// through the bridge (hairpin from the host's loopback) and of the subnet DNATed back
    /// into the bridge (a container reaching a mapped port); DNAT of mapped ports for
    /// traffic to local addresses, arriving and locally generated; forwarding for the
    /// bridge; and a drop of new connections from the bridge to 127.0.0.0/8, which the
    /// bridge's `route_localnet` would otherwise let containers reach. Port rules already
    /// there stay. Idempotent.
    pub fn ensure(&self, spec: &Spec) -> Result<(), NetError> {
        let br = &spec.bridge;
        if br.is_empty()
            || br.len() > 15
            || !br
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(invalid(
                format!("bridge {br:?}"),
                "not a usable interface name",
            ));
        }
        let _l = self.locked()?;
        match self.backend {
            Backend::Nft => nft::ensure(spec),
            Backend::Iptables => iptables::ensure(spec),
        }
    }

    /// Adds the port rules of one owner (`task/container`) in one transaction.
    pub fn add(&self, owner: &str, maps: &[Mapping]) -> Result<(), NetError> {
        if maps.is_empty() {
            return Ok(());
        }
        if owner
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || "/_-.:".contains(c)))
        {
            return Err(invalid(
                format!("firewall owner {owner:?}"),
                "unexpected character",
            ));
        }
        let _l = self.locked()?;
        match self.backend {
            Backend::Nft => nft::add(owner, maps),
            Backend::Iptables => iptables::add(owner, maps),
        }
    }

    fn rules(&self) -> Result<Vec<OwnedRule>, NetError> {
        match self.backend {
            Backend::Nft => nft::rules(),
            Backend::Iptables => iptables::rules(),
        }
    }

    /// The owners of the port rules there are now, one entry per rule.
    pub fn owners(&self) -> Result<Vec<String>, NetError> {
        Ok(self.rules()?.into_iter().map(|r| r.owner).collect())
    }

    /// Removes the port rules of one task; returns their owners, a rule each.
    pub fn remove_task(&self, task: &str) -> Result<Vec<String>, NetError> {
        self.remove_where(|o| owner_task(o) == task)
    }

    /// Removes the port rules of one owner (`task/container`); returns how many.
    pub fn remove_owner(&self, owner: &str) -> Result<usize, NetError> {
        Ok(self.remove_where(|o| o == owner)?.len())
    }

    /// Removes the port rules of the tasks `keep` rejects; returns their owners, a rule each.
    pub fn reconcile(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<String>, NetError> {
        self.remove_where(|o| !keep(owner_task(o)))
    }

    fn remove_where(&self, gone: impl Fn(&str) -> bool) -> Result<Vec<String>, NetError> {
        let _l = self.locked()?;
        let gone: Vec<OwnedRule> = self
            .rules()?
            .into_iter()
            .filter(|r| gone(&r.owner))
            .collect();
        if !gone.is_empty() {
            match self.backend {
                Backend::Nft => nft::delete(&gone)?,
                Backend::Iptables => iptables::delete(&gone)?,
            }
        }
        Ok(gone.into_iter().map(|r| r.owner).collect())
    }

    /// Removes skiff's table or chains entirely, with every rule in them.
    pub fn teardown_all(&self) -> Result<(), NetError> {
        let _l = self.locked()?;
        match self.backend {
            Backend::Nft => nft::teardown(),
            Backend::Iptables => iptables::teardown(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_name_the_owner() {
        assert_eq!(owner_of_comment("skiff:t1/web"), Some("t1/web"));
        assert_eq!(owner_of_comment("skiff:"), None);
        assert_eq!(owner_of_comment("docker"), None);
    }

    #[test]
    fn backend_choice() {
        assert_eq!(Backend::detect(Some("nft")).unwrap(), Backend::Nft);
        assert_eq!(
            Backend::detect(Some("iptables")).unwrap(),
            Backend::Iptables
        );
        assert!(Backend::detect(Some("pf")).is_err());
    }
}
