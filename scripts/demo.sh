#!/usr/bin/env bash
# The main job, from a fresh Debian machine (as root): install what is needed, build skiff,
# start a local registry, push the busybox demo image, and run examples/hello.json.
#
#   ./scripts/demo.sh [--keep-registry]
set -euo pipefail
source "$(dirname "$0")/common.sh"
keep=0
[[ ${1:-} == --keep-registry ]] && keep=1

"$top/scripts/deps.sh"
cd "$top"
echo "==> building skiff"
cargo build --release --quiet
port=51670
echo "==> starting a registry on 127.0.0.1:$port"
"$top/rootfs-tools/registry.sh" start "$port" >/dev/null
if [[ $keep == 0 ]]; then
    trap '"$top/rootfs-tools/registry.sh" stop '"$port" EXIT
fi
echo "==> pushing the busybox demo image"
image_dir=$(mktemp -d)
"$top/rootfs-tools/busybox-image.sh" "$image_dir/busybox" --push "127.0.0.1:$port/busybox:latest"
rm -rf "$image_dir"
echo "==> skiff run examples/hello.json"
# shellcheck disable=SC2046
$(skiff_wrapper) "$top/target/release/skiff" run examples/hello.json
