#!/usr/bin/env bash
# Pull of a ~100 MB multi-layer image (rootfs-tools/bench-image.sh) from a loopback registry
# into a cold store, side by side: skiff pull, podman pull, skopeo copy + umoci unpack.
# Medians of N runs (default 5) and skiff's peak RSS go to bench/results-pull.md.
#
#   ./bench/pull.sh [N]      (as root)
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
n=${1:-5}
[[ $(id -u) -eq 0 ]] || { echo "bench: run as root" >&2; exit 1; }
"$top/scripts/deps.sh"
for p in podman skopeo umoci; do
    command -v "$p" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman skopeo umoci >/dev/null
done
cd "$top"
cargo build --release --quiet
port=${SKIFF_BENCH_REGISTRY_PORT:-51673}
work=$(mktemp -d)
conf=/etc/containers/registries.conf.d/skiff-bench-$port.conf
cleanup() {
    "$top/rootfs-tools/registry.sh" stop "$port" || true
    podman rmi -f "127.0.0.1:$port/bench:latest" >/dev/null 2>&1 || true
    rm -f "$conf"
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p /etc/containers/registries.conf.d
printf '[[registry]]\nlocation = "127.0.0.1:%s"\ninsecure = true\n' "$port" > "$conf"
"$top/rootfs-tools/registry.sh" start "$port" >/dev/null
"$top/rootfs-tools/bench-image.sh" "$work/img" --push "127.0.0.1:$port/bench:latest" >/dev/null

python3 - "$n" "$top/bench/results-pull.md" "$top/target/release/skiff" "$work" "$port" <<'PY'
import os, platform, shutil, statistics, subprocess, sys, time, datetime
n, out, skiff, work, port = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ref = f"127.0.0.1:{port}/bench:latest"

def timed(cmds, before):
    before()
    # The previous run's deletions and writeback are not this run's work.
    subprocess.run(["sync"], check=True)
    t = time.perf_counter()
    for c in cmds:
        subprocess.run(c, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t

def skiff_before():
    shutil.rmtree(f"{work}/skiff", ignore_errors=True)
def podman_before():
    subprocess.run(["podman", "rmi", "-f", ref], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def skopeo_before():
    shutil.rmtree(f"{work}/oci", ignore_errors=True)
    shutil.rmtree(f"{work}/bundle", ignore_errors=True)

runs = {
    "skiff pull": ([[skiff, "--state-dir", f"{work}/skiff", "pull", "-q", ref]], skiff_before),
    "podman pull": ([["podman", "pull", "-q", ref]], podman_before),
    "skopeo copy + umoci unpack": ([
        ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{work}/oci:latest"],
        ["umoci", "unpack", "--image", f"{work}/oci:latest", f"{work}/bundle"],
    ], skopeo_before),
}
load_before = os.getloadavg()[0]
res = {k: [timed(c, b) for _ in range(n)] for k, (c, b) in runs.items()}
load_after = os.getloadavg()[0]
for k, v in res.items():
    print(f"{k}: median {statistics.median(v):.2f} s")
# Peak RSS of one skiff pull, measured on that process alone.
skiff_before()
subprocess.run(["/usr/bin/time", "-f", "%M", "-o", f"{work}/rss", skiff, "--state-dir", f"{work}/skiff",
                "pull", "-q", ref], check=True, stdout=subprocess.DEVNULL)
rss_mib = int(open(f"{work}/rss").read().split()[-1]) / 1024
base = statistics.median(res["podman pull"])
sizes = sorted((os.path.getsize(os.path.join(work, "img/blobs/sha256", f)) for f in os.listdir(f"{work}/img/blobs/sha256")), reverse=True)
rows = "\n".join(
    f"| {k} | {statistics.median(v):.2f} | {min(v):.2f} | {max(v):.2f} | {statistics.median(v)/base:.2f} |"
    for k, v in res.items())
text = f"""## Image pull: ~100 MB, three layers, cold store, loopback registry

`bench/pull.sh`, {n} runs each. Measured {datetime.date.today()}, Linux {platform.release()},
{os.cpu_count()} CPUs, load average {load_before:.2f} before and {load_after:.2f} after.
The image (`rootfs-tools/bench-image.sh`): a Debian minbase layer ({sizes[0]/2**20:.1f} MiB
gzip), 20 MiB of random data ({sizes[1]/2**20:.1f} MiB), a layer of whiteouts.

| command | median s | min s | max s | ratio to podman |
|---|---|---|---|---|
{rows}

Peak RSS of `skiff pull`: {rss_mib:.1f} MiB (target ≤ 64 MiB).

skiff syncs the file system (one syncfs per pull) before any new layer becomes visible;
podman and umoci do not sync. Each run starts from an empty store right after the previous
run's files were deleted. The issue's target is ≤ 0.4× podman's time.
"""
open(out, "w").write(text)
PY
"$top/bench/assemble.sh"
