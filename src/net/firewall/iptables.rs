//! The iptables backend, for hosts without `nft`: skiff's rules live in its own chains, each
//! reached by one jump from a built-in chain, inserted once:
//!
//! ```text
//! nat    PREROUTING  -m addrtype --dst-type LOCAL -j SKIFF     # mapped ports, arriving
//! nat    OUTPUT      -m addrtype --dst-type LOCAL -j SKIFF     # mapped ports, local (127.0.0.1 too)
//! nat    POSTROUTING -j SKIFF-POSTROUTING                      # egress, hairpin masquerade
//! filter FORWARD     -j SKIFF-FORWARD                          # the bridge's forwarding
//! filter INPUT       -j SKIFF-INPUT                            # no 127.0.0.0/8 from the bridge
//! ```
//!
//! Port rules in `SKIFF` carry `-m comment --comment skiff:<task>/<container>` and are deleted
//! by their exact spec as `iptables-save` prints it. Changes go through `iptables-restore
//! --noflush` (one transaction per table; a chain declared in it is flushed and refilled).

use super::{owner_of_comment, run, run_status, Mapping, OwnedRule, Spec, TAG};
use crate::net::{invalid, NetError};

const PORTS: &str = "SKIFF";
const POSTROUTING: &str = "SKIFF-POSTROUTING";
const FORWARD: &str = "SKIFF-FORWARD";
const INPUT: &str = "SKIFF-INPUT";

/// (table, built-in chain, the jump's spec)
const JUMPS: [(&str, &str, &str); 5] = [
    ("nat", "PREROUTING", "-m addrtype --dst-type LOCAL -j SKIFF"),
    ("nat", "OUTPUT", "-m addrtype --dst-type LOCAL -j SKIFF"),
    ("nat", "POSTROUTING", "-j SKIFF-POSTROUTING"),
    ("filter", "FORWARD", "-j SKIFF-FORWARD"),
    ("filter", "INPUT", "-j SKIFF-INPUT"),
];

const CHAINS: [(&str, &str); 4] = [
    ("nat", PORTS),
    ("nat", POSTROUTING),
    ("filter", FORWARD),
    ("filter", INPUT),
];

pub(super) fn base_restore(spec: &Spec) -> String {
    let (br, net) = (&spec.bridge, spec.subnet);
    format!(
        "*nat\n\
         :{POSTROUTING} - [0:0]\n\
         -A {POSTROUTING} -s {net} ! -o {br} -j MASQUERADE\n\
         -A {POSTROUTING} -s 127.0.0.0/8 -o {br} -j MASQUERADE\n\
         -A {POSTROUTING} -s {net} -o {br} -m conntrack --ctstate DNAT -j MASQUERADE\n\
         COMMIT\n\
         *filter\n\
         :{FORWARD} - [0:0]\n\
         -A {FORWARD} -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A {FORWARD} -o {br} -m conntrack --ctstate DNAT -j ACCEPT\n\
         -A {FORWARD} -i {br} -j ACCEPT\n\
         -A {FORWARD} -o {br} -j DROP\n\
         :{INPUT} - [0:0]\n\
         -A {INPUT} -i {br} -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP\n\
         COMMIT\n"
    )
}

/// A port rule's spec, as iptables-save prints it (after `-A `).
pub(super) fn rule_spec(owner: &str, m: &Mapping) -> String {
    format!(
        "{PORTS} -p {p} -m {p} --dport {} -m comment --comment \"{TAG}{owner}\" -j DNAT --to-destination {}:{}",
        m.host_port,
        m.addr,
        m.container_port,
        p = m.proto
    )
}

fn iptables(args: &[&str]) -> Result<bool, NetError> {
    let mut all = vec!["-w"];
    all.extend_from_slice(args);
    Ok(run_status("iptables", &all, None)?.0)
}

fn restore(text: &str) -> Result<(), NetError> {
    run("iptables-restore", &["-w", "--noflush"], Some(text)).map(drop)
}

fn chain_exists(table: &str, chain: &str) -> Result<bool, NetError> {
    iptables(&["-t", table, "-S", chain])
}

