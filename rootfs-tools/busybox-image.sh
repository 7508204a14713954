#!/usr/bin/env bash
# Builds a busybox OCI image from Debian's busybox-static into an OCI image layout, and
# optionally pushes it.
#
#   rootfs-tools/busybox-image.sh OUT_DIR [--layered] [--ecs-tools] [--web] [--push HOST:PORT/REPO:TAG]
#
# The base layer holds /bin/busybox, its applet links, /etc/passwd, /etc/group and the usual
# directories. --layered adds a second layer that deletes /etc/motd (a whiteout), replaces
# /opt/data with an opaque directory and adds /etc/layer2: a test image for layer stacking.
# --ecs-tools adds a layer with the host's capsh and the libraries it loads: with busybox's
# applets (pidof, sysctl, fdisk, mount), what the ECS agent's own test task definitions call
# in the image they name ubuntu:latest; the test suite pushes it under that name.
# --web adds /var/www/index.html and makes busybox's httpd on port 80 the image's command:
# a stand-in for the nginx:latest the ECS agent's network-link task definition names.
set -euo pipefail

out=${1:?usage: busybox-image.sh OUT_DIR [--layered] [--push REF]}
shift
layered=0
ecs_tools=0
web=0
push=
while [[ $# -gt 0 ]]; do
    case $1 in
    --layered) layered=1 ;;
    --ecs-tools) ecs_tools=1 ;;
    --web) web=1 ;;
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

source "$here/lib.sh"
oci_begin "$out" "$work"

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

oci_layer "$root" base

if [[ $layered == 1 ]]; then
    l2=$work/l2
    mkdir -p "$l2/etc" "$l2/opt/data"
    : > "$l2/etc/.wh.motd"
    : > "$l2/opt/data/.wh..wh..opq"
    echo "from layer two" > "$l2/opt/data/new-file"
    echo "layer two was here" > "$l2/etc/layer2"
    oci_layer "$l2" l2
fi

if [[ $ecs_tools == 1 ]]; then
    capsh=$(command -v capsh || echo /usr/sbin/capsh)
    [[ -x $capsh ]] || { echo "busybox-image.sh: capsh missing (apt-get install libcap2-bin)" >&2; exit 1; }
    l3=$work/l3
    mkdir -p "$l3/usr/sbin"
    cp "$capsh" "$l3/usr/sbin/capsh"
    # The dynamic loader and libraries, at the paths the binary asks for.
    for lib in $(ldd "$capsh" | grep -o '/[^ ]*'); do
        mkdir -p "$l3/$(dirname "$lib")"
        cp -L "$lib" "$l3/$lib"
    done
    oci_layer "$l3" ecs-tools
fi

if [[ $web == 1 ]]; then
    l4=$work/l4
    mkdir -p "$l4/var/www"
    echo "<h1>Welcome to skiff's stand-in for nginx</h1>" > "$l4/var/www/index.html"
    oci_layer "$l4" web
    export OCI_CMD='["httpd","-f","-p","80","-h","/var/www"]'
fi

man_digest=$(oci_finish "$arch" "skiff rootfs-tools/busybox-image.sh")
echo "built $out ($man_digest)"
if [[ -n $push ]]; then
    "$here/oci-push.sh" "$out" "$push"
fi
