//! The nftables backend: everything in table `ip skiff`, written as `nft -f -` scripts (one
//! transaction each) and read back as `nft -j` JSON.
//!
//! ```text
//! table ip skiff {
//!   chain prerouting  { type nat hook prerouting priority -100; fib daddr type local jump ports }
//!   chain output      { type nat hook output priority -100;     fib daddr type local jump ports }
//!   chain ports       { tcp dport 8080 dnat to 172.31.252.2:80 comment "skiff:<task>/<container>" ... }
//!   chain postrouting { type nat hook postrouting priority 100;
//!                       ip saddr SUBNET oifname != BRIDGE masquerade          # egress
//!                       ip saddr 127.0.0.0/8 oifname BRIDGE masquerade        # hairpin from 127.0.0.1
//!                       ip saddr SUBNET oifname BRIDGE ct status dnat masquerade }  # container → mapped port
//!   chain forward     { type filter hook forward priority 0;
//!                       oifname BRIDGE ct state established,related accept
//!                       oifname BRIDGE ct status dnat accept
//!                       iifname BRIDGE accept
//!                       oifname BRIDGE drop }                                 # nothing else routed in
//!   chain input       { type filter hook input priority 0;
//!                       iifname BRIDGE ip daddr 127.0.0.0/8 ct state != { established, related } drop }
//! }
//! ```
//!
//! `route_localnet` on the bridge (needed for the hairpin from 127.0.0.1) would also let a
//! container send packets to 127.0.0.1 through the bridge and reach the host's loopback-only
//! services (CVE-2020-8558 in kube-proxy): the input rule drops those; only replies of the
//! hairpin's own connections come in that way.
//!
//! The base chains are flushed and refilled in the same transaction that (re)creates them, so
//! `ensure` is idempotent and never leaves a moment without rules; `ports` is never flushed.

use super::{owner_of_comment, run, run_status, Mapping, OwnedRule, Spec, TAG};
use crate::net::{invalid, NetError};

const TABLE: &str = "ip skiff";

pub(super) fn base_script(spec: &Spec) -> String {
    let (br, net) = (&spec.bridge, spec.subnet);
    let mut s = format!("add table {TABLE}\n");
    for (chain, hook) in [
        ("prerouting", "type nat hook prerouting priority -100"),
        ("output", "type nat hook output priority -100"),
        ("postrouting", "type nat hook postrouting priority 100"),
        ("forward", "type filter hook forward priority 0"),
        ("input", "type filter hook input priority 0"),
    ] {
        s += &format!(
            "add chain {TABLE} {chain} {{ {hook}; policy accept; }}\nflush chain {TABLE} {chain}\n"
        );
    }
    s += &format!("add chain {TABLE} ports\n");
    for rule in [
        "prerouting fib daddr type local jump ports".to_string(),
        "output fib daddr type local jump ports".to_string(),
        format!("postrouting ip saddr {net} oifname != \"{br}\" masquerade"),
        format!("postrouting ip saddr 127.0.0.0/8 oifname \"{br}\" masquerade"),
        format!("postrouting ip saddr {net} oifname \"{br}\" ct status dnat masquerade"),
        format!("forward oifname \"{br}\" ct state established,related accept"),
        format!("forward oifname \"{br}\" ct status dnat accept"),
        format!("forward iifname \"{br}\" accept"),
        format!("forward oifname \"{br}\" drop"),
        format!("input iifname \"{br}\" ip daddr 127.0.0.0/8 ct state != {{ established, related }} drop"),
    ] {
        s += &format!("add rule {TABLE} {rule}\n");
    }
    s
}

pub(super) fn rule_line(owner: &str, m: &Mapping) -> String {
    format!(
        "add rule {TABLE} ports {} dport {} dnat to {}:{} comment \"{TAG}{owner}\"\n",
        m.proto, m.host_port, m.addr, m.container_port
    )
}

pub(super) fn ensure(spec: &Spec) -> Result<(), NetError> {
    run("nft", &["-f", "-"], Some(&base_script(spec))).map(drop)
}

pub(super) fn add(owner: &str, maps: &[Mapping]) -> Result<(), NetError> {
    let script: String = maps.iter().map(|m| rule_line(owner, m)).collect();
    run("nft", &["-f", "-"], Some(&script)).map(drop)
}

