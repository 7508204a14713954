//! Networking primitives (`src/net/`), driven through the hidden `skiff net-debug` command
//! inside a throwaway network namespace that plays the host: each test makes one (held by a
//! file, `unshare --net=FILE`), runs every skiff invocation in it through `nsenter`, and puts
//! its own sockets in it, or in the containers' namespaces, from threads that `setns`. The
//! real host's links, routes and firewall are never touched, and packets go only to
//! addresses inside namespaces the test made. Needs root, iproute2, nftables, iptables and
//! busybox (scripts/deps.sh).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{random_hex, stderr, stdout};
use serde_json::Value;

/// The "host"'s own address, on a veth pair whose both ends stay in the throwaway namespace.
const HOST_IP: &str = "198.51.100.1";
const GATEWAY: &str = "172.31.252.1";

/// Runs `f` on a thread inside the network namespace held by `ns`; sockets made there stay
/// in that namespace wherever they are used afterwards.
fn in_ns<T: Send>(ns: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(ns).unwrap();
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0,
                "setns {}",
                ns.display()
            );
            f()
        })
        .join()
        .unwrap()
    })
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

/// A throwaway "host" network namespace with its own skiff state directory.
struct Host {
    dir: PathBuf,
    ns: PathBuf,
    state: PathBuf,
    firewall: &'static str,
}

impl Host {
    fn new(firewall: &'static str) -> Host {
        let dir = std::env::temp_dir().join(format!("skiff-net-{}", random_hex()));
        std::fs::create_dir_all(&dir).unwrap();
        let ns = dir.join("host.netns");
        std::fs::write(&ns, "").unwrap();
        let out = run(Command::new("unshare")
            .arg(format!("--net={}", ns.display()))
            .arg("true"));
        assert!(out.status.success(), "unshare: {}", stderr(&out));
        let host = Host {
            state: dir.join("state"),
            dir,
            ns,
            firewall,
        };
        host.sh(&format!(
            "ip link set lo up && ip link add uplink0 type veth peer name uplink1 && \
             ip link set uplink0 up && ip link set uplink1 up && ip addr add {HOST_IP}/24 dev uplink0"
        ));
        host
    }

    /// A shell script in the host namespace; panics when it fails.
    fn sh(&self, script: &str) -> String {
        let out = run(Command::new("nsenter")
            .arg(format!("--net={}", self.ns.display()))
            .args(["sh", "-c", script]));
        assert!(
            out.status.success(),
            "{script}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.ns.display()))
            .arg(env!("CARGO_BIN_EXE_skiff"))
            .arg("--state-dir")
            .arg(&self.state)
            .args(["net-debug", "--firewall", self.firewall])
            .args(args)
            .env("SKIFF_LOG", "info")
            .stdin(Stdio::null());
        c
    }

    /// `skiff net-debug ARGS` in the host namespace; the JSON it prints. Panics on failure.
    fn skiff(&self, args: &[&str]) -> Value {
        let out = run(&mut self.command(args));
        assert!(out.status.success(), "net-debug {args:?}: {}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    }

    /// `skiff net-debug ARGS` that must fail; its stderr.
    fn skiff_fails(&self, args: &[&str]) -> String {
        let out = run(&mut self.command(args));
        assert!(
            !out.status.success(),
            "net-debug {args:?} succeeded: {}",
            stdout(&out)
        );
        stderr(&out)
    }

    /// What of skiff's is left in the host namespace: veths, the bridge, its addresses,
    /// firewall rules, namespace files, leases.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let links = self.sh("ip -o link show");
        left.extend(
            links
                .lines()
                .filter(|l| l.contains(": sk"))
                .map(|l| format!("link {l}")),
        );
        let addrs = self.sh("ip -o -4 addr show");
        left.extend(
            addrs
                .lines()
                .filter(|l| l.contains("172.31.25"))
                .map(|l| format!("address {l}")),
        );
        let nft = self.sh("nft list ruleset");
        if nft.contains("skiff") {
            left.push(format!("nft: {nft}"));
        }
        let ipt = self.sh("iptables-save");
        if ipt.contains("SKIFF") || ipt.contains("skiff") {
            left.push(format!("iptables: {ipt}"));
        }
        if let Ok(rd) = std::fs::read_dir(self.state.join("netns")) {
            left.extend(rd.map(|e| format!("netns file {:?}", e.unwrap().file_name())));
        }
        let status = self.skiff(&["status"]);
        for key in ["addresses", "ports", "links", "rules", "netns"] {
            if status[key].as_array().is_some_and(|a| !a.is_empty()) {
                left.push(format!("{key}: {}", status[key]));
            }
        }
        left
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = run(&mut self.command(&["teardown"]));
        if let Ok(rd) = std::fs::read_dir(self.state.join("netns")) {
            for e in rd.flatten() {
                let _ = nix_umount(&e.path());
            }
        }
        let _ = nix_umount(&self.ns);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nix_umount(p: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn ns_of(attachment: &Value) -> PathBuf {
    PathBuf::from(attachment["netns"].as_str().unwrap())
}

fn ip_of(attachment: &Value) -> String {
    attachment["ip"].as_str().unwrap().to_string()
}

/// A TCP server in `ns` on `port` that answers each connection with `reply` and closes.
fn tcp_server(ns: &Path, port: u16, reply: &'static str) {
    let l = in_ns(ns, || TcpListener::bind(("0.0.0.0", port)).unwrap());
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(reply.as_bytes());
        }
    });
}

/// A UDP server in `ns` on `port` that answers every datagram with `pong:` and the datagram.
fn udp_server(ns: &Path, port: u16) {
    let s = in_ns(ns, || UdpSocket::bind(("0.0.0.0", port)).unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&[b"pong:", &buf[..n]].concat(), from);
        }
    });
}

