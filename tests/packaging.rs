//! packaging/: the install script stages the binary, the systemd units and the sample agent
//! config (keeping an existing config), and each unit passes `systemd-analyze verify` and
//! starts skiff with arguments skiff accepts.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const UNITS: [&str; 2] = ["skiff-agent.service", "skiff-server.service"];

fn mode(p: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o7777
}

#[test]
fn install_stages_the_binary_units_and_config_and_keeps_an_edited_config() {
    let env = Env::new();
    let root = env.dir.join("root");
    let install = |bin: &str| {
        Command::new("sh")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/install.sh"))
            .arg(bin)
            .env("DESTDIR", &root)
            .output()
            .unwrap()
    };
    let out = install(env!("CARGO_BIN_EXE_skiff"));
    assert!(out.status.success(), "{}", stderr(&out));
    let bin = root.join("usr/local/bin/skiff");
    assert_eq!(mode(&bin), 0o755);
    let v = Command::new(&bin).arg("--version").output().unwrap();
    assert!(stdout(&v).starts_with("skiff "), "{}", stdout(&v));
    for u in UNITS {
        assert_eq!(mode(&root.join("etc/systemd/system").join(u)), 0o644, "{u}");
    }
    assert_eq!(mode(&root.join("etc/skiff")), 0o700);
    let cfg = root.join("etc/skiff/agent.toml");
    assert_eq!(mode(&cfg), 0o600);

    std::fs::write(&cfg, "server = \"https://mine:8443\"\n").unwrap();
    let again = install(env!("CARGO_BIN_EXE_skiff"));
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("keeping the existing"));
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        "server = \"https://mine:8443\"\n"
    );

    let missing = install("/nonexistent/skiff");
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("no skiff binary at /nonexistent/skiff"));
}

/// `Key=value` of a unit's [Service] section.
fn service_key<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn units_verify_and_start_skiff_with_arguments_it_accepts() {
    let env = Env::new();
    let exe = env!("CARGO_BIN_EXE_skiff");
    for u in UNITS {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("packaging/systemd")
                .join(u),
        )
        .unwrap();
        // The binary where this build has it, so that verify can check it exists.
        let here = env.dir.join(u);
        std::fs::write(&here, text.replace("/usr/local/bin/skiff", exe)).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&here)
            .output()
            .expect("systemd-analyze (Debian's systemd package)");
        // systemd before 254 does not know DelegateSubgroup= and says so; nothing else may
        // be reported.
        let complaints: Vec<&str> = std::str::from_utf8(&out.stderr)
            .unwrap()
            .lines()
            .filter(|l| !l.contains("Unknown key 'DelegateSubgroup'"))
            .collect();
        assert!(
            out.status.success() && complaints.is_empty(),
            "{u}: {complaints:?}"
        );

        let exec = service_key(&text, "ExecStart");
        assert_eq!(exec.len(), 1, "{u}");
        let mut words = exec[0].split_whitespace();
        assert_eq!(words.next(), Some("/usr/local/bin/skiff"));
        let args: Vec<&str> = words.collect();
        let help = Command::new(exe)
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            help.status.success(),
            "{u}: skiff {args:?}: {}",
            stderr(&help)
        );
    }
    let agent = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd/skiff-agent.service"),
    )
    .unwrap();
    // What keeps tasks alive and placed across agent restarts.
    assert_eq!(service_key(&agent, "KillMode"), ["process"]);
    assert_eq!(service_key(&agent, "Delegate"), ["yes"]);
    assert_eq!(service_key(&agent, "DelegateSubgroup"), ["supervisor"]);
}
