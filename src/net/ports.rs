//! Host ports for port mappings, leased per owner (`task/container`) in the locked allocation
//! state (`state.rs`), TCP and UDP apart. A static port held by another task is refused with
//! that task's id; a dynamic one comes from the dynamic range (ECS_DYNAMIC_HOST_PORT_RANGE
//! style `a-b`, else the kernel's `ip_local_port_range`), continuing after the last one given.
//! Never a reserved port, one already leased, or one in use on the host: one that keeps
//! a test bind (a dual-stack socket on every address) from binding.
//! A `containerPortRange` gets a contiguous host range of the same length.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::state::Store;
use super::{invalid, owner_task, NetError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Proto, String> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(format!("protocol {s:?}: want tcp or udp")),
        }
    }
}

/// A host port held by an owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortLease {
    pub proto: Proto,
    pub port: u16,
    pub owner: String,
}

/// One mapping asked for: container ports `container_port .. container_port + count`
/// (`count` > 1 for a containerPortRange), to host ports from `host_port` on, or dynamic ones
/// when `host_port` is None or 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRequest {
    pub proto: Proto,
    pub container_port: u16,
    pub count: u16,
    pub host_port: Option<u16>,
}

/// One container port and the host port it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub proto: Proto,
    pub container_port: u16,
    pub host_port: u16,
}

/// The ECS agent's reserved ports: SSH, the Docker daemon, the agent and its introspection.
pub const DEFAULT_RESERVED: [u16; 5] = [22, 2375, 2376, 51678, 51679];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Inclusive.
    pub dynamic: (u16, u16),
    pub reserved: BTreeSet<u16>,
}

/// `a-b` (inclusive, a ≤ b, a > 0).
pub fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("port range {s:?}: want a-b with 1 <= a <= b <= 65535");
    let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

impl PortConfig {
    /// The dynamic range from `range` (`a-b`) or else the kernel's ephemeral range; the
    /// default reserved ports plus `extra_reserved`.
    pub fn new(range: Option<&str>, extra_reserved: &[u16]) -> Result<PortConfig, NetError> {
        let dynamic = match range {
            Some(r) => parse_range(r).map_err(|e| invalid("ports", e))?,
            None => {
                let text = super::sysctl_read("net/ipv4/ip_local_port_range")?;
                parse_range(&text.split_whitespace().collect::<Vec<_>>().join("-"))
                    .map_err(|e| invalid("sysctl net.ipv4.ip_local_port_range", e))?
            }
        };
        let reserved = DEFAULT_RESERVED
            .iter()
            .chain(extra_reserved)
            .copied()
            .collect();
        Ok(PortConfig { dynamic, reserved })
    }
}

/// Whether the port can be bound on every address now, in the calling thread's network
/// namespace: a dual-stack IPv6 socket on `[::]` collides with any IPv4 or IPv6 socket bound
/// to the port (listening, or an outgoing connection's local port), and one on `0.0.0.0`
/// with any IPv4 one where IPv6 is off. (Reading `/proc/net/tcp` instead walks the
/// kernel's whole connection table: 6-8 ms on a large host, whatever the namespace.)
fn bind_free(proto: Proto, port: u16) -> bool {
    let ty = match proto {
        Proto::Tcp => libc::SOCK_STREAM,
        Proto::Udp => libc::SOCK_DGRAM,
    };
    let fd = unsafe { libc::socket(libc::AF_INET6, ty | libc::SOCK_CLOEXEC, 0) };
    if fd >= 0 {
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let off: libc::c_int = 0;
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                &off as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        addr.sin6_port = port.to_be();
        let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        return unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                len,
            ) == 0
        };
    }
    let fd = unsafe { libc::socket(libc::AF_INET, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const _ as *const libc::sockaddr,
            len,
        ) == 0
    }
}

/// The first start of `count` consecutive ports in `range` that are all `available`,
/// searching from just after `last` and wrapping around once.
fn choose(
    range: (u16, u16),
    count: u16,
    last: Option<u16>,
    mut available: impl FnMut(u16) -> bool,
) -> Option<u16> {
    let (lo, hi) = (u32::from(range.0), u32::from(range.1));
    let count = u32::from(count);
    if count == 0 || count > hi - lo + 1 {
        return None;
    }
    let max_start = hi + 1 - count;
    let from = match last.map(u32::from) {
        Some(l) if l >= lo && l < max_start => l + 1,
        _ => lo,
    };
    (from..=max_start)
        .chain(lo..from)
        .find(|&s| (s..s + count).all(|p| available(p as u16)))
        .map(|s| s as u16)
}

