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
# On a pure cgroup v2 host skiff cannot enable controllers beneath a cgroup that holds other
# processes (a login session's, say): run the suite in a delegated scope, the test processes in
# a leaf of it, and skiff's cgroups beside them (SKIFF_CGROUP_ROOT).
if [[ ${1:-} == --in-delegated-scope ]]; then
    shift
    scope=$(sed -n 's/^0:://p' /proc/self/cgroup)
    mkdir -p "/sys/fs/cgroup$scope/runner"
    echo $$ > "/sys/fs/cgroup$scope/runner/cgroup.procs"
    export SKIFF_CGROUP_ROOT=$scope
elif [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs && $(sed -n 's/^0:://p' /proc/self/cgroup) != / ]] \
    && command -v systemd-run >/dev/null && [[ -d /run/systemd/system ]]; then
    exec systemd-run --scope --quiet -p Delegate=yes -- "$0" --in-delegated-scope "$@"
fi

"$top/scripts/deps.sh"
cd "$top"

port=${SKIFF_TEST_REGISTRY_PORT:-51670}
"$top/rootfs-tools/registry.sh" start "$port" >/dev/null
images=$(mktemp -d)
cleanup() {
    # A registry that died under the tests makes every later pull fail with "connection
    # refused": say so, with its log, rather than leave only the failures to read.
    if ! "$top/rootfs-tools/registry.sh" status "$port" >/dev/null; then
        echo "test.sh: the test registry on port $port is not running any more; its log:" >&2
        cat "${TMPDIR:-/tmp}/skiff-registry-$port/log" >&2 || true
    fi
    "$top/rootfs-tools/registry.sh" stop "$port" || true
    rm -rf "$images"
}
trap cleanup EXIT
"$top/rootfs-tools/busybox-image.sh" "$images/busybox" --push "127.0.0.1:$port/busybox:latest"
"$top/rootfs-tools/busybox-image.sh" "$images/layered" --layered --push "127.0.0.1:$port/busybox-layered:latest"
"$top/rootfs-tools/busybox-image.sh" "$images/ecs-tools" --ecs-tools --push "127.0.0.1:$port/ubuntu:latest"
"$top/rootfs-tools/busybox-image.sh" "$images/web" --web --push "127.0.0.1:$port/nginx:latest"

export SKIFF_TEST_REGISTRY=127.0.0.1:$port
# --no-fail-fast: one failing suite must not hide how the others fare.
cargo test --locked --no-fail-fast "$@"

# The same integration tests on a pure cgroup v2 host, in a VM (skip with SKIFF_SKIP_VM=1).
if [[ ${SKIFF_SKIP_VM:-0} != 1 ]]; then
    "$top/scripts/test-v2-vm.sh"
fi
