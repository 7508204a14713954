//! IPv4 address management for a bridge subnet: leases per owner (`task/container`) in the
//! locked allocation state (`state.rs`). The network, gateway (first address) and broadcast
//! addresses are never handed out; the search starts after the last address given, so an
//! address just released is not reused while neighbours may still cache its MAC.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::state::Store;
use super::{invalid, owner_task, NetError};

/// skiff's default bridge subnet: the top corner of 172.16.0.0/12. Home and office LANs use
/// 192.168/16 and 10/8; Docker hands out 172.17.0.0/16, 172.18.0.0/16, ... and reaches
/// 172.31.0.0/16 only with its fifteenth network; AWS default VPCs are 172.31.0.0/16 but
/// number their subnets upwards from 172.31.0.0 in /20s (six at most), far below .252.
pub const DEFAULT_SUBNET: &str = "172.31.252.0/22";

/// An IPv4 network: address and prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// The network `addr/prefix` belongs to (host bits cleared); prefix is clamped to 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Subnet {
        let prefix = prefix.min(32);
        Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        }
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The first address: the bridge's own.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// The addresses containers may get: after the gateway, before the broadcast address.
    fn hosts(&self) -> std::ops::RangeInclusive<u32> {
        u32::from(self.gateway()) + 1..=u32::from(self.broadcast()) - 1
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = String;

    /// `a.b.c.d/n` with no host bits set and room for a gateway and a container (n ≤ 30).
    fn from_str(s: &str) -> Result<Subnet, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("subnet {s:?}: want a.b.c.d/prefix"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("subnet {s:?}: bad address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| (1..=30).contains(p))
            .ok_or_else(|| format!("subnet {s:?}: prefix must be 1 to 30"))?;
        let net = Subnet::new(addr, prefix);
        if net.network != addr {
            return Err(format!("subnet {s:?}: host bits set (network is {net})"));
        }
        Ok(net)
    }
}

/// The next free host address after `last` (or from the start), wrapping once around.
fn pick(subnet: &Subnet, used: &BTreeSet<u32>, last: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
    let hosts = subnet.hosts();
    let (first, end) = (*hosts.start(), *hosts.end());
    let start = match last.map(u32::from) {
        Some(l) if hosts.contains(&l) && l < end => l + 1,
        _ => first,
    };
    (start..=end)
        .chain(first..start)
        .find(|a| !used.contains(a))
        .map(Ipv4Addr::from)
}

/// Address leases in one subnet.
#[derive(Debug, Clone)]
pub struct Ipam {
    store: Store,
    subnet: Subnet,
}

impl Ipam {
    pub fn new(store: Store, subnet: Subnet) -> Ipam {
        Ipam { store, subnet }
    }

    /// An address for `owner` (`task/container`); the one it holds already if any, so that a
    /// retried start gets the same address.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, NetError> {
        let key = self.subnet.to_string();
        self.store.update(|a| {
            let s = a.subnets.entry(key.clone()).or_default();
            if let Some(ip) = s.leases.get(owner) {
                return Ok(*ip);
            }
            let used: BTreeSet<u32> = s.leases.values().map(|ip| u32::from(*ip)).collect();
            let ip = pick(&self.subnet, &used, s.last)
                .ok_or_else(|| invalid(format!("ipam {key}"), "no free address"))?;
            s.leases.insert(owner.to_string(), ip);
            s.last = Some(ip);
            Ok(ip)
        })
    }

    /// Gives back `owner`'s address; returns it, None when it held none.
    pub fn release(&self, owner: &str) -> Result<Option<Ipv4Addr>, NetError> {
        let key = self.subnet.to_string();
        self.store
            .update(|a| Ok(a.subnets.get_mut(&key).and_then(|s| s.leases.remove(owner))))
    }

    /// Gives back every address of a task, in every subnet; returns the owners released.
    pub fn release_task(&self, task: &str) -> Result<Vec<String>, NetError> {
        self.reconcile(|t| t != task)
    }

    /// The leases of this subnet: (owner, address).
    pub fn owners(&self) -> Result<Vec<(String, Ipv4Addr)>, NetError> {
        let a = self.store.read()?;
        Ok(a.subnets
            .get(&self.subnet.to_string())
            .map(|s| s.leases.iter().map(|(o, ip)| (o.clone(), *ip)).collect())
            .unwrap_or_default())
    }

    /// Drops the leases, in every subnet, of tasks that `keep` rejects; returns their owners.
    pub fn reconcile(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<String>, NetError> {
        self.store.update(|a| {
            let mut removed = Vec::new();
            for s in a.subnets.values_mut() {
                s.leases.retain(|owner, _| {
                    let k = keep(owner_task(owner));
                    if !k {
                        removed.push(owner.clone());
                    }
                    k
                });
            }
            a.subnets
                .retain(|_, s| !s.leases.is_empty() || s.last.is_some());
            Ok(removed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn subnet_math() {
        let s = net(DEFAULT_SUBNET);
        assert_eq!(s.gateway(), Ipv4Addr::new(172, 31, 252, 1));
        assert_eq!(s.broadcast(), Ipv4Addr::new(172, 31, 255, 255));
        assert!(s.contains(Ipv4Addr::new(172, 31, 253, 9)));
        assert!(!s.contains(Ipv4Addr::new(172, 31, 251, 255)));
        assert_eq!(s.hosts().count(), 1024 - 3);
        assert!(s.overlaps(&Subnet::new(Ipv4Addr::new(172, 31, 254, 3), 24)));
        assert!(s.overlaps(&Subnet::new(Ipv4Addr::new(172, 16, 0, 1), 12)));
        assert!(!s.overlaps(&Subnet::new(Ipv4Addr::new(172, 31, 248, 1), 22)));
        assert_eq!(
            Subnet::new(Ipv4Addr::new(10, 1, 2, 3), 8).to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn subnet_parse_refuses_nonsense() {
        assert!("172.31.252.1/22".parse::<Subnet>().is_err(), "host bits");
        assert!("172.31.252.0/31".parse::<Subnet>().is_err(), "no room");
        assert!("172.31.252.0".parse::<Subnet>().is_err());
        assert!("300.1.1.0/24".parse::<Subnet>().is_err());
        assert_eq!(net("10.0.0.0/30").hosts().count(), 1);
    }

    #[test]
    fn pick_skips_network_gateway_broadcast_and_used() {
        let s = net("10.9.0.0/29"); // .0 network, .1 gateway, .2-.6 hosts, .7 broadcast
        let mut used = BTreeSet::new();
        let mut got = Vec::new();
        let mut last = None;
        while let Some(ip) = pick(&s, &used, last) {
            used.insert(u32::from(ip));
            last = Some(ip);
            got.push(ip.octets()[3]);
        }
        assert_eq!(got, vec![2, 3, 4, 5, 6]);
    }

    #[test]
    fn pick_continues_after_the_last_and_wraps() {
        let s = net("10.9.0.0/29");
        let used: BTreeSet<u32> = [Ipv4Addr::new(10, 9, 0, 3)]
            .iter()
            .map(|i| u32::from(*i))
            .collect();
        assert_eq!(
            pick(&s, &used, Some(Ipv4Addr::new(10, 9, 0, 4))),
            Some(Ipv4Addr::new(10, 9, 0, 5))
        );
        assert_eq!(
            pick(&s, &used, Some(Ipv4Addr::new(10, 9, 0, 6))),
            Some(Ipv4Addr::new(10, 9, 0, 2))
        );
        assert_eq!(
            pick(&s, &used, Some(Ipv4Addr::new(10, 9, 0, 2))),
            Some(Ipv4Addr::new(10, 9, 0, 4))
        );
        // A last address outside the subnet (the subnet changed) starts from the beginning.
        assert_eq!(
            pick(&s, &used, Some(Ipv4Addr::new(10, 8, 0, 9))),
            Some(Ipv4Addr::new(10, 9, 0, 2))
        );
    }

    #[test]
    fn leases_persist_and_release() {
        let dir = std::env::temp_dir().join(format!("skiff-ipam-{}", std::process::id()));
        let ipam = Ipam::new(Store::new(&dir), net("10.9.0.0/29"));
        let a = ipam.allocate("t1/web").unwrap();
        assert_eq!(ipam.allocate("t1/web").unwrap(), a, "idempotent");
        let b = ipam.allocate("t1/db").unwrap();
        let c = ipam.allocate("t2/web").unwrap();
        assert!(a != b && b != c && a != c);
        assert_eq!(ipam.release("t2/web").unwrap(), Some(c));
        assert_eq!(ipam.release("t2/web").unwrap(), None);
        let mut gone = ipam.release_task("t1").unwrap();
        gone.sort();
        assert_eq!(gone, vec!["t1/db".to_string(), "t1/web".to_string()]);
        for i in 0..5 {
            ipam.allocate(&format!("t3/c{i}")).unwrap();
        }
        assert!(ipam
            .allocate("t4/x")
            .unwrap_err()
            .to_string()
            .contains("no free address"));
        assert_eq!(ipam.reconcile(|t| t == "t3").unwrap(), Vec::<String>::new());
        assert_eq!(ipam.reconcile(|_| false).unwrap().len(), 5);
        assert!(ipam.owners().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
