//! Bridge mode, composed from the pieces: the host side once (`ensure`), a container's
//! network (`attach`), and removal of everything of a task (`detach_task`) or of every task
//! that is gone (`reconcile`).
//!
//! Every piece is found again from what it is named or tagged with, never from memory of
//! the process that made it: namespace files `STATE/netns/<task>-<container>`, host veths
//! `sk<hash>` with the alias `<task>/<container>`, rule comments `skiff:<task>/<container>`,
//! and leases by owner in `STATE/net/allocations.json`. So a crash at any point leaves
//! nothing that reconcile cannot find.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::firewall::{self, Backend, Firewall, Mapping};
use super::ipam::{Ipam, Subnet};
use super::link::{self, BridgeSpec, Veth};
use super::ports::{PortBinding, PortConfig, PortLease, PortRequest, Ports};
use super::state::Store;
use super::{netns, owner_task, NetError};

pub const DEFAULT_BRIDGE: &str = "skiff0";

/// The container end's name inside its namespace.
pub const PEER_NAME: &str = "eth0";

#[derive(Debug, Clone)]
pub struct Config {
    pub bridge: String,
    pub subnet: Subnet,
    pub ports: PortConfig,
    pub firewall: Backend,
}

/// A container's network, as the task engine reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    pub owner: String,
    pub netns: PathBuf,
    pub veth: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub bindings: Vec<PortBinding>,
}

/// What a removal took away.
#[derive(Debug, Default, Serialize)]
pub struct Removed {
    /// Owners of the port rules removed, one per rule.
    pub rules: Vec<String>,
    pub links: Vec<String>,
    pub netns: Vec<PathBuf>,
    /// Owners whose addresses were released.
    pub addresses: Vec<String>,
    pub ports: Vec<PortLease>,
}

pub struct BridgeNet {
    cfg: Config,
    netns_dir: PathBuf,
    ipam: Ipam,
    ports: Ports,
    firewall: Firewall,
}

impl BridgeNet {
    pub fn new(state_dir: &Path, cfg: Config) -> BridgeNet {
        let store = Store::new(state_dir);
        BridgeNet {
            netns_dir: state_dir.join("netns"),
            ipam: Ipam::new(store.clone(), cfg.subnet),
            ports: Ports::new(store, cfg.ports.clone()),
            firewall: Firewall::new(cfg.firewall, state_dir),
            cfg,
        }
    }

    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    pub fn firewall(&self) -> &Firewall {
        &self.firewall
    }

