//! Building images in the test and pushing them with curl: for layer formats and indexes that
//! rootfs-tools does not make.

#![allow(dead_code)]

use std::io::Write;
use std::process::Command;

use sha2::{Digest as _, Sha256};

pub fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(b)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn curl(args: &[&str], body: Option<&[u8]>) -> String {
    let mut c = Command::new("curl");
    c.args(["-fsS", "-o", "/dev/null", "-D", "-"]).args(args);
    if body.is_some() {
        c.args(["--data-binary", "@-"])
            .stdin(std::process::Stdio::piped());
    }
    c.stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(b) = body {
        child.stdin.take().unwrap().write_all(b).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "curl {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn push_blob(registry: &str, repo: &str, body: &[u8]) -> String {
    let d = sha(body);
    let headers = curl(
        &[
            "-X",
            "POST",
            &format!("http://{registry}/v2/{repo}/blobs/uploads/"),
        ],
        None,
    );
    let loc = headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or_else(|| l.strip_prefix("location: "))
        })
        .unwrap()
        .trim()
        .to_string();
    let loc = if loc.starts_with("http") {
        loc
    } else {
        format!("http://{registry}{loc}")
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    curl(
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            &format!("{loc}{sep}digest={d}"),
        ],
        Some(body),
    );
    d
}

pub fn push_manifest(
    registry: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> String {
    curl(
        &[
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {media_type}"),
            &format!("http://{registry}/v2/{repo}/manifests/{reference}"),
        ],
        Some(body),
    );
    sha(body)
}

/// A layer: a tar of `files` (path, mode, content; a content starting with "->" makes a
/// symlink), returned as (tar bytes).
pub fn layer_tar(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        if let Some(target) = content.strip_prefix(b"->") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, path, std::str::from_utf8(target).unwrap())
                .unwrap();
        } else if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, path, std::io::empty()).unwrap();
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(content.len() as u64);
            b.append_data(&mut h, path, *content).unwrap();
        }
    }
    b.into_inner().unwrap()
}

/// A busybox root as one layer tar: enough for `sh -c` and the common applets.
pub fn busybox_layer() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").expect("busybox-static installed");
    let files: Vec<(&str, u32, &[u8])> = vec![
        ("bin/", 0o755, b""),
        ("bin/busybox", 0o755, &bb),
        ("bin/sh", 0o777, b"->/bin/busybox"),
        ("bin/cat", 0o777, b"->/bin/busybox"),
        ("bin/echo", 0o777, b"->/bin/busybox"),
        ("etc/", 0o755, b""),
        ("etc/flavour", 0o644, b"zstd layer\n"),
    ];
    layer_tar(&files)
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

pub fn zstd(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 3).unwrap()
}

/// Pushes a one-layer image and returns (manifest bytes, manifest digest).
pub fn push_image(
    registry: &str,
    repo: &str,
    tag: Option<&str>,
    arch: &str,
    layer_tar: &[u8],
    compressed: &[u8],
    layer_media_type: &str,
) -> (Vec<u8>, String) {
    let layer_digest = push_blob(registry, repo, compressed);
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        sha(layer_tar)
    );
    let config_digest = push_blob(registry, repo, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{layer_media_type}","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        compressed.len()
    );
    let d = sha(manifest.as_bytes());
    push_manifest(
        registry,
        repo,
        tag.unwrap_or(&d),
        "application/vnd.oci.image.manifest.v1+json",
        manifest.as_bytes(),
    );
    (manifest.into_bytes(), d)
}

/// A layer with the entry kinds a comparison should cover: hardlinks, setuid, owners,
/// symlinks, a FIFO, a device node, directory modes.
pub fn special_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add =
        |path: &str, kind: tar::EntryType, mode: u32, uid: u64, link: Option<&str>, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_mtime(1_600_000_000);
            h.set_size(data.len() as u64);
            if kind == tar::EntryType::Char {
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
            }
            match link {
                Some(l) => b.append_link(&mut h, path, l).unwrap(),
                None => b.append_data(&mut h, path, data).unwrap(),
            }
        };
    add("srv/", tar::EntryType::Directory, 0o750, 1000, None, b"");
    add(
        "srv/app",
        tar::EntryType::Regular,
        0o4755,
        0,
        None,
        b"#!/bin/sh\necho app\n",
    );
    add(
        "srv/data.txt",
        tar::EntryType::Regular,
        0o640,
        1000,
        None,
        b"owned by 1000\n",
    );
    add(
        "srv/hard",
        tar::EntryType::Link,
        0o640,
        1000,
        Some("srv/data.txt"),
        b"",
    );
    add(
        "srv/rel-link",
        tar::EntryType::Symlink,
        0o777,
        0,
        Some("data.txt"),
        b"",
    );
    add(
        "srv/abs-link",
        tar::EntryType::Symlink,
        0o777,
        0,
        Some("/etc/motd"),
        b"",
    );
    add("srv/fifo", tar::EntryType::Fifo, 0o600, 0, None, b"");
    add("srv/null", tar::EntryType::Char, 0o666, 0, None, b"");
    add(
        "srv/empty/",
        tar::EntryType::Directory,
        0o1777,
        0,
        None,
        b"",
    );
    b.into_inner().unwrap()
}

/// Writes an OCI image layout (for umoci) of layers given as (tar, gzip) pairs.
pub fn write_layout(dir: &std::path::Path, arch: &str, layers: &[(Vec<u8>, Vec<u8>)]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = sha(b);
        std::fs::write(blobs.join(d.strip_prefix("sha256:").unwrap()), b).unwrap();
        d
    };
    let diffs: Vec<String> = layers
        .iter()
        .map(|(t, _)| format!("\"{}\"", sha(t)))
        .collect();
    let descs: Vec<String> = layers
        .iter()
        .map(|(_, gz)| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}"#,
                put(gz),
                gz.len()
            )
        })
        .collect();
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diffs.join(",")
    );
    let cd = put(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        descs.join(",")
    );
    let md = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
}
