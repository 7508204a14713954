//! Links, addresses and routes over rtnetlink: the host bridge, a veth pair per container,
//! deletion, and listing for reconcile. Never `ip`.
//!
//! rtnetlink is async: each call here runs its requests on a current-thread runtime built on
//! the calling thread, whose netlink socket belongs to that thread's network namespace. The
//! container end of a veth is configured from a thread inside the container's namespace
//! (`netns::in_netns`).

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};
use sha2::{Digest as _, Sha256};

use super::ipam::Subnet;
use super::{invalid, io_err, netns, NetError};

/// Host-side veth names start with this; the rest is 10 hex digits of a hash.
pub const VETH_PREFIX: &str = "sk";

/// The host-side veth name of a container: `sk` + 10 hex digits of sha256(task/container),
/// so that it fits IFNAMSIZ and reconcile can recompute it.
pub fn veth_name(task: &str, container: &str) -> String {
    let d = Sha256::digest(format!("{task}/{container}").as_bytes());
    format!("{VETH_PREFIX}{}", hex::encode(&d[..5]))
}

/// Whether a link name is one `veth_name` gives: `sk` + 10 hex digits (never the bridge).
pub fn is_veth_name(name: &str) -> bool {
    name.strip_prefix(VETH_PREFIX)
        .is_some_and(|h| h.len() == 10 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A locally administered unicast MAC derived from an IPv4 address, as Docker does:
/// `02:42:a:b:c:d`. Addresses are unique on the bridge, so the MACs are too.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().raw_os_error(),
        _ => None,
    }
}

fn nl_err(
    object: impl std::fmt::Display,
    op: &'static str,
) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let object = object.to_string();
    move |e| {
        let source = match e {
            rtnetlink::Error::NetlinkError(m) => m.to_io(),
            other => io::Error::other(other.to_string()),
        };
        NetError::Io { object, op, source }
    }
}

/// Runs `f` with a netlink handle of the calling thread's namespace, on a runtime of its own.
fn netlink<T, F, Fut>(f: F) -> Result<T, NetError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, NetError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(io_err("netlink", "start runtime"))?;
    rt.block_on(async move {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(io_err("netlink", "connect"))?;
        let driver = tokio::spawn(conn);
        let result = f(handle).await;
        driver.abort();
        result
    })
}