/// skiff's port rules in `nft -j list chain ip skiff ports` output.
pub(super) fn parse_rules(json: &str) -> Result<Vec<OwnedRule>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("nft -j output: {e}"))?;
    let items = v["nftables"]
        .as_array()
        .ok_or("nft -j output: no nftables array")?;
    Ok(items
        .iter()
        .filter_map(|i| {
            let r = i.get("rule")?;
            let owner = owner_of_comment(r.get("comment")?.as_str()?)?;
            Some(OwnedRule {
                owner: owner.to_string(),
                id: r.get("handle")?.as_u64()?.to_string(),
            })
        })
        .collect())
}

pub(super) fn rules() -> Result<Vec<OwnedRule>, NetError> {
    let args = ["-j", "list", "chain", "ip", "skiff", "ports"];
    let (ok, out, err) = run_status("nft", &args, None)?;
    if !ok {
        if err.contains("No such file or directory") {
            return Ok(Vec::new());
        }
        return Err(invalid(
            format!("firewall: nft {}", args.join(" ")),
            err.trim(),
        ));
    }
    parse_rules(&out).map_err(|e| invalid("firewall: nft", e))
}

pub(super) fn delete(rules: &[OwnedRule]) -> Result<(), NetError> {
    let script: String = rules
        .iter()
        .map(|r| format!("delete rule {TABLE} ports handle {}\n", r.id))
        .collect();
    run("nft", &["-f", "-"], Some(&script)).map(drop)
}

pub(super) fn teardown() -> Result<(), NetError> {
    // Adding first makes deleting a table that is not there a success, in one transaction.
    run(
        "nft",
        &["-f", "-"],
        Some(&format!("add table {TABLE}\ndelete table {TABLE}\n")),
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Proto;
    use std::net::Ipv4Addr;

    #[test]
    fn base_rules_for_the_bridge() {
        let s = base_script(&Spec {
            bridge: "skiff0".into(),
            subnet: "172.31.252.0/22".parse().unwrap(),
        });
        assert!(s.starts_with("add table ip skiff\n"));
        for line in [
            "add chain ip skiff prerouting { type nat hook prerouting priority -100; policy accept; }\nflush chain ip skiff prerouting\n",
            "add chain ip skiff ports\n",
            "add rule ip skiff output fib daddr type local jump ports\n",
            "add rule ip skiff postrouting ip saddr 172.31.252.0/22 oifname != \"skiff0\" masquerade\n",
            "add rule ip skiff postrouting ip saddr 127.0.0.0/8 oifname \"skiff0\" masquerade\n",
            "add rule ip skiff forward oifname \"skiff0\" drop\n",
            "add rule ip skiff input iifname \"skiff0\" ip daddr 127.0.0.0/8 ct state != { established, related } drop\n",
        ] {
            assert!(s.contains(line), "{line} missing from\n{s}");
        }
        assert!(
            !s.contains("flush chain ip skiff ports"),
            "port rules survive ensure"
        );
    }

    #[test]
    fn port_rule_text() {
        let m = Mapping {
            proto: Proto::Udp,
            host_port: 5353,
            addr: Ipv4Addr::new(172, 31, 252, 9),
            container_port: 53,
        };
        assert_eq!(
            rule_line("t1/dns", &m),
            "add rule ip skiff ports udp dport 5353 dnat to 172.31.252.9:53 comment \"skiff:t1/dns\"\n"
        );
    }

    #[test]
    fn rules_are_found_back_by_comment() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"chain": {"family": "ip", "table": "skiff", "name": "ports", "handle": 5}}, {"rule": {"family": "ip", "table": "skiff", "chain": "ports", "handle": 15, "comment": "skiff:t1/web", "expr": []}}, {"rule": {"family": "ip", "table": "skiff", "chain": "ports", "handle": 16, "expr": []}}, {"rule": {"handle": 17, "comment": "skiff:t2/db", "expr": []}}]}"#;
        let r = parse_rules(json).unwrap();
        assert_eq!(
            r,
            vec![
                OwnedRule {
                    owner: "t1/web".into(),
                    id: "15".into()
                },
                OwnedRule {
                    owner: "t2/db".into(),
                    id: "17".into()
                }
            ]
        );
    }
}