/// Host port leases.
#[derive(Debug, Clone)]
pub struct Ports {
    store: Store,
    config: PortConfig,
}

impl Ports {
    pub fn new(store: Store, config: PortConfig) -> Ports {
        Ports { store, config }
    }

    /// Host ports for all of `owner`'s mappings at once, or none of them. A static port the
    /// owner holds already is its again (a retried start).
    pub fn allocate(
        &self,
        owner: &str,
        reqs: &[PortRequest],
    ) -> Result<Vec<PortBinding>, NetError> {
        let cfg = &self.config;
        self.store.update(|a| {
            let mut out: Vec<PortBinding> = Vec::new();
            for r in reqs {
                let what = |p: u32| format!("port {}/{p}", r.proto);
                let last_container = u32::from(r.container_port) + u32::from(r.count) - 1;
                if r.count == 0 || r.container_port == 0 || last_container > 65535 {
                    return Err(invalid(
                        what(r.container_port.into()),
                        "bad container port or range",
                    ));
                }
                let host_start = match r.host_port.filter(|p| *p != 0) {
                    Some(h) => {
                        if u32::from(h) + u32::from(r.count) - 1 > 65535 {
                            return Err(invalid(what(h.into()), "host port range past 65535"));
                        }
                        for p in h..=h + (r.count - 1) {
                            let taken = |l: &PortLease| l.proto == r.proto && l.port == p;
                            if out.iter().any(|b| b.proto == r.proto && b.host_port == p) {
                                return Err(invalid(what(p.into()), "mapped twice"));
                            }
                            if let Some(l) = a.ports.iter().find(|l| taken(l)) {
                                if l.owner == owner {
                                    continue;
                                }
                                return Err(NetError::PortTaken {
                                    proto: r.proto,
                                    port: p,
                                    task: owner_task(&l.owner).to_string(),
                                });
                            }
                            if cfg.reserved.contains(&p) {
                                return Err(invalid(what(p.into()), "reserved"));
                            }
                            if !bind_free(r.proto, p) {
                                return Err(invalid(what(p.into()), "in use on the host"));
                            }
                        }
                        h
                    }
                    None => {
                        let last = a.last_port.get(&r.proto).copied();
                        let start = choose(cfg.dynamic, r.count, last, |p| {
                            !cfg.reserved.contains(&p)
                                && !a.ports.iter().any(|l| l.proto == r.proto && l.port == p)
                                && !out.iter().any(|b| b.proto == r.proto && b.host_port == p)
                                && bind_free(r.proto, p)
                        })
                        .ok_or_else(|| {
                            invalid(
                                format!("ports {}", r.proto),
                                format!(
                                    "no {} free consecutive port(s) left in {}-{}",
                                    r.count, cfg.dynamic.0, cfg.dynamic.1
                                ),
                            )
                        })?;
                        a.last_port.insert(r.proto, start + (r.count - 1));
                        start
                    }
                };
                for i in 0..r.count {
                    out.push(PortBinding {
                        proto: r.proto,
                        container_port: r.container_port + i,
                        host_port: host_start + i,
                    });
                }
            }
            for b in &out {
                if !a
                    .ports
                    .iter()
                    .any(|l| l.proto == b.proto && l.port == b.host_port)
                {
                    a.ports.push(PortLease {
                        proto: b.proto,
                        port: b.host_port,
                        owner: owner.to_string(),
                    });
                }
            }
            Ok(out)
        })
    }

    /// Every lease now.
    pub fn leases(&self) -> Result<Vec<PortLease>, NetError> {
        Ok(self.store.read()?.ports)
    }

    /// Gives back `owner`'s ports; returns them.
    pub fn release(&self, owner: &str) -> Result<Vec<PortLease>, NetError> {
        self.remove_where(|l| l.owner == owner)
    }

    /// Gives back every port of a task; returns them.
    pub fn release_task(&self, task: &str) -> Result<Vec<PortLease>, NetError> {
        self.remove_where(|l| owner_task(&l.owner) == task)
    }