/// A link's index and message by name; None when there is no such link.
async fn get_link(
    h: &Handle,
    name: &str,
) -> Result<Option<rtnetlink::packet_route::link::LinkMessage>, rtnetlink::Error> {
    match h.link().get().match_name(name).execute().try_next().await {
        Ok(m) => Ok(m),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The index of a link that must exist.
async fn index_of(h: &Handle, name: &str, object: &str) -> Result<u32, NetError> {
    Ok(get_link(h, name)
        .await
        .map_err(nl_err(object, "look up"))?
        .ok_or_else(|| invalid(object, "no such link"))?
        .header
        .index)
}

fn link_kind(m: &rtnetlink::packet_route::link::LinkMessage) -> Option<&InfoKind> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

/// Every IPv4 address of the namespace: (link index, address, prefix).
async fn ipv4_addresses(h: &Handle) -> Result<Vec<(u32, Ipv4Addr, u8)>, rtnetlink::Error> {
    let mut out = Vec::new();
    let mut s = h.address().get().execute();
    while let Some(m) = s.try_next().await? {
        for a in &m.attributes {
            if let AddressAttribute::Local(IpAddr::V4(ip)) = a {
                out.push((m.header.index, *ip, m.header.prefix_len));
            }
        }
    }
    Ok(out)
}

/// The host bridge: its name and the subnet whose first address (the gateway) it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    pub name: String,
    pub subnet: Subnet,
}

/// Makes sure the bridge exists, holds the gateway address and is up; idempotent and safe
/// against a concurrent skiff doing the same. On creation, a subnet that overlaps an address
/// of another link is refused. Sets `route_localnet` on the bridge, so that connections to
/// 127.0.0.1 can be DNATed out through it (the hairpin to a mapped port).
pub fn ensure_bridge(br: &BridgeSpec) -> Result<(), NetError> {
    let name = br.name.as_str();
    let object = format!("bridge {name}");
    let gateway = br.subnet.gateway();
    let prefix = br.subnet.prefix();
    netlink(|h| async move {
        let idx = match get_link(&h, name)
            .await
            .map_err(nl_err(&object, "look up"))?
        {
            Some(m) => {
                if link_kind(&m) != Some(&InfoKind::Bridge) {
                    return Err(invalid(
                        &object,
                        "a link of that name exists and is not a bridge",
                    ));
                }
                m.header.index
            }
            None => {
                let mut made_meanwhile = None;
                for (i, ip, p) in ipv4_addresses(&h)
                    .await
                    .map_err(nl_err(&object, "list addresses"))?
                {
                    let theirs = Subnet::new(ip, p);
                    if theirs.overlaps(&br.subnet) {
                        // A concurrent skiff may have made the bridge since the look-up: its
                        // own address is no overlap.
                        let now = get_link(&h, name)
                            .await
                            .map_err(nl_err(&object, "look up"))?;
                        if now.as_ref().is_some_and(|m| {
                            m.header.index == i && link_kind(m) == Some(&InfoKind::Bridge)
                        }) {
                            made_meanwhile = Some(i);
                            break;
                        }
                        return Err(invalid(
                            &object,
                            format!(
                                "subnet {} overlaps {ip}/{p} of another link: choose another",
                                br.subnet
                            ),
                        ));
                    }
                }
                if let Some(i) = made_meanwhile {
                    i
                } else {
                    // An explicit MAC: a bridge otherwise takes the lowest of its ports' and
                    // changes it as containers come and go, which upsets neighbours' ARP caches.
                    let msg = LinkBridge::new(name)
                        .address(mac_for(gateway).to_vec())
                        .build();
                    match h.link().add(msg).execute().await {
                        Ok(()) => {
                            tracing::info!(bridge = name, subnet = %br.subnet, "created bridge")
                        }
                        Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                        Err(e) => return Err(nl_err(&object, "create")(e)),
                    }
                    index_of(&h, name, &object).await?
                }
            }
        };
        let addrs = ipv4_addresses(&h)
            .await
            .map_err(nl_err(&object, "list addresses"))?;
        match addrs.iter().find(|(i, ip, _)| *i == idx && *ip == gateway) {
            Some((_, _, p)) if *p != prefix => {
                return Err(invalid(
                    &object,
                    format!("holds {gateway}/{p}, not /{prefix}"),
                ));
            }
            Some(_) => {}
            None => match h
                .address()
                .add(idx, IpAddr::V4(gateway), prefix)
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(nl_err(&object, "add address")(e)),
            },
        }
        h.link()
            .change(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(nl_err(&object, "set up"))
    })?;
    super::sysctl_write(&format!("net/ipv4/conf/{name}/route_localnet"), "1")
}

/// Turns `net.ipv4.ip_forward` on when it is off (containers reach other networks through
/// it); says so in a log line. Returns whether it changed anything.
pub fn enable_ip_forward() -> Result<bool, NetError> {
    if super::sysctl_read("net/ipv4/ip_forward")? == "1" {
        return Ok(false);
    }
    super::sysctl_write("net/ipv4/ip_forward", "1")?;
    tracing::info!("net.ipv4.ip_forward was off: turned it on for bridge-mode egress");
    Ok(true)
}

/// One container's veth pair.
#[derive(Debug)]
pub struct Veth<'a> {
    /// Host end (`veth_name`): attached to the bridge.
    pub host_name: &'a str,
    /// Recorded as the host end's alias (`task/container`), for reconcile and for people.
    pub owner: &'a str,
    pub bridge: &'a str,
    /// The container's namespace; the peer is created in it directly.
    pub netns: BorrowedFd<'a>,
    /// The peer's name inside the namespace (`eth0`).
    pub peer_name: &'a str,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// Creates the pair: the host end attached to the bridge (hairpin on) and up; the peer born
/// in the container's namespace with its name and MAC (`mac_for(address)`), then set up and
/// given the address and a default route via the gateway. Anything half-made is deleted on failure.
/// Returns the peer's MAC.
pub fn create_veth(v: &Veth) -> Result<[u8; 6], NetError> {
    let object = format!("veth {}", v.host_name);
    let mac = mac_for(v.address);
    netlink(|h| async move {
        let br = index_of(&h, v.bridge, &format!("bridge {}", v.bridge)).await?;
        // Creating the peer inside the namespace (IFLA_NET_NS_FD in the peer's message) rather
        // than moving it afterwards: one request, and no temporary name on the host to clash.
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(v.peer_name)
            .address(mac.to_vec())
            .setns_by_fd(v.netns.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(v.host_name)
            .controller(br)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        h.link()
            .add(msg)
            .execute()
            .await
            .map_err(nl_err(&object, "create"))?;
        let configured = async {
            let idx = index_of(&h, v.host_name, &object).await?;
            // Hairpin: with br_netfilter loaded, a container reaching its own mapped port is
            // DNATed back out of the port it came in on.
            let port = LinkBridgePort::new(idx)
                .hairpin(true)
                .alias(v.owner)
                .build();
            h.link()
                .set_port(port)
                .execute()
                .await
                .map_err(nl_err(&object, "set hairpin and alias"))
        }
        .await;
        if configured.is_err() {
            let _ = delete_by_name(&h, v.host_name).await;
        }
        configured
    })?;
    let inside = netns::in_netns(v.netns, || {
        netlink(|h| async move {
            let object = format!("veth {} in netns", v.peer_name);
            let idx = index_of(&h, v.peer_name, &object).await?;
            // Up only now: a veth cannot open before its pair is complete (ENOTCONN).
            h.link()
                .change(LinkUnspec::new_with_index(idx).up().build())
                .execute()
                .await
                .map_err(nl_err(&object, "set up"))?;
            h.address()
                .add(idx, IpAddr::V4(v.address), v.prefix)
                .execute()
                .await
                .map_err(nl_err(&object, "add address"))?;
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .output_interface(idx)
                .gateway(v.gateway)
                .build();
            h.route()
                .add(route)
                .execute()
                .await
                .map_err(nl_err(&object, "add default route"))
        })
    })
    .and_then(|r| r);
    if let Err(e) = inside {
        let _ = delete_link(v.host_name);
        return Err(e);
    }
    Ok(mac)
}

async fn delete_by_name(h: &Handle, name: &str) -> Result<bool, NetError> {
    let object = format!("link {name}");
    let Some(m) = get_link(h, name)
        .await
        .map_err(nl_err(&object, "look up"))?
    else {
        return Ok(false);
    };
    match h.link().del(m.header.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(nl_err(&object, "delete")(e)),
    }
}

/// Deletes a link by name (a veth takes its peer along); a missing one is fine. Returns
/// whether it existed.
pub fn delete_link(name: &str) -> Result<bool, NetError> {
    netlink(|h| async move { delete_by_name(&h, name).await })
}

/// A link as reconcile sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEntry {
    pub name: String,
    pub alias: Option<String>,
}

/// The links whose names start with `prefix`, with their aliases.
pub fn list_links(prefix: &str) -> Result<Vec<LinkEntry>, NetError> {
    netlink(|h| async move {
        let mut out = Vec::new();
        let mut s = h.link().get().execute();
        while let Some(m) = s.try_next().await.map_err(nl_err("links", "list"))? {
            let mut name = None;
            let mut alias = None;
            for a in m.attributes {
                match a {
                    LinkAttribute::IfName(n) => name = Some(n),
                    LinkAttribute::IfAlias(a) => alias = Some(a),
                    _ => {}
                }
            }
            if let Some(name) = name.filter(|n| n.starts_with(prefix)) {
                out.push(LinkEntry { name, alias });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_deterministic_and_fit_ifnamsiz() {
        let a = veth_name("0123abcd", "web");
        assert_eq!(a, veth_name("0123abcd", "web"));
        assert_ne!(a, veth_name("0123abcd", "db"));
        assert_ne!(a, veth_name("0123abce", "web"));
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("sk") && a[2..].chars().all(|c| c.is_ascii_hexdigit()));
        // sha256("0123abcd/web") starts with these five bytes.
        let d = Sha256::digest(b"0123abcd/web");
        assert_eq!(&a[2..], hex::encode(&d[..5]));
        assert!(is_veth_name(&a));
        assert!(!is_veth_name("skiff0"));
        assert!(!is_veth_name("sk123"));
        assert!(!is_veth_name("skzzzzzzzzzz"));
    }

    #[test]
    fn mac_is_docker_style_and_locally_administered() {
        let mac = mac_for(Ipv4Addr::new(172, 31, 252, 7));
        assert_eq!(format_mac(&mac), "02:42:ac:1f:fc:07");
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        assert_eq!(mac[0] & 0x01, 0, "unicast");
    }
}
