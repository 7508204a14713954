#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine (as root): installs what the tests need,
# starts a local registry with the test images, runs unit and integration tests, and stops
# the registry again.
#
#   ./scripts/test.sh [cargo test arguments...]
set -euo pipefail
source "$(dirname "$0")/common.sh"

if [[ $(id -u) -ne 0 ]]; then
    echo "test.sh: the integration tests create namespaces, mounts and cgroups: run as root" >&2
    exit 1
fi
"$top/scripts/deps.sh"
cd "$top"

port=${SKIFF_TEST_REGISTRY_PORT:-51670}
"$top/rootfs-tools/registry.sh" start "$port" >/dev/null
images=$(mktemp -d)
cleanup() {
    "$top/rootfs-tools/registry.sh" stop "$port" || true
    rm -rf "$images"
}
trap cleanup EXIT
"$top/rootfs-tools/busybox-image.sh" "$images/busybox" --push "127.0.0.1:$port/busybox:latest"
"$top/rootfs-tools/busybox-image.sh" "$images/layered" --layered --push "127.0.0.1:$port/busybox-layered:latest"

export SKIFF_TEST_REGISTRY=127.0.0.1:$port
cargo test --locked "$@"
