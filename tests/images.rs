//! Pulling into the shared store: faults on the way, crashes, concurrency, pull behaviours,
//! layer formats, multi-platform indexes, and removing images.

mod common;
#[path = "common/oci.rs"]
mod oci;
#[path = "common/proxy.rs"]
mod proxy;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use proxy::{Faults, Proxy};

fn pull(env: &Env, image: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["pull"];
    args.extend_from_slice(extra);
    args.push(image);
    let child = env
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(120))
}

/// Everything under the store is consistent: no temporary leftovers, every image's layers
/// present.
fn store_consistent(env: &Env) {
    let tmp: Vec<_> = std::fs::read_dir(env.state.join("tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        tmp.is_empty(),
        "tmp leftovers: {:?}",
        tmp.iter().map(|e| e.path()).collect::<Vec<_>>()
    );
    for img in std::fs::read_dir(env.state.join("images"))
        .unwrap()
        .flatten()
    {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(img.path()).unwrap()).unwrap();
        for c in v["chain_ids"].as_array().unwrap() {
            let hex = c.as_str().unwrap().strip_prefix("sha256:").unwrap();
            assert!(
                env.state.join("layers").join(hex).is_dir(),
                "missing layer {hex}"
            );
        }
    }
}

#[test]
fn pull_survives_a_reset_mid_blob_and_500s() {
    let env = Env::new();
    let p = Proxy::start(&registry());
    p.set(Faults {
        truncate_next_big_blob: true,
        blob_500s: 0,
        ..Default::default()
    });
    let image = format!("{}/busybox:latest", p.addr);
    let out = pull(&env, &image, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("retrying"), "{}", stderr(&out));
    // 500s are retried too.
    let env2 = Env::new();
    p.set(Faults {
        blob_500s: 2,
        ..Default::default()
    });
    let out = pull(&env2, &image, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    store_consistent(&env);
    store_consistent(&env2);
    // The pulled image runs.
    let td = env.taskdef(
        "resumed",
        &format!(
            r#"{{"family":"resumed","networkMode":"none","containerDefinitions":[
        {{"name":"c","image":"{image}","memory":32,"command":["echo","ok"]}}]}}"#
        ),
    );
    let mut cmd = env.command(&[
        "run",
        "--pull-behavior",
        "prefer-cached",
        td.to_str().unwrap(),
    ]);
    let out = wait_output(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(stdout(&out), "ok\n", "{}", stderr(&out));
}