pub(super) fn ensure(spec: &Spec) -> Result<(), NetError> {
    if !chain_exists("nat", PORTS)? && !iptables(&["-t", "nat", "-N", PORTS])? {
        return Err(invalid(
            "firewall: iptables",
            format!("cannot create chain nat {PORTS}"),
        ));
    }
    restore(&base_restore(spec))?;
    for (table, chain, jump) in JUMPS {
        let jump: Vec<&str> = jump.split(' ').collect();
        let check = [&["-t", table, "-C", chain][..], &jump].concat();
        if !iptables(&check)? {
            let insert = [&["-t", table, "-I", chain, "1"][..], &jump].concat();
            if !iptables(&insert)? {
                return Err(invalid(
                    "firewall: iptables",
                    format!("cannot insert the jump {table} {chain} {}", jump.join(" ")),
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn add(owner: &str, maps: &[Mapping]) -> Result<(), NetError> {
    let mut text = String::from("*nat\n");
    for m in maps {
        text += &format!("-A {}\n", rule_spec(owner, m));
    }
    restore(&(text + "COMMIT\n"))
}

/// skiff's port rules in `iptables-save -t nat` output.
pub(super) fn parse_rules(save: &str) -> Vec<OwnedRule> {
    save.lines()
        .filter_map(|l| {
            let spec = l.strip_prefix("-A ")?;
            if !spec.starts_with(&format!("{PORTS} ")) {
                return None;
            }
            let rest = spec.split_once("--comment ")?.1;
            let comment = match rest.strip_prefix('"') {
                Some(q) => q.split('"').next()?,
                None => rest.split(' ').next()?,
            };
            Some(OwnedRule {
                owner: owner_of_comment(comment)?.to_string(),
                id: spec.to_string(),
            })
        })
        .collect()
}

pub(super) fn rules() -> Result<Vec<OwnedRule>, NetError> {
    Ok(parse_rules(&run("iptables-save", &["-t", "nat"], None)?))
}

pub(super) fn delete(rules: &[OwnedRule]) -> Result<(), NetError> {
    let mut text = String::from("*nat\n");
    for r in rules {
        text += &format!("-D {}\n", r.id);
    }
    restore(&(text + "COMMIT\n"))
}

pub(super) fn teardown() -> Result<(), NetError> {
    for (table, chain, jump) in JUMPS {
        let jump: Vec<&str> = jump.split(' ').collect();
        let delete = [&["-t", table, "-D", chain][..], &jump].concat();
        while iptables(&delete)? {}
    }
    for (table, chain) in CHAINS {
        if chain_exists(table, chain)?
            && !(iptables(&["-t", table, "-F", chain])? && iptables(&["-t", table, "-X", chain])?)
        {
            return Err(invalid(
                "firewall: iptables",
                format!("cannot remove chain {table} {chain}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Proto;
    use std::net::Ipv4Addr;

    #[test]
    fn base_chains_for_the_bridge() {
        let s = base_restore(&Spec {
            bridge: "skiff0".into(),
            subnet: "172.31.252.0/22".parse().unwrap(),
        });
        assert!(s.contains("-A SKIFF-POSTROUTING -s 172.31.252.0/22 ! -o skiff0 -j MASQUERADE\n"));
        assert!(s.contains("-A SKIFF-POSTROUTING -s 127.0.0.0/8 -o skiff0 -j MASQUERADE\n"));
        assert!(s.contains("*filter\n:SKIFF-FORWARD - [0:0]\n"));
        assert!(s.contains("-A SKIFF-INPUT -i skiff0 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP\n"));
        assert!(
            !s.contains(":SKIFF - "),
            "declaring SKIFF would flush the port rules"
        );
    }

    #[test]
    fn port_rules_round_trip_through_save_output() {
        let m = Mapping {
            proto: Proto::Tcp,
            host_port: 8080,
            addr: Ipv4Addr::new(172, 31, 252, 2),
            container_port: 80,
        };
        let spec = rule_spec("t1/web", &m);
        assert_eq!(
            spec,
            "SKIFF -p tcp -m tcp --dport 8080 -m comment --comment \"skiff:t1/web\" -j DNAT --to-destination 172.31.252.2:80"
        );
        let save = format!(
            "*nat\n:SKIFF - [0:0]\n-A PREROUTING -m addrtype --dst-type LOCAL -j SKIFF\n-A {spec}\n\
             -A SKIFF -p udp -m udp --dport 53 -m comment --comment skiff:t2/dns -j DNAT --to-destination 172.31.252.3:53\n\
             -A SKIFF -p tcp -m tcp --dport 1 -m comment --comment \"docker\" -j DNAT --to-destination 10.0.0.1:1\nCOMMIT\n"
        );
        let r = parse_rules(&save);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].owner.as_str(), r[0].id.as_str()),
            ("t1/web", spec.as_str())
        );
        assert_eq!(r[1].owner, "t2/dns");
    }
}
