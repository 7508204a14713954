//! A task's network, by its mode: `none` (a namespace of its own, loopback only, made by the
//! clone), `host` (the host's namespace), `bridge` (a namespace per container on skiff's
//! bridge, from `net::bridge`) and `awsvpc` (one namespace for the whole task, shared by its
//! containers, with its own address and MAC on the same bridge, reported as an ENI-like
//! attachment).
//!
//! The settings used go to `net.json` in the task directory before anything is made, so that
//! whoever releases the task's network later (its shim when the task ends, `skiff rm`, or the
//! reconcile after a crash) rebuilds the same `BridgeNet` (`net::settings`).

use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::spec::NetView;
use crate::net::bridge::Attachment;
use crate::net::ports::{PortBinding, PortRequest};
use crate::net::settings::{on_thread, TASK_ATTACHMENT};
pub use crate::net::settings::{release, NetSettings, NET_FILE};
use crate::net::Proto;
use crate::taskdef::{NetworkMode, PortProtocol, TaskDefinition};

/// A container's network as `task.json` (and so `skiff inspect`) records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRecord {
    pub mode: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub bindings: Vec<PortBinding>,
}

impl NetRecord {
    fn of(mode: NetworkMode, a: &Attachment) -> NetRecord {
        NetRecord {
            mode: mode.as_str().to_string(),
            ip: a.ip,
            prefix: a.prefix,
            gateway: a.gateway,
            mac: a.mac.clone(),
            bindings: a.bindings.clone(),
        }
    }
}

/// What the task's network gives each container (in definition order).
#[derive(Debug, Default)]
pub struct TaskNet {
    pub views: Vec<NetView>,
    pub records: Vec<Option<NetRecord>>,
}

/// The port mappings of container `i`.
fn port_requests(td: &TaskDefinition, i: usize) -> Vec<PortRequest> {
    td.containers[i]
        .port_mappings
        .iter()
        .map(|m| PortRequest {
            proto: match m.protocol {
                PortProtocol::Tcp => Proto::Tcp,
                PortProtocol::Udp => Proto::Udp,
            },
            container_port: m.container_port,
            count: m.count,
            host_port: m.host_port,
        })
        .collect()
}

/// Sets up the task's network. On failure, whatever was made is released again.
pub fn setup(
    td: &TaskDefinition,
    task_id: &str,
    task_dir: &Path,
    state_dir: &Path,
    settings: &NetSettings,
) -> Result<TaskNet, String> {
    let n = td.containers.len();
    if !matches!(td.network_mode, NetworkMode::Bridge | NetworkMode::Awsvpc) {
        return Ok(TaskNet {
            views: vec![NetView::default(); n],
            records: vec![None; n],
        });
    }
    // Decided once here, so that whoever releases the network later does not look again.
    let settings = &settings.resolved(state_dir)?;
    let body = serde_json::to_vec(settings).expect("settings serialize");
    std::fs::write(task_dir.join(NET_FILE), body)
        .map_err(|e| format!("write {}: {e}", task_dir.join(NET_FILE).display()))?;
    let made = on_thread(|| setup_bridge(td, task_id, state_dir, settings));
    if made.is_err() {
        release(task_dir, task_id);
    }
    made
}

fn setup_bridge(
    td: &TaskDefinition,
    task_id: &str,
    state_dir: &Path,
    settings: &NetSettings,
) -> Result<TaskNet, String> {
    let net = settings.bridge_net(state_dir)?;
    net.ensure().map_err(|e| e.to_string())?;
    let mut out = TaskNet::default();
    match td.network_mode {
        NetworkMode::Awsvpc => {
            let ports: Vec<PortRequest> = (0..td.containers.len())
                .flat_map(|i| port_requests(td, i))
                .collect();
            let a = net
                .attach(task_id, TASK_ATTACHMENT, &ports)
                .map_err(|e| e.to_string())?;
            for _ in &td.containers {
                out.views.push(NetView {
                    netns: Some(a.netns.clone()),
                    ip: Some(a.ip),
                    hosts: Vec::new(),
                });
                out.records.push(Some(NetRecord::of(td.network_mode, &a)));
            }
        }
        _ => {
            for (i, c) in td.containers.iter().enumerate() {
                if c.disable_networking {
                    // Loopback only: a namespace of its own from the clone.
                    out.views.push(NetView::default());
                    out.records.push(None);
                    continue;
                }
                let a = net
                    .attach(task_id, &c.name, &port_requests(td, i))
                    .map_err(|e| format!("container {}: {e}", c.name))?;
                out.views.push(NetView {
                    netns: Some(a.netns.clone()),
                    ip: Some(a.ip),
                    hosts: Vec::new(),
                });
                out.records.push(Some(NetRecord::of(td.network_mode, &a)));
            }
            // `links`: the linked container's address under its name and alias.
            for (i, c) in td.containers.iter().enumerate() {
                for (name, alias) in &c.links {
                    let Some(j) = td.containers.iter().position(|o| &o.name == name) else {
                        continue;
                    };
                    let Some(ip) = out.records[j].as_ref().map(|r| r.ip) else {
                        continue;
                    };
                    let mut names = vec![];
                    if let Some(a) = alias {
                        names.push(a.clone());
                    }
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                    out.views[i].hosts.push((ip, names));
                }
            }
        }
    }
    Ok(out)
}