#[test]
fn corrupt_bytes_fail_the_pull_and_commit_nothing() {
    let env = Env::new();
    let p = Proxy::start(&registry());
    p.set(Faults {
        corrupt_big_blobs: true,
        ..Default::default()
    });
    let out = pull(&env, &format!("{}/busybox:latest", p.addr), &[]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("CannotPullContainerError") && err.contains("layer sha256:"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(env.state.join("layers")).unwrap().count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(env.state.join("images")).unwrap().count(),
        0
    );
    store_consistent(&env);
}

#[test]
fn kill_9_during_a_pull_then_the_same_pull_succeeds() {
    let env = Env::new();
    let p = Proxy::start(&registry());
    p.set(Faults {
        slow: true,
        ..Default::default()
    });
    let image = format!("{}/busybox:latest", p.addr);
    let mut child = env
        .command(&["pull", &image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once the download is under way (a layer directory is being written in tmp/).
    wait_for(Duration::from_secs(30), || {
        std::fs::read_dir(env.state.join("tmp"))
            .ok()?
            .flatten()
            .next()
            .map(|_| ())
    })
    .expect("the pull started");
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    // Nothing counts as present.
    assert_eq!(
        std::fs::read_dir(env.state.join("images")).unwrap().count(),
        0
    );
    let dirs = std::fs::read_dir(env.state.join("layers")).unwrap().count();
    assert_eq!(dirs, 0, "a half layer counts as present");
    p.set(Faults::default());
    let out = pull(&env, &image, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // prune clears the killed pull's debris.
    let out = env.command(&["prune"]).output().unwrap();
    assert!(out.status.success());
    store_consistent(&env);
}

#[test]
fn concurrent_pulls_fetch_each_layer_once() {
    let env = Env::new();
    let p = Proxy::start(&registry());
    p.set(Faults {
        slow: true,
        ..Default::default()
    });
    let image = format!("{}/busybox-layered:latest", p.addr);
    let children: Vec<_> = (0..3)
        .map(|_| {
            env.command(&["pull", "-q", &image])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = wait_output(c, Duration::from_secs(120));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let gets = p.blob_gets();
    let layer_gets: Vec<u32> = gets
        .iter()
        .filter(|(d, _)| d.len() > 20)
        .map(|(_, n)| *n)
        .collect();
    // The config blob is read by each pull; every layer was downloaded exactly once.
    let cfg = gets.values().filter(|n| **n == 3).count();
    assert_eq!(cfg, 1, "config read by each pull: {gets:?}");
    assert_eq!(
        layer_gets.iter().filter(|n| **n == 1).count(),
        2,
        "{gets:?}"
    );
    store_consistent(&env);
}

#[test]
fn pull_behaviours() {
    let env = Env::new();
    let p = Proxy::start(&registry());
    let image = format!("{}/busybox:latest", p.addr);
    let td = env.taskdef(
        "behave",
        &format!(
            r#"{{"family":"behave","networkMode":"none","containerDefinitions":[
        {{"name":"c","image":"{image}","memory":32,"command":["echo","ran"]}}]}}"#
        ),
    );
    let run = |behavior: &str| {
        let mut cmd = env.command(&["run", "--pull-behavior", behavior, td.to_str().unwrap()]);
        wait_output(
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
            Duration::from_secs(60),
        )
    };
    // Nothing cached yet: once pulls.
    assert_eq!(stdout(&run("once")), "ran\n");
    let gets_after_first = p.blob_gets().values().sum::<u32>();
    // once and prefer-cached do not touch the registry again.
    assert_eq!(stdout(&run("once")), "ran\n");
    assert_eq!(stdout(&run("prefer-cached")), "ran\n");
    assert_eq!(p.blob_gets().values().sum::<u32>(), gets_after_first);
    // The registry goes away: default falls back to the cache, always fails.
    drop(p);
    std::thread::sleep(Duration::from_millis(50));
    let out = run("default");
    assert_eq!(stdout(&out), "ran\n", "{}", stderr(&out));
    assert!(
        stderr(&out).contains("using the cached image"),
        "{}",
        stderr(&out)
    );
    let out = run("always");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("CannotPullContainerError"),
        "{}",
        stderr(&out)
    );
    let out = env
        .command(&["run", "--pull-behavior", "sometimes", td.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn zstd_and_plain_tar_layers() {
    let env = Env::new();
    let reg = registry();
    let tar = oci::busybox_layer();
    let cases = [
        (
            "zstd",
            oci::zstd(&tar),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        (
            "plain",
            tar.clone(),
            "application/vnd.oci.image.layer.v1.tar",
        ),
        // A Docker "tar" that is gzip-compressed anyway: the magic bytes decide.
        (
            "sniffed",
            oci::gzip(&tar),
            "application/vnd.docker.image.rootfs.diff.tar",
        ),
    ];
    for (tag, blob, mt) in cases {
        oci::push_image(&reg, "formats", Some(tag), arch(), &tar, &blob, mt);
        let image = format!("{reg}/formats:{tag}");
        let td = env.taskdef(
            tag,
            &format!(
                r#"{{"family":"f","networkMode":"none","containerDefinitions":[
            {{"name":"c","image":"{image}","memory":32,"command":["cat","/etc/flavour"]}}]}}"#
            ),
        );
        let out = env.run(&td);
        assert_eq!(stdout(&out), "zstd layer\n", "{tag}: {}", stderr(&out));
    }
    // An encrypted layer (content not present here yet): a clear rejection.
    let tar = oci::layer_tar(&[("secret", 0o600, b"sealed")]);
    oci::push_image(
        &reg,
        "formats",
        Some("enc"),
        arch(),
        &tar,
        &oci::gzip(&tar),
        "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
    );
    let out = pull(&env, &format!("{reg}/formats:enc"), &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("encrypted layers are not supported"),
        "{}",
        stderr(&out)
    );
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn multi_platform_index_picks_the_right_manifest() {
    let env = Env::new();
    let reg = registry();
    let tar = oci::busybox_layer();
    let gz = oci::gzip(&tar);
    let mt = "application/vnd.oci.image.layer.v1.tar+gzip";
    let mut entries = Vec::new();
    for (a, variant) in [
        (arch(), None),
        ("arm64", Some("v8")),
        ("arm", Some("v6")),
        ("s390x", None),
    ] {
        if a == arch() && variant.is_some() {
            continue;
        }
        let (m, d) = oci::push_image(&reg, "multi", None, a, &tar, &gz, mt);
        let v = variant
            .map(|v| format!(r#","variant":"{v}""#))
            .unwrap_or_default();
        entries.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":{},"platform":{{"architecture":"{a}","os":"linux"{v}}}}}"#,
            m.len()
        ));
    }
    // An attestation manifest (unknown/unknown) never matches.
    let (m, d) = oci::push_image(&reg, "multi", None, "unknown", &tar, &gz, mt);
    entries.insert(0, format!(
        r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":{},"platform":{{"architecture":"unknown","os":"unknown"}}}}"#,
        m.len()
    ));
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        entries.join(",")
    );
    oci::push_manifest(
        &reg,
        "multi",
        "latest",
        "application/vnd.oci.image.index.v1+json",
        index.as_bytes(),
    );

    let image = format!("{reg}/multi:latest");
    let td = env.taskdef(
        "multi",
        &format!(
            r#"{{"family":"m","networkMode":"none","containerDefinitions":[
        {{"name":"c","image":"{image}","memory":32,"command":["echo","native"]}}]}}"#
        ),
    );
    assert_eq!(stdout(&env.run(&td)), "native\n");
    let platform_of = |p: &str| {
        let out = pull(&env, &image, &["--platform", p]);
        assert_eq!(out.status.code(), Some(0), "{p}: {}", stderr(&out));
        let out = env.command(&["images", "--json"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(platform_of("linux/arm64").contains(r#""platform":"linux/arm64""#));
    // arm/v7 falls back to the v6 image.
    assert!(platform_of("linux/arm/v7").contains(r#""platform":"linux/arm/v7""#));
    let out = pull(&env, &image, &["--platform", "linux/riscv64"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("no image for platform linux/riscv64"),
        "{}",
        stderr(&out)
    );
    let out = pull(&env, &image, &["--platform", "nonsense"]);
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn images_rmi_and_prune_never_remove_what_a_task_uses() {
    let env = Env::new();
    let bb = busybox();
    let layered = format!("{}/busybox-layered:latest", registry());
    for i in [&bb, &layered] {
        assert!(pull(&env, i, &["-q"]).status.success());
    }
    let list = env.command(&["images"]).output().unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains(&bb) && text.contains(&layered), "{text}");
    // A running task holds busybox.
    let td = env.taskdef(
        "hold",
        &format!(
            r#"{{"family":"hold","networkMode":"none","containerDefinitions":[
        {{"name":"c","image":"{bb}","memory":32,"stopTimeout":1,"command":["sleep","30"]}}]}}"#
        ),
    );
    let child = env.spawn(&td, &["--pull-behavior", "prefer-cached"]);
    env.task_cgroup_file(Some("c"), "cgroup.procs");
    let out = env.command(&["rmi", &bb]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by a running task"));
    let out = env
        .command(&["prune", "--auto", "--min-age", "0"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let json =
        String::from_utf8_lossy(&env.command(&["images", "--json"]).output().unwrap().stdout)
            .into_owned();
    assert!(json.contains(&bb), "in-use image kept: {json}");
    assert!(!json.contains(&layered), "unused image removed: {json}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_output(child, Duration::from_secs(60));
    // Unused now: rmi removes it and its layer.
    let out = env.command(&["rmi", &bb]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layers: Vec<_> = std::fs::read_dir(env.state.join("layers"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        layers.is_empty(),
        "{:?}",
        layers.iter().map(|e| e.path()).collect::<Vec<_>>()
    );
    let out = env.command(&["rmi", &bb]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such image"));
}

/// A cleanup that comes while a task is between finding its image in the store and writing
/// the record that names it waits for the task, then sees the image in use. The task is
/// stopped (SIGSTOP) in that window, found by its SKIFF_TIMINGS marks: `image_ready` written,
/// `prepared` (right after the record) not yet.
#[test]
fn a_cleanup_during_a_task_start_leaves_the_image_it_starts_with() {
    let env = Env::new();
    let bb = busybox();
    assert!(pull(&env, &bb, &["-q"]).status.success());
    let td = env.taskdef(
        "window",
        &format!(
            r#"{{"family":"window","networkMode":"none","containerDefinitions":[
        {{"name":"c","image":"{bb}","memory":32,"stopTimeout":1,"command":["sleep","30"]}}]}}"#
        ),
    );
    let marks = env.state.join("marks");
    for attempt in 0..30 {
        let _ = std::fs::remove_file(&marks);
        let run = env
            .command(&[
                "run",
                "-d",
                "--pull-behavior",
                "prefer-cached",
                td.to_str().unwrap(),
            ])
            .env("SKIFF_TIMINGS", &marks)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = run.id() as i32;
        let seen = |phase: &str| {
            std::fs::read_to_string(&marks)
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with(&format!("{pid} {phase} ")))
        };
        // Looked for closely: the window is a few milliseconds.
        let t0 = std::time::Instant::now();
        while !seen("image_ready") && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_micros(200));
        }
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        assert!(seen("image_ready"), "no image_ready mark");
        let in_window = !seen("prepared");
        let prune = in_window.then(|| {
            env.command(&["prune", "--auto", "--min-age", "0"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        });
        if prune.is_some() {
            std::thread::sleep(Duration::from_millis(500));
        }
        unsafe { libc::kill(pid, libc::SIGCONT) };
        let out = wait_output(run, Duration::from_secs(60));
        assert!(out.status.success(), "run -d: {}", stderr(&out));
        let task = stdout(&out).trim().to_string();
        let caught = prune.map(|prune| {
            let p = wait_output(prune, Duration::from_secs(60));
            assert!(p.status.success(), "prune: {}", stderr(&p));
            let ps = stdout(&env.output(&["ps", "--json"]));
            assert!(ps.contains(&task) && ps.contains("RUNNING"), "{ps}");
            assert!(
                listed(&env).contains(&bb),
                "the image of the starting task was removed: {:?}",
                listed(&env)
            );
            store_consistent(&env);
        });
        let rm = env.command(&["rm", "-f", &task]).output().unwrap();
        assert!(rm.status.success(), "rm: {}", stderr(&rm));
        if caught.is_some() {
            return;
        }
        // Stopped too late (the record was written already): again.
        eprintln!("attempt {attempt}: stopped after the window");
    }
    panic!("never stopped the start inside its window");
}

/// One line per path: type, mode, owner, link target or content hash.
fn tree_listing(root: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if ft.is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else if ft.is_file() {
                format!("file {}", oci::sha(&std::fs::read(&p).unwrap()))
            } else if ft.is_fifo() {
                "fifo".into()
            } else if ft.is_char_device() {
                format!("char {:x}", m.rdev())
            } else {
                "other".into()
            };
            let mode = if ft.is_symlink() {
                0
            } else {
                m.mode() & 0o7777
            };
            out.push(format!("{rel} {what} {mode:o} {}:{}", m.uid(), m.gid()));
        }
    }
    out.sort();
    out
}

#[test]
fn unpacked_root_matches_umoci() {
    if std::process::Command::new("umoci")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("umoci is missing: scripts/deps.sh installs it");
    }
    let env = Env::new();
    let reg = registry();
    // Three layers: busybox, special entries, and one that deletes and hides.
    let base = oci::busybox_layer();
    let special = oci::special_layer();
    let third = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, "etc/.wh.flavour", std::io::empty())
            .unwrap();
        let mut h2 = h.clone();
        b.append_data(&mut h2, "srv/empty/.wh..wh..opq", std::io::empty())
            .unwrap();
        let mut h3 = h.clone();
        h3.set_size(4);
        b.append_data(&mut h3, "srv/empty/new", &b"new\n"[..])
            .unwrap();
        b.into_inner().unwrap()
    };
    let layers: Vec<(Vec<u8>, Vec<u8>)> = [base, special, third]
        .into_iter()
        .map(|t| {
            let gz = oci::gzip(&t);
            (t, gz)
        })
        .collect();
    let layout = env.dir.join("layout");
    oci::write_layout(&layout, arch(), &layers);
    let pushed = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rootfs-tools/oci-push.sh"
    ))
    .arg(&layout)
    .arg(format!("{reg}/compare:latest"))
    .output()
    .unwrap();
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    let out = pull(&env, &format!("{reg}/compare:latest"), &["-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // skiff's layers stacked by overlayfs, read-only.
    let v: serde_json::Value =
        serde_json::from_slice(&env.command(&["images", "--json"]).output().unwrap().stdout)
            .unwrap();
    assert_eq!(v["layers"], 3);
    let mut lowers: Vec<String> = std::fs::read_dir(env.state.join("images"))
        .unwrap()
        .flatten()
        .flat_map(|e| {
            let img: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
            img["chain_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    env.state
                        .join("layers")
                        .join(c.as_str().unwrap().strip_prefix("sha256:").unwrap())
                        .display()
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    lowers.reverse();
    let merged = env.dir.join("merged");
    std::fs::create_dir(&merged).unwrap();
    let mount = std::process::Command::new("mount")
        .args([
            "-t",
            "overlay",
            "overlay",
            "-o",
            &format!("ro,lowerdir={}", lowers.join(":")),
        ])
        .arg(&merged)
        .status()
        .unwrap();
    assert!(mount.success());
    let ours = tree_listing(&merged);
    std::process::Command::new("umount")
        .arg(&merged)
        .status()
        .unwrap();

    let bundle = env.dir.join("bundle");
    let st = std::process::Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let theirs = tree_listing(&bundle.join("rootfs"));
    let only_ours: Vec<_> = ours.iter().filter(|l| !theirs.contains(l)).collect();
    let only_theirs: Vec<_> = theirs.iter().filter(|l| !ours.contains(l)).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "skiff only: {only_ours:#?}\numoci only: {only_theirs:#?}"
    );
    assert!(
        ours.iter()
            .any(|l| l.starts_with("srv/app file") && l.contains(" 4755 ")),
        "{ours:#?}"
    );
    assert!(!ours.iter().any(|l| l.starts_with("etc/flavour")));
}

#[test]
fn a_full_disk_is_a_clean_error_and_leaves_the_store_consistent() {
    let env = Env::new();
    let small = env.dir.join("small");
    std::fs::create_dir(&small).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "skiff-test-full"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "--state-dir",
            small.to_str().unwrap(),
            "pull",
            "-q",
            &busybox(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let layers = std::fs::read_dir(small.join("layers"))
        .map(|d| d.count())
        .unwrap_or(0);
    let images = std::fs::read_dir(small.join("images"))
        .map(|d| d.count())
        .unwrap_or(0);
    let tmp = std::fs::read_dir(small.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    std::process::Command::new("umount")
        .arg(&small)
        .status()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!((layers, images, tmp), (0, 0, 0), "nothing half-written");
}

/// `skiff CMD...` with the cleanup variables `vars`, to its end.
fn with_vars(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    let mut c = env.command(args);
    for v in [
        "ECS_DISABLE_IMAGE_CLEANUP",
        "ECS_IMAGE_CLEANUP_INTERVAL",
        "ECS_IMAGE_MINIMUM_CLEANUP_AGE",
        "ECS_NUM_IMAGES_DELETE_PER_CYCLE",
    ] {
        c.env_remove(v);
    }
    for (k, v) in vars {
        c.env(k, v);
    }
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(120))
}

/// Sets an image record's pull and last-use times to `secs_ago` seconds ago.
fn age_image(env: &Env, image: &str, secs_ago: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let list = env.output(&["images", "--json"]);
    let digest = stdout(&list)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| {
            v["references"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == image)
        })
        .unwrap_or_else(|| panic!("{image} not listed: {}", stdout(&list)))["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let p = env
        .state
        .join("images")
        .join(format!("{}.json", digest.strip_prefix("sha256:").unwrap()));
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["pulled_at"] = (now - secs_ago).into();
    v["last_used"] = (now - secs_ago).into();
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn listed(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = stdout(&env.output(&["images", "--json"]))
        .lines()
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["references"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn automatic_image_cleanup_follows_the_ecs_policy() {
    let env = Env::new();
    let reg = registry();
    let off = [("ECS_DISABLE_IMAGE_CLEANUP", "true")];
    let gc = |i: usize| format!("{reg}/gc:{i}");
    for i in 0..7 {
        let content = format!("image {i}\n");
        let tar = oci::layer_tar(&[("which", 0o644, content.as_bytes())]);
        let tag = i.to_string();
        oci::push_image(
            &reg,
            "gc",
            Some(&tag),
            arch(),
            &tar,
            &oci::gzip(&tar),
            "application/vnd.oci.image.layer.v1.tar+gzip",
        );
        let out = with_vars(&env, &["pull", "-q", &gc(i)], &off);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // A detached task that ran and stopped, still listed: its image counts as in use.
    let bb = busybox();
    let td = env.taskdef(
        "once",
        &format!(
            r#"{{"family":"once","networkMode":"none","containerDefinitions":[
        {{"name":"c","image":"{bb}","memory":32,"command":["true"]}}]}}"#
        ),
    );
    let out = with_vars(&env, &["run", "-d", td.to_str().unwrap()], &off);
    assert!(out.status.success(), "{}", stderr(&out));
    let task = stdout(&out).trim().to_string();
    wait_for(Duration::from_secs(30), || {
        stdout(&env.output(&["ps", "-a"]))
            .contains("STOPPED")
            .then_some(())
    })
    .expect("the task stops");
    assert!(
        !env.state.join("locks/image-cleanup").exists(),
        "disabled: no cycle ran"
    );
    // Two hours old, gc:5 the least recently used; gc:6 stays young.
    age_image(&env, &bb, 9000);
    for i in 0..6 {
        age_image(&env, &gc(i), 7200 + 60 * i as u64);
    }
    let mut all: Vec<String> = (0..7).map(gc).chain([bb.clone()]).collect();
    all.sort();
    assert_eq!(listed(&env), all);

    // No stamp yet: the first pull with cleanup on starts the clock, no cycle.
    let log = env.state.join("image-cleanup.log");
    let stamp = env.state.join("locks/image-cleanup");
    let out = with_vars(&env, &["pull", "-q", &gc(6)], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stamp.exists() && !log.exists(), "the clock starts");
    assert_eq!(listed(&env), all);
    // 31 minutes later (the stamp set back) the next pull starts a cycle in the background
    // after its work. Five images at most: gc:1..=5.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(&stamp, (now - 31 * 60).to_string()).unwrap();
    let out = with_vars(&env, &["pull", "-q", &gc(6)], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = wait_for(Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("layers removed").then_some(text)
    })
    .expect("the cycle reports");
    assert_eq!(report.matches("deleted sha256:").count(), 5, "{report}");
    let mut kept = vec![gc(0), gc(6), bb.clone()];
    kept.sort();
    assert_eq!(
        listed(&env),
        kept,
        "in-use, young and the sixth old image stay"
    );
    let layers = std::fs::read_dir(env.state.join("layers")).unwrap().count();
    // busybox's layers, gc:0's and gc:6's (a layer and its size file each).
    assert!(
        layers < 2 * 7,
        "removed images' layers are gone: {layers} entries"
    );

    // From here on the log tells whether a command started a cycle: only then is it made.
    std::fs::remove_file(&log).unwrap();
    let no_cycle = |why: &str, out: std::process::Output| {
        assert!(out.status.success(), "{why}: {}", stderr(&out));
        assert!(!log.exists(), "{why}: a cycle was started");
        assert_eq!(listed(&env), kept, "{why}");
    };
    // The stamp says a cycle just ran: nothing more goes before the interval passed.
    no_cycle(
        "the stamp holds the next cycle back",
        with_vars(&env, &["pull", "-q", &gc(6)], &[]),
    );
    // 31 minutes ago: due under the default 30m, not under a configured 45m, nor when disabled.
    std::fs::write(&stamp, (now - 31 * 60).to_string()).unwrap();
    no_cycle(
        "45m interval: not due yet",
        with_vars(
            &env,
            &["pull", "-q", &gc(6)],
            &[("ECS_IMAGE_CLEANUP_INTERVAL", "45m")],
        ),
    );
    no_cycle("disabled", with_vars(&env, &["pull", "-q", &gc(6)], &off));
    // A bad setting is a warning naming the variable; the command itself succeeds.
    let out = with_vars(
        &env,
        &["pull", "-q", &gc(6)],
        &[("ECS_NUM_IMAGES_DELETE_PER_CYCLE", "none")],
    );
    assert!(
        stderr(&out).contains("ECS_NUM_IMAGES_DELETE_PER_CYCLE=\"none\""),
        "{}",
        stderr(&out)
    );
    no_cycle("a bad setting", out);
    // `skiff run` starts the due cycle too, once its task has run (a foreground task leaves no
    // record): gc:0 goes, busybox stays for the stopped task still listed.
    let out = with_vars(&env, &["run", td.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(Duration::from_secs(60), || {
        let t: u64 = std::fs::read_to_string(&stamp).ok()?.trim().parse().ok()?;
        (t >= now).then_some(())
    })
    .expect("the cycle renews the stamp");
    let mut kept = vec![gc(6), bb.clone()];
    kept.sort();
    assert_eq!(listed(&env), kept);
    store_consistent(&env);
    let out = env.output(&["rm", &task]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn unpack_caps_are_configurable() {
    let env = Env::new();
    let reg = registry();
    let tar = oci::layer_tar(&[
        ("one", 0o644, b"1"),
        ("two", 0o644, b"2"),
        ("three", 0o644, b"3"),
        ("a-longer-name", 0o644, b"4"),
    ]);
    oci::push_image(
        &reg,
        "caps",
        Some("four"),
        arch(),
        &tar,
        &oci::gzip(&tar),
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    let image = format!("{reg}/caps:four");
    let refused = |out: std::process::Output, needle: &str| {
        assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{needle}: {}", stderr(&out));
        store_consistent(&env);
        assert!(listed(&env).is_empty());
    };
    let mut c = env.command(&["pull", "-q", &image]);
    let out = c.env("SKIFF_UNPACK_MAX_ENTRIES", "3").output().unwrap();
    refused(out, "exceeds max_entries (3)");
    refused(
        pull(&env, &image, &["--unpack-max-path-len", "8"]),
        "exceeds max_path_len (8)",
    );
    refused(
        pull(&env, &image, &["--unpack-max-bytes", "2048"]),
        "exceeds max_bytes (2048)",
    );
    let out = pull(&env, &image, &["--unpack-max-entries", "0"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--unpack-max-entries"),
        "{}",
        stderr(&out)
    );
    let out = pull(&env, &image, &["-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listed(&env), vec![image.clone()]);
}

#[test]
fn pull_progress_bars_lines_and_quiet() {
    let image = format!("{}/busybox-layered:latest", registry());
    // Not a terminal: a plain line per event, then a summary; the digest on stdout.
    let env = Env::new();
    let out = pull(&env, &image, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let started = err.matches(": downloading ").count();
    assert!(started >= 2, "a line per layer: {err}");
    assert_eq!(err.matches(": done\n").count(), started, "{err}");
    assert!(err.contains(&format!("pulled {image} (sha256:")), "{err}");
    assert!(
        !err.contains('\x1b'),
        "no terminal codes in a pipe: {err:?}"
    );
    let digest = stdout(&out).trim().to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let again = pull(&env, &image, &[]);
    assert_eq!(
        stderr(&again).matches(": already present\n").count(),
        started,
        "{}",
        stderr(&again)
    );
    // --quiet: the digest only.
    let env = Env::new();
    let out = pull(&env, &image, &["--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out).trim(), digest);
    // A terminal (script(1) gives one): bars redrawn in place, full when done.
    let env = Env::new();
    let cmd = format!(
        "{} --state-dir {} pull {image}",
        env!("CARGO_BIN_EXE_skiff"),
        env.state.display()
    );
    let child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(120));
    assert!(out.status.success(), "{}", stderr(&out));
    let tty = stdout(&out);
    assert!(tty.contains("\x1b[2K"), "{tty:?}");
    assert!(
        tty.matches(&format!("[{}]", "=".repeat(30))).count() >= started,
        "a full bar per layer: {tty:?}"
    );
    assert!(!tty.contains(": downloading "), "{tty:?}");
}