    /// The host side, idempotent: the bridge with the gateway address, ip_forward, and the
    /// firewall's base rules. Done once per boot and bridge: a marker (`STATE/net/ensured`)
    /// records the boot, the settings and the bridge's interface index, and while they hold
    /// (the bridge was not deleted and made again) nothing is checked again, which spares
    /// every task start a round of netlink and nft calls (about 20 ms).
    pub fn ensure(&self) -> Result<(), NetError> {
        let marker = self.netns_dir.with_file_name("net").join("ensured");
        let stamp = |index: u32| {
            format!(
                "{} {} {} {} {index}\n",
                super::boot_id(),
                self.cfg.bridge,
                self.cfg.subnet,
                self.cfg.firewall
            )
        };
        let index = super::if_index;
        let current = index(&self.cfg.bridge);
        if current != 0 && std::fs::read_to_string(&marker).ok() == Some(stamp(current)) {
            return Ok(());
        }
        link::ensure_bridge(&BridgeSpec {
            name: self.cfg.bridge.clone(),
            subnet: self.cfg.subnet,
        })?;
        link::enable_ip_forward()?;
        self.firewall.ensure(&firewall::Spec {
            bridge: self.cfg.bridge.clone(),
            subnet: self.cfg.subnet,
        })?;
        if let Some(dir) = marker.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&marker, stamp(index(&self.cfg.bridge)));
        Ok(())
    }

    /// A container's network: its namespace file, an address, the veth pair, host ports and
    /// their forwarding rules. On failure, what was made is removed again.
    pub fn attach(
        &self,
        task: &str,
        container: &str,
        ports: &[PortRequest],
    ) -> Result<Attachment, NetError> {
        let owner = format!("{task}/{container}");
        let made = self.attach_inner(task, container, &owner, ports);
        if made.is_err() {
            self.undo(task, container, &owner);
        }
        made
    }

    fn attach_inner(
        &self,
        task: &str,
        container: &str,
        owner: &str,
        ports: &[PortRequest],
    ) -> Result<Attachment, NetError> {
        // The lease comes first: reconcile recognises a veth whose alias is not set yet by the
        // lease of its owner.
        let ip = self.ipam.allocate(owner)?;
        let ns_path = self.netns_dir.join(netns::file_name(task, Some(container)));
        netns::create(&ns_path)?;
        let ns = netns::open(&ns_path)?;
        let veth = link::veth_name(task, container);
        let subnet = self.cfg.subnet;
        let mac = link::create_veth(&Veth {
            host_name: &veth,
            owner,
            bridge: &self.cfg.bridge,
            netns: std::os::fd::AsFd::as_fd(&ns),
            peer_name: PEER_NAME,
            address: ip,
            prefix: subnet.prefix(),
            gateway: subnet.gateway(),
        })?;
        let bindings = self.ports.allocate(owner, ports)?;
        let maps: Vec<Mapping> = bindings
            .iter()
            .map(|b| Mapping {
                proto: b.proto,
                host_port: b.host_port,
                addr: ip,
                container_port: b.container_port,
            })
            .collect();
        self.firewall.add(owner, &maps)?;
        Ok(Attachment {
            owner: owner.to_string(),
            netns: ns_path,
            veth,
            ip,
            prefix: subnet.prefix(),
            gateway: subnet.gateway(),
            mac: link::format_mac(&mac),
            bindings,
        })
    }

    /// Best effort: what a failed attach made.
    fn undo(&self, task: &str, container: &str, owner: &str) {
        let results = [
            self.firewall.remove_owner(owner).map(drop),
            link::delete_link(&link::veth_name(task, container)).map(drop),
            netns::remove(&self.netns_dir.join(netns::file_name(task, Some(container)))),
            self.ports.release(owner).map(drop),
            self.ipam.release(owner).map(drop),
        ];
        for e in results.into_iter().filter_map(Result::err) {
            tracing::warn!(owner, error = %e, "undoing a failed network attach");
        }
    }

    /// Everything of one task. Missing pieces are fine.
    ///
    /// The veth pairs are not deleted one by one: once its namespace file is unmounted and
    /// its container gone, the kernel destroys a namespace with the veth pair in it. That
    /// happens in the background (a synchronous delete would cost each task about 17 ms of
    /// RCU waits); `wait_links` waits until the host ends are gone. A veth whose namespace
    /// somehow lives on is left for `reconcile`, which deletes it.
    pub fn detach_task(&self, task: &str, wait_links: bool) -> Result<Removed, NetError> {
        let keep = |t: &str| t != task;
        let owners: Vec<String> = self
            .ipam
            .owners()?
            .into_iter()
            .map(|(o, _)| o)
            .filter(|o| owner_task(o) == task)
            .collect();
        // Only a task that holds host ports has rules: no nft call for the others. Leases
        // go last, so that a crash in between leaves a lease that tells the next reconcile
        // to look (see `has_orphans`).
        let holds_ports = self
            .ports
            .leases()?
            .iter()
            .any(|l| owner_task(&l.owner) == task);
        let rules = if holds_ports {
            self.firewall.remove_task(task)?
        } else {
            Vec::new()
        };
        let netns = netns::reconcile(&self.netns_dir, keep)?;
        let mut links = Vec::new();
        for owner in &owners {
            let Some((t, c)) = owner.split_once('/') else {
                continue;
            };
            let name = link::veth_name(t, c);
            if wait_links {
                let start = std::time::Instant::now();
                while super::if_index(&name) != 0
                    && start.elapsed() < std::time::Duration::from_secs(2)
                {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                // Still there: its namespace is held elsewhere; delete it ourselves.
                link::delete_link(&name)?;
            }
            links.push(name);
        }
        Ok(Removed {
            rules,
            links,
            netns,
            ports: self.ports.release_task(task)?,
            addresses: self.ipam.release_task(task)?,
        })
    }

    /// Whether anything of a task that `keep` rejects is left: an address or port lease, or
    /// a namespace file. Cheap (a file and a directory read), so every start can ask, and run
    /// the full [`BridgeNet::reconcile`] (netlink and nft listings) only when it says yes. A
    /// crash leaves at least one of these until the very end of a removal.
    pub fn has_orphans(&self, keep: impl Fn(&str) -> bool) -> Result<bool, NetError> {
        // Interfaces before leases, for the reason given in `remove_links`.
        let names = interface_names();
        let owners = self.ipam.owners()?;
        if owners.iter().any(|(o, _)| !keep(owner_task(o))) {
            return Ok(true);
        }
        // A veth of no lease: one whose namespace outlived its task (something else held
        // it when the task ended). Interface names come from if_nameindex (one netlink dump).
        let leased: std::collections::HashSet<String> = owners
            .iter()
            .filter_map(|(o, _)| o.split_once('/').map(|(t, c)| link::veth_name(t, c)))
            .collect();
        if names
            .iter()
            .any(|n| link::is_veth_name(n) && !leased.contains(n))
        {
            return Ok(true);
        }
        if self
            .ports
            .leases()?
            .iter()
            .any(|l| !keep(owner_task(&l.owner)))
        {
            return Ok(true);
        }
        Ok(netns::list(&self.netns_dir)?
            .iter()
            .any(|(_, task)| !keep(task)))
    }

    /// Everything of the tasks that `keep` rejects: port rules, veths, namespace files,
    /// address and port leases. `keep` must accept tasks being started, or their pieces go
    /// too.
    pub fn reconcile(&self, keep: impl Fn(&str) -> bool) -> Result<Removed, NetError> {
        Ok(Removed {
            rules: self.firewall.reconcile(&keep)?,
            links: self.remove_links(&keep)?,
            netns: netns::reconcile(&self.netns_dir, &keep)?,
            ports: self.ports.reconcile(&keep)?,
            addresses: self.ipam.reconcile(&keep)?,
        })
    }

    /// Deletes the host veths of tasks `keep` rejects: found by alias, or, for one whose alias
    /// was never set (a crash in between), by the address lease its name hashes; so address
    /// leases must be released after this.
    fn remove_links(&self, keep: &impl Fn(&str) -> bool) -> Result<Vec<String>, NetError> {
        // Links first, leases after: an attach leases before it makes its veth, so every
        // veth listed here has its lease in what is read next, even one being made now.
        let links = link::list_links(link::VETH_PREFIX)?;
        let by_name: HashMap<String, String> = self
            .ipam
            .owners()?
            .into_iter()
            .filter_map(|(owner, _)| {
                let (t, c) = owner.split_once('/')?;
                Some((link::veth_name(t, c), owner.clone()))
            })
            .collect();
        let mut removed = Vec::new();
        for l in links {
            let owner = l
                .alias
                .as_deref()
                .or(by_name.get(&l.name).map(String::as_str));
            let gone = owner.map_or(true, |o| !keep(owner_task(o)));
            if gone && link::is_veth_name(&l.name) && link::delete_link(&l.name)? {
                removed.push(l.name);
            }
        }
        Ok(removed)
    }

    /// Everything skiff made, the bridge and the firewall table included (for tests, and for
    /// an operator removing skiff).
    pub fn teardown_all(&self) -> Result<Removed, NetError> {
        let removed = self.reconcile(|_| false)?;
        self.firewall.teardown_all()?;
        link::delete_link(&self.cfg.bridge)?;
        Ok(removed)
    }
}

/// The interfaces of the calling thread's network namespace.
fn interface_names() -> Vec<String> {
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut p = list;
    unsafe {
        while (*p).if_index != 0 {
            out.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}
