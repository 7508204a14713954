# Sourced by the image scripts: writing an OCI image layout from directories.
#   oci_begin OUT_DIR WORK_DIR        start a layout
#   oci_layer DIR NAME                add DIR as a reproducible gzip layer
#   oci_finish ARCH CREATED_BY        write config, manifest and index.json; prints the digest
#                                     (the config's Cmd: $OCI_CMD as JSON, default ["sh"])

oci_begin() {
    oci_out=$1
    oci_work=$2
    oci_diffs=()
    oci_digests=()
    oci_sizes=()
    rm -rf "$oci_out"
    mkdir -p "$oci_out/blobs/sha256"
}

# Writes a file into the layout by its digest and prints "digest size".
oci_store() {
    local f=$1 d
    d=$(sha256sum "$f" | cut -d' ' -f1)
    cp "$f" "$oci_out/blobs/sha256/$d"
    echo "sha256:$d $(stat -c %s "$f")"
}

oci_layer() {
    local dir=$1 name=$2 diff digest size
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=posix \
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        -C "$dir" -cf "$oci_work/$name.tar" .
    diff=sha256:$(sha256sum "$oci_work/$name.tar" | cut -d' ' -f1)
    if command -v pigz >/dev/null; then
        pigz -n -9 -c "$oci_work/$name.tar" > "$oci_work/$name.tar.gz"
    else
        gzip -n -9 -c "$oci_work/$name.tar" > "$oci_work/$name.tar.gz"
    fi
    rm -f "$oci_work/$name.tar"
    read -r digest size < <(oci_store "$oci_work/$name.tar.gz")
    rm -f "$oci_work/$name.tar.gz"
    oci_diffs+=("$diff")
    oci_digests+=("$digest")
    oci_sizes+=("$size")
}

oci_finish() {
    local arch=$1 created_by=$2 cfg_digest cfg_size man_digest man_size n=${#oci_diffs[@]}
    python3 - "$oci_work" "$arch" "$created_by" "$n" "${oci_diffs[@]}" "${oci_digests[@]}" "${oci_sizes[@]}" <<'PY'
import json, os, sys
work, arch, created_by, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rest = sys.argv[5:]
diffs, digests, sizes = rest[:n], rest[n:2*n], [int(s) for s in rest[2*n:3*n]]
config = {
    "architecture": arch,
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": json.loads(os.environ.get("OCI_CMD") or '["sh"]'),
    },
    "rootfs": {"type": "layers", "diff_ids": diffs},
    "history": [{"created_by": created_by} for _ in diffs],
}
json.dump(config, open(f"{work}/config.json", "w"), separators=(",", ":"), sort_keys=True)
json.dump({"digests": digests, "sizes": sizes}, open(f"{work}/layers.json", "w"))
PY
    read -r cfg_digest cfg_size < <(oci_store "$oci_work/config.json")
    python3 - "$oci_work" "$cfg_digest" "$cfg_size" <<'PY'
import json, sys
work, cd, cs = sys.argv[1], sys.argv[2], int(sys.argv[3])
layers = json.load(open(f"{work}/layers.json"))
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
    "layers": [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s}
        for d, s in zip(layers["digests"], layers["sizes"])
    ],
}
json.dump(manifest, open(f"{work}/manifest.json", "w"), separators=(",", ":"), sort_keys=True)
PY
    read -r man_digest man_size < <(oci_store "$oci_work/manifest.json")
    echo '{"imageLayoutVersion":"1.0.0"}' > "$oci_out/oci-layout"
    cat > "$oci_out/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$man_digest","size":$man_size,"platform":{"architecture":"$arch","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}
JSON
    echo "$man_digest"
}
