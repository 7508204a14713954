//! `skiff net-debug`: internal and hidden. Drives the networking primitives one step at a
//! time, so that tests can exercise them in a throwaway network namespace (and people can
//! look at what skiff made) before the task engine uses them. Prints JSON.

use std::path::Path;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use super::EXIT_RUNNER_ERROR;
use crate::net::bridge::{BridgeNet, Config, DEFAULT_BRIDGE};
use crate::net::firewall::Backend;
use crate::net::ipam::DEFAULT_SUBNET;
use crate::net::ports::{PortConfig, PortRequest};
use crate::net::{link, netns, Proto};

#[derive(Args)]
pub struct NetDebugArgs {
    #[arg(long, default_value = DEFAULT_BRIDGE)]
    bridge: String,
    #[arg(long, default_value = DEFAULT_SUBNET)]
    subnet: String,
    /// Dynamic host port range `a-b` (default: the kernel's ip_local_port_range).
    #[arg(long, env = "ECS_DYNAMIC_HOST_PORT_RANGE")]
    port_range: Option<String>,
    /// Reserved host ports besides 22, 2375, 2376, 51678, 51679 (comma-separated).
    #[arg(long, value_delimiter = ',')]
    reserved_ports: Vec<u16>,
    /// Firewall backend: nft or iptables (default: nft when installed).
    #[arg(long)]
    firewall: Option<String>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// The host side: bridge, ip_forward, firewall base rules.
    Ensure,
    /// A container's network: namespace, address, veth, ports and rules.
    Attach {
        #[arg(long)]
        task: String,
        #[arg(long)]
        container: String,
        /// `proto:host:container`: host empty or 0 = dynamic; container `a-b` = a range.
        #[arg(short = 'p', long = "publish")]
        publish: Vec<String>,
    },
    /// Everything of one task.
    Detach {
        #[arg(long)]
        task: String,
    },
    /// Everything of the tasks not named.
    Reconcile {
        #[arg(long)]
        keep: Vec<String>,
    },
    /// Everything skiff made, the bridge and the firewall table included.
    Teardown,
    /// An address and host ports for an owner, nothing else (allocation only).
    Alloc {
        #[arg(long)]
        owner: String,
        #[arg(short = 'p', long = "publish")]
        publish: Vec<String>,
    },
    /// What skiff holds: leases, veths, rules, namespace files.
    Status,
}

/// `proto:host:container`, e.g. `tcp:8080:80`, `udp::53`, `tcp:0:9000-9002`.
fn parse_publish(s: &str) -> anyhow::Result<PortRequest> {
    let mut it = s.splitn(3, ':');
    let (Some(proto), Some(host), Some(cont)) = (it.next(), it.next(), it.next()) else {
        anyhow::bail!("publish {s:?}: want proto:host:container");
    };
    let proto: Proto = proto.parse().map_err(anyhow::Error::msg)?;
    let (first, last) = match cont.split_once('-') {
        Some(_) => crate::net::ports::parse_range(cont).map_err(anyhow::Error::msg)?,
        None => {
            let p: u16 = cont
                .parse()
                .with_context(|| format!("publish {s:?}: container port"))?;
            (p, p)
        }
    };
    let host_port = match host {
        "" => None,
        h => Some(
            h.parse::<u16>()
                .with_context(|| format!("publish {s:?}: host port"))?,
        ),
    };
    Ok(PortRequest {
        proto,
        container_port: first,
        count: last - first + 1,
        host_port,
    })
}

pub fn run(args: NetDebugArgs, state_dir: &Path) -> i32 {
    match run_inner(args, state_dir) {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            0
        }
        Err(e) => {
            eprintln!("skiff: net-debug: {e}");
            EXIT_RUNNER_ERROR
        }
    }
}

fn run_inner(args: NetDebugArgs, state_dir: &Path) -> anyhow::Result<serde_json::Value> {
    let cfg = Config {
        bridge: args.bridge,
        subnet: args.subnet.parse().map_err(anyhow::Error::msg)?,
        ports: PortConfig::new(args.port_range.as_deref(), &args.reserved_ports)?,
        firewall: Backend::detect(args.firewall.as_deref())?,
    };
    let net = BridgeNet::new(state_dir, cfg);
    let publish = |p: &[String]| {
        p.iter()
            .map(|s| parse_publish(s))
            .collect::<anyhow::Result<Vec<_>>>()
    };
    Ok(match args.action {
        Action::Ensure => {
            net.ensure()?;
            json!({ "firewall": net.firewall().backend().to_string() })
        }
        Action::Attach {
            task,
            container,
            publish: p,
        } => serde_json::to_value(net.attach(&task, &container, &publish(&p)?)?)?,
        Action::Detach { task } => serde_json::to_value(net.detach_task(&task, true)?)?,
        Action::Reconcile { keep } => {
            serde_json::to_value(net.reconcile(|t| keep.iter().any(|k| k == t))?)?
        }
        Action::Teardown => serde_json::to_value(net.teardown_all()?)?,
        Action::Alloc { owner, publish: p } => {
            let ip = net.ipam().allocate(&owner)?;
            let bindings = net.ports().allocate(&owner, &publish(&p)?)?;
            json!({ "ip": ip, "bindings": bindings })
        }
        Action::Status => {
            let links: Vec<_> = link::list_links(link::VETH_PREFIX)?
                .into_iter()
                .filter(|l| link::is_veth_name(&l.name))
                .map(|l| json!({ "name": l.name, "alias": l.alias }))
                .collect();
            let netns: Vec<_> = netns::list(&state_dir.join("netns"))?
                .into_iter()
                .map(|(p, t)| json!({ "path": p, "task": t }))
                .collect();
            json!({
                "addresses": net.ipam().owners()?,
                "ports": net.ports().leases()?,
                "links": links,
                "rules": net.firewall().owners()?,
                "netns": netns,
                "firewall": net.firewall().backend().to_string(),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs() {
        let r = parse_publish("tcp:8080:80").unwrap();
        assert_eq!(
            (r.proto, r.host_port, r.container_port, r.count),
            (Proto::Tcp, Some(8080), 80, 1)
        );
        let r = parse_publish("udp::53").unwrap();
        assert_eq!((r.proto, r.host_port, r.count), (Proto::Udp, None, 1));
        let r = parse_publish("tcp:0:9000-9002").unwrap();
        assert_eq!((r.host_port, r.container_port, r.count), (Some(0), 9000, 3));
        assert!(parse_publish("sctp:1:1").is_err());
        assert!(parse_publish("tcp:1").is_err());
    }
}