/// Connects from inside `ns` and reads what the server says.
fn tcp_get(ns: &Path, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    let c = in_ns(ns, || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(3))
    });
    let mut c = c.map_err(|e| format!("connect {addr}: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s)
        .map_err(|e| format!("read {addr}: {e}"))?;
    Ok(s)
}

/// Sends a datagram from inside `ns` and waits for the answer.
fn udp_ask(ns: &Path, addr: &str, msg: &str) -> Result<String, String> {
    let s = in_ns(ns, || UdpSocket::bind("0.0.0.0:0").unwrap());
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.send_to(msg.as_bytes(), addr)
        .map_err(|e| format!("send {addr}: {e}"))?;
    let mut buf = [0u8; 512];
    let n = s
        .recv(&mut buf)
        .map_err(|e| format!("recv from {addr}: {e}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn containers_on_the_bridge_reach_each_other() {
    let host = Host::new("nft");
    host.skiff(&["ensure"]);
    let a = host.skiff(&["attach", "--task", "aaaa01", "--container", "web"]);
    let b = host.skiff(&["attach", "--task", "bbbb02", "--container", "db"]);
    let (ip_a, ip_b) = (ip_of(&a), ip_of(&b));
    assert_ne!(ip_a, ip_b);
    for (att, ip) in [(&a, &ip_a), (&b, &ip_b)] {
        assert!(ip.starts_with("172.31.25"), "{att}");
        assert_ne!(ip, GATEWAY);
        let o: Vec<u8> = ip.split('.').map(|x| x.parse().unwrap()).collect();
        let mac = format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
        assert_eq!(att["mac"], mac.as_str());
        let inside = run(Command::new("nsenter")
            .arg(format!("--net={}", ns_of(att).display()))
            .args(["ip", "-o", "link", "show", "eth0"]));
        assert!(stdout(&inside).contains(&mac), "{}", stdout(&inside));
    }
    for (from, to) in [(&a, &ip_b), (&b, &ip_a), (&a, &GATEWAY.to_string())] {
        let out = run(Command::new("nsenter")
            .arg(format!("--net={}", ns_of(from).display()))
            .args(["busybox", "ping", "-c", "1", "-W", "3", to]));
        assert!(
            out.status.success(),
            "ping {to}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    tcp_server(&ns_of(&b), 7000, "from db\n");
    assert_eq!(
        tcp_get(&ns_of(&a), &format!("{ip_b}:7000")).unwrap(),
        "from db\n"
    );
    tcp_server(&ns_of(&a), 7001, "from web\n");
    assert_eq!(
        tcp_get(&ns_of(&b), &format!("{ip_a}:7001")).unwrap(),
        "from web\n"
    );
    // The host reaches containers directly too.
    assert_eq!(
        tcp_get(&host.ns, &format!("{ip_a}:7001")).unwrap(),
        "from web\n"
    );
}

fn mapped_ports_answer_everywhere(firewall: &'static str) {
    let host = Host::new(firewall);
    assert_eq!(host.skiff(&["ensure"])["firewall"], firewall);
    let web = host.skiff(&[
        "attach",
        "--task",
        "aaaa01",
        "--container",
        "web",
        "-p",
        "tcp:18080:80",
        "-p",
        "udp:18081:81",
    ]);
    let other = host.skiff(&["attach", "--task", "bbbb02", "--container", "client"]);
    let (web_ns, other_ns) = (ns_of(&web), ns_of(&other));
    tcp_server(&web_ns, 80, "web\n");
    udp_server(&web_ns, 81);
    let tcp_from = [
        (&host.ns, format!("{HOST_IP}:18080")),
        (&host.ns, "127.0.0.1:18080".to_string()),
        (&other_ns, format!("{HOST_IP}:18080")),
        (&other_ns, format!("{GATEWAY}:18080")),
        (&web_ns, format!("{HOST_IP}:18080")),
    ];
    for (ns, addr) in &tcp_from {
        assert_eq!(
            tcp_get(ns, addr).as_deref(),
            Ok("web\n"),
            "tcp {addr} from {}",
            ns.display()
        );
    }
    for (ns, addr) in [
        (&host.ns, format!("{HOST_IP}:18081")),
        (&host.ns, "127.0.0.1:18081".to_string()),
        (&other_ns, format!("{HOST_IP}:18081")),
    ] {
        assert_eq!(
            udp_ask(ns, &addr, "ping").as_deref(),
            Ok("pong:ping"),
            "udp {addr} from {}",
            ns.display()
        );
    }
    // The bridge's route_localnet (for the hairpin) must not open the host's loopback to
    // containers: one that routes 127.0.0.0/8 to the gateway (as NET_ADMIN allows, or a raw
    // frame with NET_RAW) reaches no loopback-only service.
    let probe = in_ns(&host.ns, || UdpSocket::bind("127.0.0.1:18091").unwrap());
    probe
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let out = run(Command::new("nsenter").arg(format!("--net={}", other_ns.display())).args([
        "sh",
        "-c",
        &format!(
            "sysctl -qw net.ipv4.conf.eth0.route_localnet=1 && ip route del local 127.0.0.1 dev lo table local && \
             ip route del local 127.0.0.0/8 dev lo table local && ip route add 127.0.0.0/8 via {GATEWAY} dev eth0"
        ),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let sender = in_ns(&other_ns, || UdpSocket::bind("0.0.0.0:0").unwrap());
    sender.send_to(b"escape", "127.0.0.1:18091").unwrap();
    let mut buf = [0u8; 64];
    assert!(
        probe.recv_from(&mut buf).is_err(),
        "a container reached the host's 127.0.0.1"
    );
    let local = in_ns(&host.ns, || UdpSocket::bind("127.0.0.1:0").unwrap());
    local.send_to(b"local", "127.0.0.1:18091").unwrap();
    assert_eq!(
        probe.recv_from(&mut buf).unwrap().0,
        5,
        "the probe itself works"
    );
    // The ports are the task's: another may not map them; its own detach frees them.
    let e = host.skiff_fails(&[
        "attach",
        "--task",
        "cccc03",
        "--container",
        "x",
        "-p",
        "tcp:18080:80",
    ]);
    assert!(
        e.contains("port tcp/18080: already mapped by task aaaa01"),
        "{e}"
    );
    let removed = host.skiff(&["detach", "--task", "aaaa01"]);
    assert_eq!(removed["rules"].as_array().unwrap().len(), 2, "{removed}");
    assert!(
        tcp_get(&host.ns, "127.0.0.1:18080").is_err(),
        "rule left after detach"
    );
    host.skiff(&["detach", "--task", "bbbb02"]);
    host.skiff(&["detach", "--task", "cccc03"]);
    host.skiff(&["teardown"]);
    assert_eq!(host.leftovers(), Vec::<String>::new());
}

#[test]
fn mapped_ports_answer_on_host_addresses_loopback_and_from_containers_nft() {
    mapped_ports_answer_everywhere("nft");
}

#[test]
fn mapped_ports_answer_on_host_addresses_loopback_and_from_containers_iptables() {
    mapped_ports_answer_everywhere("iptables");
}

fn host_ports(alloc: &Value, proto: &str) -> Vec<u64> {
    alloc["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["proto"] == proto)
        .map(|b| b["host_port"].as_u64().unwrap())
        .collect()
}

#[test]
fn fifty_dynamic_ports_are_distinct_and_free() {
    let host = Host::new("nft");
    // Ports taken on the "host" by others: TCP 40000-40009 listening, UDP 40000-40004 bound;
    // 40020 reserved.
    let listeners: Vec<TcpListener> = (40000..40010)
        .map(|p| in_ns(&host.ns, || TcpListener::bind(("0.0.0.0", p)).unwrap()))
        .collect();
    let udp: Vec<UdpSocket> = (40000..40005)
        .map(|p| in_ns(&host.ns, || UdpSocket::bind(("0.0.0.0", p)).unwrap()))
        .collect();
    let args = |owner: &str| {
        vec![
            "--port-range".to_string(),
            "40000-40099".into(),
            "--reserved-ports".into(),
            "40020".into(),
            "alloc".into(),
            "--owner".into(),
            owner.to_string(),
            "-p".into(),
            "tcp::80".into(),
            "-p".into(),
            "udp::53".into(),
        ]
    };
    let (mut tcp, mut udps) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..50 {
        let a = args(&format!("t{i:02}/c"));
        let out = host.skiff(&a.iter().map(String::as_str).collect::<Vec<_>>());
        for p in host_ports(&out, "tcp") {
            assert!((40010..=40099).contains(&p) && p != 40020, "tcp {p}");
            assert!(tcp.insert(p), "tcp {p} twice");
        }
        for p in host_ports(&out, "udp") {
            assert!((40005..=40099).contains(&p) && p != 40020, "udp {p}");
            assert!(udps.insert(p), "udp {p} twice");
        }
    }
    assert_eq!((tcp.len(), udps.len()), (50, 50));
    // A container port range gets a contiguous host range.
    let out = host.skiff(&[
        "--port-range",
        "40000-40099",
        "alloc",
        "--owner",
        "r/c",
        "-p",
        "tcp::9000-9004",
    ]);
    let r = host_ports(&out, "tcp");
    assert_eq!(r.len(), 5);
    assert!(r.windows(2).all(|w| w[1] == w[0] + 1), "{r:?}");
    assert!(r.iter().all(|p| !tcp.contains(p)));
    // Static ports: held by another task, in use on the host, reserved.
    let held = tcp.iter().next().unwrap().to_string();
    let e = host.skiff_fails(&["alloc", "--owner", "x/c", "-p", &format!("tcp:{held}:80")]);
    assert!(
        e.contains(&format!("port tcp/{held}: already mapped by task t")),
        "{e}"
    );
    let e = host.skiff_fails(&["alloc", "--owner", "x/c", "-p", "tcp:40003:80"]);
    assert!(e.contains("port tcp/40003: in use on the host"), "{e}");
    let e = host.skiff_fails(&["alloc", "--owner", "x/c", "-p", "tcp:22:80"]);
    assert!(e.contains("port tcp/22: reserved"), "{e}");
    drop((listeners, udp));
}

#[test]
fn concurrent_allocations_never_hand_out_one_address_or_port_twice() {
    let host = Host::new("nft");
    let children: Vec<_> = (0..40)
        .map(|i| {
            host.command(&[
                "--port-range",
                "41000-41999",
                "alloc",
                "--owner",
                &format!("t{i:02}/c"),
                "-p",
                "tcp::80",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let (mut ips, mut ports) = (BTreeSet::new(), BTreeSet::new());
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert!(
            ips.insert(v["ip"].as_str().unwrap().to_string()),
            "address twice: {v}"
        );
        for p in host_ports(&v, "tcp") {
            assert!(ports.insert(p), "port twice: {v}");
        }
    }
    assert_eq!((ips.len(), ports.len()), (40, 40));
    let status = host.skiff(&["status"]);
    assert_eq!(status["addresses"].as_array().unwrap().len(), 40);
    assert_eq!(status["ports"].as_array().unwrap().len(), 40);
}

fn removal_leaves_nothing(firewall: &'static str) {
    let host = Host::new(firewall);
    host.skiff(&["ensure"]);
    for (task, container, port) in [
        ("aaaa01", "web", "18080"),
        ("aaaa01", "side", "18082"),
        ("bbbb02", "web", "18084"),
    ] {
        host.skiff(&[
            "attach",
            "--task",
            task,
            "--container",
            container,
            "-p",
            &format!("tcp:{port}:80"),
            "-p",
            "udp::53",
        ]);
    }
    let status = host.skiff(&["status"]);
    assert_eq!(status["links"].as_array().unwrap().len(), 3, "{status}");
    assert_eq!(status["rules"].as_array().unwrap().len(), 6, "{status}");
    // One task's removal takes exactly its pieces.
    let removed = host.skiff(&["detach", "--task", "aaaa01"]);
    for (key, n) in [
        ("rules", 4),
        ("links", 2),
        ("netns", 2),
        ("addresses", 2),
        ("ports", 4),
    ] {
        assert_eq!(
            removed[key].as_array().unwrap().len(),
            n,
            "{key}: {removed}"
        );
    }
    let status = host.skiff(&["status"]);
    for key in ["links", "netns", "addresses"] {
        assert_eq!(status[key].as_array().unwrap().len(), 1, "{key}: {status}");
    }
    assert_eq!(
        status["rules"],
        serde_json::json!(["bbbb02/web", "bbbb02/web"])
    );
    // A crash's leftovers: reconcile keeps the tasks named, and removes the rest.
    host.skiff(&[
        "attach",
        "--task",
        "cccc03",
        "--container",
        "web",
        "-p",
        "tcp:18086:80",
    ]);
    let removed = host.skiff(&["reconcile", "--keep", "cccc03"]);
    assert_eq!(removed["links"].as_array().unwrap().len(), 1, "{removed}");
    assert_eq!(
        host.skiff(&["status"])["rules"],
        serde_json::json!(["cccc03/web"])
    );
    host.skiff(&["reconcile"]);
    let status = host.skiff(&["status"]);
    assert!(
        ["links", "netns", "addresses", "ports", "rules"]
            .iter()
            .all(|k| status[k].as_array().unwrap().is_empty()),
        "{status}"
    );
    // What is left is the shared part: bridge and base rules; teardown takes them too.
    assert!(host.sh("ip -o link show").contains("skiff0"));
    let shared = host.leftovers();
    assert!(
        shared.iter().any(|l| l.starts_with("address ")),
        "{shared:?}"
    );
    assert!(shared.iter().any(|l| l.starts_with(firewall)), "{shared:?}");
    host.skiff(&["teardown"]);
    assert_eq!(host.leftovers(), Vec::<String>::new());
    assert!(!host.sh("ip -o link show").contains("skiff0"));
}

#[test]
fn removal_and_reconcile_leave_nothing_nft() {
    removal_leaves_nothing("nft");
}

#[test]
fn removal_and_reconcile_leave_nothing_iptables() {
    removal_leaves_nothing("iptables");
}

// ---- network modes of whole tasks (skiff run) ----

impl Host {
    /// `skiff ARGS` as a user runs it, in the host namespace, with this host's state
    /// directory and a cgroup parent of its own.
    fn task_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.ns.display()))
            .arg(env!("CARGO_BIN_EXE_skiff"))
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .env("SKIFF_CGROUP_PARENT", self.cgroup_parent())
            .env("SKIFF_FIREWALL", self.firewall)
            .env("ECS_IMAGE_PULL_BEHAVIOR", "prefer-cached")
            .stdin(Stdio::null());
        c
    }

    /// The test image in this host's store, pulled in the real namespace (where the test
    /// registry is), so that tasks in the throwaway one find it cached.
    fn pull_busybox(&self) {
        let out = run(Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("--state-dir")
            .arg(&self.state)
            .args(["pull", "-q", &common::busybox()]));
        assert!(out.status.success(), "pull: {}", stderr(&out));
    }

    fn pull(&self, image: &str) {
        let out = run(Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("--state-dir")
            .arg(&self.state)
            .args(["pull", "-q", image]));
        assert!(out.status.success(), "pull {image}: {}", stderr(&out));
    }

    fn taskdef(&self, name: &str, json: &str) -> PathBuf {
        let p = self.dir.join(format!("{name}.json"));
        std::fs::write(&p, json.replace("$IMAGE", &common::busybox())).unwrap();
        p
    }

    /// One of the ECS agent's task definitions (tests/fixtures/taskdefs), its images taken
    /// from the test registry.
    fn fixture(&self, name: &str) -> PathBuf {
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/taskdefs/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
        .replace("127.0.0.1:51670", &common::registry());
        let p = self.dir.join(format!("{name}.json"));
        std::fs::write(&p, text).unwrap();
        p
    }

    fn inspect(&self, task: &str) -> Value {
        let out = run(&mut self.task_command(&["inspect", "--json", task]));
        assert!(out.status.success(), "inspect: {}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    }

    /// What skiff still holds for tasks in this host: per-task links, namespace files,
    /// addresses, port leases and rules (the bridge and the base rules are the host's, and
    /// stay), and task directories.
    fn task_leftovers(&self) -> Vec<String> {
        // The kernel tears a released veth pair down with its namespace, in the background:
        // give it a moment before counting what is left.
        let mut left = Vec::new();
        for _ in 0..100 {
            left = self.task_leftovers_now();
            if left.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        left
    }

    fn task_leftovers_now(&self) -> Vec<String> {
        let mut left = Vec::new();
        let status = self.skiff(&["status"]);
        for key in ["addresses", "ports", "links", "rules", "netns"] {
            if status[key].as_array().is_some_and(|a| !a.is_empty()) {
                left.push(format!("{key}: {}", status[key]));
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.state.join("tasks")) {
            left.extend(rd.map(|e| format!("task {:?}", e.unwrap().file_name())));
        }
        for d in self.cgroup_parent_dirs() {
            if d.exists() {
                left.push(format!("cgroup {}", d.display()));
            }
        }
        left
    }

    fn cgroup_parent(&self) -> String {
        format!(
            "skiff-net-{}",
            self.dir.file_name().unwrap().to_string_lossy()
        )
    }

    /// The cgroup parent of this host's tasks, per controller, as the common helpers see it.
    fn cgroup_parent_dirs(&self) -> Vec<PathBuf> {
        common::own_cgroup_dirs()
            .into_iter()
            .map(|d| d.join(self.cgroup_parent()))
            .collect()
    }
}

#[test]
fn a_bridge_task_gets_an_address_a_route_and_answers_from_the_host() {
    let host = Host::new("nft");
    host.pull_busybox();
    let td = host.taskdef(
        "br",
        r#"{"family":"br","networkMode":"bridge","containerDefinitions":[
            {"name":"web","image":"$IMAGE","memory":64,"stopTimeout":1,
             "command":["sh","-c","grep -q \"$(ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)\tweb\" /etc/hosts && ping -c1 -W5 172.31.252.1 >/dev/null && while true; do echo hello-bridge | nc -l -p 80; done"]}]}"#,
    );
    let out = run(&mut host.task_command(&["run", "-d", td.to_str().unwrap()]));
    assert!(out.status.success(), "run -d: {}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    let j = host.inspect(&id);
    let net = &j["containers"][0]["networks"][0];
    assert_eq!(net["networkMode"], "bridge", "{j}");
    assert_eq!(net["gateway"], GATEWAY);
    let ip = net["ipv4Addresses"][0].as_str().unwrap().to_string();
    assert!(ip.starts_with("172.31.25"), "{ip}");
    let mac = net["macAddress"].as_str().unwrap();
    assert!(mac.starts_with("02:42:ac:1f:"), "{mac}");
    // The host reaches the container at its address (once its listener is up).
    let got = (0..100).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        tcp_get(&host.ns, &format!("{ip}:80")).ok()
    });
    assert_eq!(
        got.as_deref(),
        Some("hello-bridge\n"),
        "{}",
        host.inspect(&id)
    );
    let out = run(&mut host.task_command(&["rm", "-f", &id]));
    assert!(out.status.success(), "rm: {}", stderr(&out));
    assert_eq!(host.task_leftovers(), Vec::<String>::new());
}

#[test]
fn awsvpc_containers_share_one_namespace_and_address() {
    let host = Host::new("nft");
    host.pull_busybox();
    let td = host.taskdef(
        "aws",
        r#"{"family":"aws","networkMode":"awsvpc","containerDefinitions":[
            {"name":"srv","image":"$IMAGE","memory":64,"essential":false,
             "command":["sh","-c","echo over-localhost | nc -l -p 8080"]},
            {"name":"cli","image":"$IMAGE","memory":64,
             "command":["sh","-c","for i in $(seq 50); do nc 127.0.0.1 8080 2>/dev/null && break; sleep 0.1; done; sleep 2"]}]}"#,
    );
    let child = host
        .task_command(&["run", td.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both containers have the one address of the task while it runs.
    let ips = (0..100).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        let out = run(&mut host.task_command(&["ps", "--json"]));
        let all: Value = serde_json::from_str(&stdout(&out)).ok()?;
        let t = all.as_array()?.first()?.clone();
        let ips: Vec<String> = t["containers"]
            .as_array()?
            .iter()
            .filter_map(|c| {
                c["networks"][0]["ipv4Addresses"][0]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        (ips.len() == 2).then_some(ips)
    });
    let out = common::wait_output(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("cli | over-localhost"),
        "{}",
        stdout(&out)
    );
    let ips = ips.expect("the task's containers and their address");
    assert_eq!(ips[0], ips[1]);
    assert_eq!(host.task_leftovers(), Vec::<String>::new());
}

#[test]
fn a_host_mode_task_uses_the_hosts_network() {
    let host = Host::new("nft");
    host.pull_busybox();
    let td = host.taskdef(
        "hostmode",
        r#"{"family":"hostmode","networkMode":"host","containerDefinitions":[
            {"name":"h","image":"$IMAGE","memory":64,"command":["sh","-c","ip -4 -o addr show uplink0"]}]}"#,
    );
    let out = run(&mut host.task_command(&["run", td.to_str().unwrap()]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(HOST_IP), "{}", stdout(&out));
    assert_eq!(host.task_leftovers(), Vec::<String>::new());
}

#[test]
fn bridge_starts_killed_at_any_point_leave_nothing_after_the_next_command() {
    let host = Host::new("nft");
    host.pull_busybox();
    let td = host.taskdef(
        "cut",
        r#"{"family":"cut","networkMode":"bridge","containerDefinitions":[
            {"name":"c","image":"$IMAGE","memory":64,"stopTimeout":1,"command":["sleep","300"]}]}"#,
    );
    for delay_ms in [0u64, 5, 10, 20, 30, 40, 60, 80, 120, 200] {
        let mut child = host
            .task_command(&["run", "-d", td.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = run(&mut host.task_command(&["ps", "-a", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let all: Value = serde_json::from_str(&stdout(&out)).unwrap();
    for t in all.as_array().unwrap() {
        let id = t["taskId"].as_str().unwrap();
        let out = run(&mut host.task_command(&["rm", "-f", id]));
        assert!(out.status.success(), "rm {id}: {}", stderr(&out));
    }
    // A start cut off between its lease and its veth leaves pieces no task directory
    // names: the next start's reconcile takes them.
    let left = host.task_leftovers();
    assert_eq!(left, Vec::<String>::new());
}

#[test]
fn a_hundred_bridge_tasks_started_and_stopped_concurrently_leave_nothing() {
    let host = Host::new("nft");
    host.pull_busybox();
    let td = host.taskdef(
        "many",
        r#"{"family":"many","networkMode":"bridge","containerDefinitions":[
            {"name":"c","image":"$IMAGE","memory":16,"stopTimeout":1,"command":["sleep","300"],
             "portMappings":[{"containerPort":80}]}]}"#,
    );
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let host = &host;
                let td = &td;
                s.spawn(move || {
                    let out = run(&mut host.task_command(&["run", "-d", td.to_str().unwrap()]));
                    assert!(out.status.success(), "run -d: {}", stderr(&out));
                    stdout(&out).trim().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // A hundred distinct addresses, all of them leased now.
    let status = host.skiff(&["status"]);
    let mut addrs: Vec<String> = status["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.to_string())
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 100, "{status}");
    // And a hundred distinct dynamic host ports, as inspect reports them.
    let mut ports: Vec<u64> = ids
        .iter()
        .map(|id| {
            host.inspect(id)["containers"][0]["networkBindings"][0]["hostPort"]
                .as_u64()
                .unwrap()
        })
        .collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 100);
    for chunk in ids.chunks(25) {
        std::thread::scope(|s| {
            for id in chunk {
                let host = &host;
                s.spawn(move || {
                    let out = run(&mut host.task_command(&["rm", "-f", id]));
                    assert!(out.status.success(), "rm {id}: {}", stderr(&out));
                });
            }
        });
    }
    assert_eq!(host.task_leftovers(), Vec::<String>::new());
}

#[test]
fn ecs_fixture_busybox_port_5180_answers_on_the_mapped_port() {
    let host = Host::new("nft");
    host.pull_busybox();
    let td = host.fixture("busybox-port-5180");
    let out = run(&mut host.task_command(&["run", "-d", td.to_str().unwrap()]));
    assert!(out.status.success(), "run -d: {}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    let b = &host.inspect(&id)["containers"][0]["networkBindings"][0];
    assert_eq!(b["hostPort"], 5180, "{b}");
    assert_eq!(b["containerPort"], 80);
    assert_eq!(b["protocol"], "tcp");
    // The container answers once; through the host's own address.
    let got = (0..100).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        tcp_get(&host.ns, &format!("{HOST_IP}:5180"))
            .ok()
            .filter(|s| !s.is_empty())
    });
    assert_eq!(got.as_deref(), Some("foobar\n"));
    let out = run(&mut host.task_command(&["rm", "-f", &id]));
    assert!(out.status.success(), "rm: {}", stderr(&out));
    assert_eq!(host.task_leftovers(), Vec::<String>::new());
}

#[test]
fn ecs_fixture_network_link_reaches_its_link_by_name() {
    let host = Host::new("nft");
    host.pull_busybox();
    host.pull(&format!("{}/nginx:latest", common::registry()));
    let td = host.fixture("network-link");
    let out = run(&mut host.task_command(&["run", td.to_str().unwrap()]));
    // The exit container fetches http://nginx and exits 42: the essential code of the task.
    assert_eq!(
        out.status.code(),
        Some(42),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("stand-in for nginx"),
        "{}",
        stdout(&out)
    );
    assert_eq!(host.task_leftovers(), Vec::<String>::new());
}

#[test]
fn a_mapped_port_answers_on_loopback_and_from_another_task() {
    let host = Host::new("nft");
    host.pull_busybox();
    let srv = host.taskdef(
        "srv",
        r#"{"family":"srv","networkMode":"bridge","containerDefinitions":[
            {"name":"s","image":"$IMAGE","memory":32,"stopTimeout":1,
             "portMappings":[{"containerPort":80,"hostPort":18080}],
             "command":["sh","-c","while true; do echo pong | nc -l -p 80; done"]}]}"#,
    );
    let out = run(&mut host.task_command(&["run", "-d", srv.to_str().unwrap()]));
    assert!(out.status.success(), "run -d: {}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    let got = (0..100).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        tcp_get(&host.ns, "127.0.0.1:18080")
            .ok()
            .filter(|s| !s.is_empty())
    });
    assert_eq!(got.as_deref(), Some("pong\n"), "hairpin through 127.0.0.1");
    // From a container of another task, through the host's address.
    let cli = host.taskdef(
        "cli",
        &format!(
            r#"{{"family":"cli","networkMode":"bridge","containerDefinitions":[
            {{"name":"c","image":"$IMAGE","memory":32,
             "command":["sh","-c","for i in $(seq 30); do r=$(nc {HOST_IP} 18080) && [ -n \"$r\" ] && echo got-$r && exit 0; sleep 0.2; done; exit 1"]}}]}}"#
        ),
    );
    let out = run(&mut host.task_command(&["run", cli.to_str().unwrap()]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("got-pong"), "{}", stdout(&out));
    let out = run(&mut host.task_command(&["rm", "-f", &id]));
    assert!(out.status.success(), "rm: {}", stderr(&out));
    assert_eq!(host.task_leftovers(), Vec::<String>::new());
}

#[test]
fn the_next_start_removes_network_pieces_no_task_owns() {
    let host = Host::new("nft");
    host.pull_busybox();
    // What a skiff killed in the middle of a start could leave: a lease, a namespace file, a
    // veth and a port rule for a task whose directory is gone.
    host.skiff(&["ensure"]);
    host.skiff(&[
        "attach",
        "--task",
        "deadbeefdeadbeefdeadbeefdeadbeef",
        "--container",
        "lost",
        "-p",
        "tcp:18090:80",
    ]);
    assert!(!host.task_leftovers_now().is_empty());
    let td = host.taskdef(
        "next",
        r#"{"family":"next","networkMode":"bridge","containerDefinitions":[
            {"name":"n","image":"$IMAGE","memory":32,"command":["true"]}]}"#,
    );
    let out = run(&mut host.task_command(&["run", td.to_str().unwrap()]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.task_leftovers(), Vec::<String>::new());
}

#[test]
fn awsvpc_and_udp_port_mappings_answer_from_the_host() {
    let host = Host::new("nft");
    host.pull_busybox();
    let td = host.taskdef(
        "awsports",
        r#"{"family":"awsports","networkMode":"awsvpc","containerDefinitions":[
            {"name":"tcp","image":"$IMAGE","memory":32,"stopTimeout":1,
             "portMappings":[{"containerPort":8080}],
             "command":["sh","-c","while true; do echo over-awsvpc | nc -l -p 8080; done"]},
            {"name":"udp","image":"$IMAGE","memory":32,"stopTimeout":1,
             "portMappings":[{"containerPort":5353,"protocol":"udp"}],
             "command":["sleep","300"]}]}"#,
    );
    let out = run(&mut host.task_command(&["run", "-d", td.to_str().unwrap()]));
    assert!(out.status.success(), "run -d: {}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    let j = host.inspect(&id);
    let b = &j["containers"][0]["networkBindings"][0];
    assert_eq!(
        b["hostPort"], 8080,
        "hostPort = containerPort in awsvpc: {j}"
    );
    let got = (0..100).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        tcp_get(&host.ns, &format!("{HOST_IP}:8080"))
            .ok()
            .filter(|s| !s.is_empty())
    });
    assert_eq!(got.as_deref(), Some("over-awsvpc\n"));
    // The image has no UDP server: the test answers from inside the task's namespace.
    let task_ns = host.state.join("netns").join(format!("{id}-task.eni"));
    let server = in_ns(&task_ns, || UdpSocket::bind(("0.0.0.0", 5353)).unwrap());
    let answer = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        server
            .send_to(&[b"pong:", &buf[..n]].concat(), from)
            .unwrap();
        // The socket goes here: nothing of the test keeps the namespace alive.
    });
    let got = udp_ask(&host.ns, &format!("{HOST_IP}:5353"), "ping").unwrap();
    answer.join().unwrap();
    assert_eq!(got, "pong:ping");
    let out = run(&mut host.task_command(&["rm", "-f", &id]));
    assert!(out.status.success(), "rm: {}", stderr(&out));
    assert_eq!(host.task_leftovers(), Vec::<String>::new());
}
