#!/usr/bin/env bash
# `skiff ps` with 200 tasks in the state directory (100 running, 100 stopped): median latency
# of `skiff ps -a` and `skiff ps -a --json` over N runs, beside `podman ps -a` with 200
# containers; results in bench/results-ps.md (target < 50 ms).
#
#   ./bench/ps.sh [N]      (as root; default N=30)
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
n=${1:-30}
[[ $(id -u) -eq 0 ]] || { echo "bench: run as root" >&2; exit 1; }
"$top/scripts/deps.sh"
cd "$top"
cargo build --release --quiet
skiff=$top/target/release/skiff
port=${SKIFF_BENCH_REGISTRY_PORT:-51675}
work=$(mktemp -d)
export SKIFF_STATE_DIR=$work/state
cleanup() {
    "$skiff" ps -a --json 2>/dev/null | python3 -c '
import json, sys
print("\n".join(t["taskId"] for t in json.load(sys.stdin)))' | xargs -r "$skiff" rm -f >/dev/null 2>&1 || true
    if command -v podman >/dev/null; then
        podman ps -a --filter label=skiff-bench-ps -q | xargs -r podman rm -f >/dev/null 2>&1 || true
    fi
    "$top/rootfs-tools/registry.sh" stop "$port" || true
    rm -rf "$work"
}
trap cleanup EXIT
"$top/rootfs-tools/registry.sh" start "$port" >/dev/null
"$top/rootfs-tools/busybox-image.sh" "$work/img" --push "127.0.0.1:$port/busybox:latest" >/dev/null
cat > "$work/sleep.json" <<JSON
{"family":"ps-bench-running","networkMode":"none","containerDefinitions":[
 {"name":"sleeper","image":"127.0.0.1:$port/busybox:latest","memory":16,"stopTimeout":1,"command":["sleep","3600"]}]}
JSON
cat > "$work/true.json" <<JSON
{"family":"ps-bench-stopped","networkMode":"none","containerDefinitions":[
 {"name":"quick","image":"127.0.0.1:$port/busybox:latest","memory":16,"command":["true"]}]}
JSON
"$skiff" pull -q "127.0.0.1:$port/busybox:latest" >/dev/null
for i in $(seq 1 100); do
    "$skiff" run -d --pull-behavior prefer-cached --name "run-$i" "$work/sleep.json" >/dev/null
    "$skiff" run -d --pull-behavior prefer-cached "$work/true.json" >/dev/null
done
podman_n=0
if command -v podman >/dev/null && podman pull -q --tls-verify=false "127.0.0.1:$port/busybox:latest" >/dev/null 2>&1; then
    for i in $(seq 1 200); do
        podman create --label skiff-bench-ps --network none "127.0.0.1:$port/busybox:latest" true >/dev/null
    done
    podman_n=200
fi

python3 - "$n" "$top/bench/results-ps.md" "$skiff" "$podman_n" <<'PY'
import datetime, json, os, platform, statistics, subprocess, sys, time
n, out, skiff, podman_n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
listing = json.loads(subprocess.run([skiff, "ps", "-a", "--json"], check=True,
                                    capture_output=True, text=True).stdout)
running = sum(1 for t in listing if t["lastStatus"] == "RUNNING")
stopped = sum(1 for t in listing if t["lastStatus"] == "STOPPED")
assert running == 100 and stopped == 100, (running, stopped)
cmds = {"skiff ps -a": [skiff, "ps", "-a"], "skiff ps -a --json": [skiff, "ps", "-a", "--json"],
        "skiff ps (running only)": [skiff, "ps"]}
if podman_n:
    cmds["podman ps -a (200 containers)"] = ["podman", "ps", "-a"]
res = {}
for name, cmd in cmds.items():
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        ts.append((time.perf_counter() - t) * 1000)
    res[name] = ts
    print(f"{name}: median {statistics.median(ts):.1f} ms")
rows = "\n".join(f"| `{k}` | {statistics.median(v):.1f} | {min(v):.1f} | {max(v):.1f} |"
                 for k, v in res.items())
text = f"""## `skiff ps` with 200 tasks

`bench/ps.sh`, {n} runs each after one warm-up: 100 running tasks (one `sleep` container each,
under its shim) and 100 stopped ones in the state directory. Measured
{datetime.date.today()} on this project's machine ({os.cpu_count()} cores, Linux
{platform.release()}). Target: < 50 ms.

| command | median ms | min ms | max ms |
|---|---|---|---|
{rows}

Each `skiff ps` reads every task's `task.json` and `state.json`, checks that each running
task's shim is alive (`/proc/PID/cmdline`), reconciles what needs it and removes expired
stopped tasks, with no daemon to ask.
"""
open(out, "w").write(text)
PY
"$top/bench/assemble.sh"
