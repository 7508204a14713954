#!/usr/bin/env bash
# Builds the pull benchmark's image (about 100 MB unpacked) as an OCI layout, and optionally
# pushes it:
#   layer 1: a Debian minbase root from debootstrap (cached: debootstrap takes a while)
#   layer 2: 20 MB of incompressible data
#   layer 3: deletes files of layer 1 (whiteouts) and adds a few
#
#   rootfs-tools/bench-image.sh OUT_DIR [--push HOST:PORT/REPO:TAG]
set -euo pipefail

out=${1:?usage: bench-image.sh OUT_DIR [--push REF]}
shift
push=
[[ ${1:-} == --push ]] && push=${2:?--push needs a reference}
here=$(cd "$(dirname "$0")" && pwd)
arch=$(dpkg --print-architecture)
cache=${SKIFF_BENCH_CACHE:-/var/cache/skiff-bench}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
minbase=$cache/minbase-$arch
if [[ ! -f $minbase/.complete ]]; then
    rm -rf "$minbase"
    mkdir -p "$cache"
    suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    debootstrap --variant=minbase "$suite" "$minbase" "${mirror:-http://deb.debian.org/debian}" >/dev/null
    # Device nodes and the apt cache are not part of an image.
    rm -rf "$minbase"/dev/* "$minbase"/var/cache/apt/archives/*.deb
    touch "$minbase/.complete"
fi

source "$here/lib.sh"
oci_begin "$out" "$work"
cp -a "$minbase" "$work/l1"
rm -f "$work/l1/.complete"
oci_layer "$work/l1" l1
rm -rf "$work/l1"

mkdir -p "$work/l2/opt/data"
head -c $((20 * 1024 * 1024)) /dev/urandom > "$work/l2/opt/data/blob"
oci_layer "$work/l2" l2
rm -rf "$work/l2"

mkdir -p "$work/l3/usr/share" "$work/l3/etc"
: > "$work/l3/usr/share/.wh.doc"
: > "$work/l3/usr/share/.wh.man"
: > "$work/l3/etc/.wh.motd"
echo "skiff bench image" > "$work/l3/etc/bench"
oci_layer "$work/l3" l3

man_digest=$(oci_finish "$arch" "skiff rootfs-tools/bench-image.sh")
echo "built $out ($man_digest)"
if [[ -n $push ]]; then
    "$here/oci-push.sh" "$out" "$push"
fi
