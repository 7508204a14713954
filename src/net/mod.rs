//! Networking: namespaces held by files, links and addresses over netlink, address and host
//! port allocation in a locked state file, and NAT/port-forwarding rules in skiff's own
//! firewall table. `bridge` composes them into what a bridge-mode container needs.
//!
//! Everything here is blocking: netlink requests run on a current-thread tokio runtime of
//! their own, so call these functions from a plain or `spawn_blocking` thread, never from an
//! async task.

pub mod bridge;
pub mod firewall;
pub mod ipam;
pub mod link;
pub mod netns;
pub mod ports;
pub mod settings;
mod state;

use std::fmt::Display;
use std::io;

pub use ports::Proto;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A system call, netlink request or file operation on a named object failed:
    /// `net: veth sk1a2b3c4d5e: create: File exists (os error 17)`.
    #[error("net: {object}: {op}: {source}")]
    Io {
        object: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// A request that cannot be met, or an object that is not what it should be.
    #[error("net: {object}: {msg}")]
    Invalid { object: String, msg: String },
    /// A static host port that another task already maps.
    #[error("net: port {proto}/{port}: already mapped by task {task}")]
    PortTaken {
        proto: Proto,
        port: u16,
        task: String,
    },
}

pub(crate) fn io_err(object: impl Display, op: &'static str) -> impl FnOnce(io::Error) -> NetError {
    let object = object.to_string();
    move |source| NetError::Io { object, op, source }
}

pub(crate) fn invalid(object: impl Display, msg: impl Display) -> NetError {
    NetError::Invalid {
        object: object.to_string(),
        msg: msg.to_string(),
    }
}

/// The task id in an owner string `task/container` (or a bare task id).
pub fn owner_task(owner: &str) -> &str {
    owner.split_once('/').map_or(owner, |(t, _)| t)
}

/// This boot's id: markers that hold until a reboot carry it.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The index of interface `name` in the calling thread's network namespace (0: none).
pub fn if_index(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap_or_default();
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Brings `lo` up in the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    let result = (|| {
        if unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        if unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })();
    unsafe { libc::close(sock) };
    result
}

/// Reads a sysctl of the calling thread's network namespace, named by its path below
/// /proc/sys (`net/ipv4/ip_forward`: an interface name may hold dots, so no dotted names).
pub(crate) fn sysctl_read(rel: &str) -> Result<String, NetError> {
    std::fs::read_to_string(format!("/proc/sys/{rel}"))
        .map(|s| s.trim().to_string())
        .map_err(io_err(format!("sysctl {}", rel.replace('/', ".")), "read"))
}

pub(crate) fn sysctl_write(rel: &str, value: &str) -> Result<(), NetError> {
    std::fs::write(format!("/proc/sys/{rel}"), value)
        .map_err(io_err(format!("sysctl {}", rel.replace('/', ".")), "write"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_task_splits_at_the_first_slash() {
        assert_eq!(owner_task("abc/web"), "abc");
        assert_eq!(owner_task("abc"), "abc");
    }

    #[test]
    fn errors_name_the_object() {
        let e = io_err("veth sk0123456789", "create")(io::Error::from_raw_os_error(libc::EEXIST));
        assert!(
            e.to_string()
                .starts_with("net: veth sk0123456789: create: File exists"),
            "{e}"
        );
        let e = NetError::PortTaken {
            proto: Proto::Tcp,
            port: 8080,
            task: "t1".into(),
        };
        assert_eq!(
            e.to_string(),
            "net: port tcp/8080: already mapped by task t1"
        );
    }
}
