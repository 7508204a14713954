#!/usr/bin/env bash
# Builds a busybox OCI image from Debian's busybox-static into an OCI image layout, and
# optionally pushes it.
#
#   rootfs-tools/busybox-image.sh OUT_DIR [--layered] [--push HOST:PORT/REPO:TAG]
#
# The base layer holds /bin/busybox, its applet links, /etc/passwd, /etc/group and the usual
# directories. --layered adds a second layer that deletes /etc/motd (a whiteout), replaces
# /opt/data with an opaque directory and adds /etc/layer2: a test image for layer stacking.
set -euo pipefail

out=${1:?usage: busybox-image.sh OUT_DIR [--layered] [--push REF]}
shift
layered=0
push=
while [[ $# -gt 0 ]]; do
    case $1 in
    --layered) layered=1 ;;
    --push) push=${2:?--push needs a reference}; shift ;;
    *) echo "busybox-image.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

bb=/bin/busybox
[[ -x $bb ]] || { echo "busybox-image.sh: $bb missing (apt-get install busybox-static)" >&2; exit 1; }
arch=$(dpkg --print-architecture)
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

rm -rf "$out"
mkdir -p "$out/blobs/sha256"

# Writes a file into the layout by its digest and prints "digest size".
store() {
    local f=$1 d
    d=$(sha256sum "$f" | cut -d' ' -f1)
    cp "$f" "$out/blobs/sha256/$d"
    echo "sha256:$d $(stat -c %s "$f")"
}

# Packs a directory into a reproducible gzip layer; prints "diffid digest size".
layer() {
    local dir=$1 name=$2
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=posix \
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        -C "$dir" -cf "$work/$name.tar" .
    local diff
    diff=sha256:$(sha256sum "$work/$name.tar" | cut -d' ' -f1)
    gzip -n -9 -c "$work/$name.tar" > "$work/$name.tar.gz"
    echo "$diff $(store "$work/$name.tar.gz")"
}

root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home,var/tmp,proc,sys,dev,opt/data}
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 700 "$root/root"
cp "$bb" "$root/bin/busybox"
for applet in $("$bb" --list-full); do
    [[ $applet == bin/busybox ]] && continue
    mkdir -p "$root/$(dirname "$applet")"
    ln -sf /bin/busybox "$root/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
echo "skiff busybox test image" > "$root/etc/motd"
echo "from the base layer" > "$root/opt/data/base-file"

read -r diff1 digest1 size1 < <(layer "$root" base)
diffs=("$diff1"); digests=("$digest1"); sizes=("$size1")

if [[ $layered == 1 ]]; then
    l2=$work/l2
    mkdir -p "$l2/etc" "$l2/opt/data"
    : > "$l2/etc/.wh.motd"
    : > "$l2/opt/data/.wh..wh..opq"
    echo "from layer two" > "$l2/opt/data/new-file"
    echo "layer two was here" > "$l2/etc/layer2"
    read -r diff2 digest2 size2 < <(layer "$l2" l2)
    diffs+=("$diff2"); digests+=("$digest2"); sizes+=("$size2")
fi

python3 - "$work" "$arch" "${#diffs[@]}" "${diffs[@]}" "${digests[@]}" "${sizes[@]}" <<'PY'
import json, sys
work, arch, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rest = sys.argv[4:]
diffs, digests, sizes = rest[:n], rest[n:2*n], [int(s) for s in rest[2*n:3*n]]
config = {
    "architecture": arch,
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["sh"],
    },
    "rootfs": {"type": "layers", "diff_ids": diffs},
    "history": [{"created_by": "skiff rootfs-tools/busybox-image.sh"} for _ in diffs],
}
json.dump(config, open(f"{work}/config.json", "w"), separators=(",", ":"), sort_keys=True)
json.dump({"digests": digests, "sizes": sizes}, open(f"{work}/layers.json", "w"))
PY
read -r cfg_digest cfg_size < <(store "$work/config.json")
python3 - "$work" "$cfg_digest" "$cfg_size" <<'PY'
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
read -r man_digest man_size < <(store "$work/manifest.json")
echo '{"imageLayoutVersion":"1.0.0"}' > "$out/oci-layout"
cat > "$out/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$man_digest","size":$man_size,"platform":{"architecture":"$arch","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}
JSON
echo "built $out ($man_digest)"
if [[ -n $push ]]; then
    "$here/oci-push.sh" "$out" "$push"
fi
