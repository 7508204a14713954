#!/usr/bin/env bash
# Runs the integration tests again on a pure cgroup v2 host: a qemu VM (tests/vm/vm.sh) with
# static (musl) builds of skiff and of the test binaries, against a loopback registry on the
# host (10.0.2.2 in the guest). Called by scripts/test.sh; usable alone (as root):
#
#   ./scripts/test-v2-vm.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$top"

if ! command -v rustup >/dev/null; then
    # Debian's own Rust packages carry no musl standard library.
    echo "test-v2-vm: SKIPPED: static test binaries need rustup's x86_64-unknown-linux-musl target" >&2
    exit 0
fi
rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl \
    || rustup target add x86_64-unknown-linux-musl >/dev/null
command -v musl-gcc >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends musl-tools >/dev/null
}
tests/vm/vm.sh prepare

# Static test binaries; no debug info keeps the initramfs small.
export CARGO_PROFILE_DEV_DEBUG=0
target=x86_64-unknown-linux-musl
cargo build --locked --quiet --target "$target"
# The unit tests and every suite that needs no firewall tool (the guest has neither nft nor
# iptables: bridge and awsvpc networking are tested on the host only).
suites=(run cgroups runtime tasks agent lifecycle health exec volumes)
args=(--bin skiff)
for s in "${suites[@]}"; do args+=(--test "$s"); done
mapfile -t bins < <(cargo test --locked --quiet --target "$target" --no-run --message-format=json \
    "${args[@]}" 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])')
want=$((${#suites[@]} + 1))
[[ ${#bins[@]} -eq $want ]] || { echo "test-v2-vm: expected $want test binaries, got: ${bins[*]}" >&2; exit 1; }
# Tests that run an ECS fixture unchanged, whose default network mode is bridge.
skip=(--skip ecs_fixture_container_ordering_healthy_starts_the_dependent_once_healthy)

port=${SKIFF_VM_REGISTRY_PORT:-51672}
work=$(mktemp -d)
cleanup() {
    "$top/rootfs-tools/registry.sh" stop "$port" || true
    rm -rf "$work"
}
trap cleanup EXIT
"$top/rootfs-tools/registry.sh" start "$port" >/dev/null
"$top/rootfs-tools/busybox-image.sh" "$work/bb" --push "127.0.0.1:$port/busybox:latest" >/dev/null
"$top/rootfs-tools/busybox-image.sh" "$work/bbl" --layered --push "127.0.0.1:$port/busybox-layered:latest" >/dev/null
"$top/rootfs-tools/busybox-image.sh" "$work/bbu" --ecs-tools --push "127.0.0.1:$port/ubuntu:latest" >/dev/null
"$top/rootfs-tools/busybox-image.sh" "$work/web" --web --push "127.0.0.1:$port/nginx:latest" >/dev/null

# The test binaries find skiff, the examples and the fixtures at the paths they were built with.
files=(--file "$top/target/$target/debug/skiff:$top/target/$target/debug/skiff"
       --file "$top/examples:$top/examples"
       --file "$top/tests/fixtures:$top/tests/fixtures")
for b in "${bins[@]}"; do files+=(--file "$b:$b"); done
{
    echo "export SKIFF_TEST_REGISTRY=10.0.2.2:$port SKIFF_INSECURE_REGISTRIES=10.0.2.2:$port"
    echo "echo '== cgroup v2 VM: integration tests'"
    echo "rc=0"
    for b in "${bins[@]}"; do
        # One test at a time: the guest has one emulated CPU.
        echo "$b --test-threads=1 ${skip[*]} || rc=1"
    done
    echo "exit \$rc"
} > "$work/guest.sh"
tests/vm/vm.sh run --timeout 2400 "${files[@]}" "$work/guest.sh"