    /// Drops the leases of tasks that `keep` rejects; returns them.
    pub fn reconcile(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<PortLease>, NetError> {
        self.remove_where(|l| !keep(owner_task(&l.owner)))
    }

    fn remove_where(&self, gone: impl Fn(&PortLease) -> bool) -> Result<Vec<PortLease>, NetError> {
        self.store.update(|a| {
            let (removed, kept): (Vec<_>, Vec<_>) = a.ports.drain(..).partition(|l| gone(l));
            a.ports = kept;
            Ok(removed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("32768-60999"), Ok((32768, 60999)));
        assert_eq!(parse_range(" 100 - 100 "), Ok((100, 100)));
        assert!(parse_range("0-10").is_err());
        assert!(parse_range("10-9").is_err());
        assert!(parse_range("10").is_err());
        assert!(parse_range("1-70000").is_err());
    }

    #[test]
    fn choose_continues_after_last_skips_unavailable_and_wraps() {
        let free = |p: u16| p != 102;
        assert_eq!(choose((100, 105), 1, None, free), Some(100));
        assert_eq!(choose((100, 105), 1, Some(101), free), Some(103));
        assert_eq!(choose((100, 105), 1, Some(105), free), Some(100));
        assert_eq!(choose((100, 105), 1, Some(7), free), Some(100));
        // A contiguous range never straddles an unavailable port, nor the range's end.
        assert_eq!(choose((100, 105), 2, Some(100), free), Some(103));
        assert_eq!(choose((100, 105), 3, Some(103), free), Some(103));
        assert_eq!(choose((100, 105), 4, None, free), None);
        assert_eq!(choose((100, 105), 6, None, |_| true), Some(100));
        assert_eq!(choose((100, 105), 7, None, |_| true), None);
        assert_eq!(choose((65535, 65535), 1, None, |_| true), Some(65535));
    }

    fn ports(dir: &std::path::Path, range: &str, reserved: &[u16]) -> Ports {
        Ports::new(
            Store::new(dir),
            PortConfig::new(Some(range), reserved).unwrap(),
        )
    }

    #[test]
    fn static_dynamic_and_release() {
        let dir = std::env::temp_dir().join(format!("skiff-ports-{}", std::process::id()));
        // A range of high ports nothing on a test machine listens on, with one reserved.
        let p = ports(&dir, "61000-61009", &[61001]);
        let tcp = |c: u16, h: Option<u16>| PortRequest {
            proto: Proto::Tcp,
            container_port: c,
            count: 1,
            host_port: h,
        };
        let got = p
            .allocate("t1/web", &[tcp(80, None), tcp(81, Some(0))])
            .unwrap();
        assert_eq!(
            got.iter().map(|b| b.host_port).collect::<Vec<_>>(),
            vec![61000, 61002]
        );
        // The same port number over UDP is independent of TCP's.
        let udp = PortRequest {
            proto: Proto::Udp,
            container_port: 53,
            count: 1,
            host_port: Some(61000),
        };
        assert_eq!(p.allocate("t2/dns", &[udp]).unwrap()[0].host_port, 61000);
        let e = p.allocate("t3/x", &[tcp(80, Some(61000))]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "net: port tcp/61000: already mapped by task t1"
        );
        assert!(p
            .allocate("t3/x", &[tcp(80, Some(22))])
            .unwrap_err()
            .to_string()
            .contains("reserved"));
        // A static port the owner holds is its again; all-or-nothing on failure.
        assert_eq!(
            p.allocate("t1/web", &[tcp(80, Some(61000))]).unwrap()[0].host_port,
            61000
        );
        let before = p.leases().unwrap();
        assert!(p
            .allocate("t3/x", &[tcp(80, None), tcp(81, Some(61000))])
            .is_err());
        assert_eq!(p.leases().unwrap(), before);
        // A container range gets a contiguous host range: 61003-61005 (61001 reserved).
        let range = PortRequest {
            proto: Proto::Tcp,
            container_port: 9000,
            count: 3,
            host_port: None,
        };
        let got = p.allocate("t3/x", &[range]).unwrap();
        assert_eq!(
            got.iter()
                .map(|b| (b.container_port, b.host_port))
                .collect::<Vec<_>>(),
            vec![(9000, 61003), (9001, 61004), (9002, 61005)]
        );
        assert_eq!(p.release_task("t1").unwrap().len(), 2);
        assert_eq!(p.reconcile(|t| t == "t2").unwrap().len(), 3);
        assert_eq!(p.leases().unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
