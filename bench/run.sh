#!/usr/bin/env bash
# Container start, side by side: skiff, runc and podman run the same busybox image's `true`
# on this machine, N times each; medians and ratios go to BENCHMARKS.md.
#
#   ./bench/run.sh [N]        (as root; default N=30)
#
# What each command covers:
#   skiff run    image cached (--pull-behavior prefer-cached), cgroups, overlay root, the
#                shim, namespaces, Docker's defaults (capabilities, seccomp, masks,
#                devices cgroup), run, wait, clean up everything
#   runc run     an unpacked bundle (umoci), namespaces and cgroups, run, wait, delete;
#                no registry, no overlay: the runtime alone
#   podman run   image already in its store, --network none, runc underneath, --rm
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
n=${1:-30}
[[ $(id -u) -eq 0 ]] || { echo "bench: run as root" >&2; exit 1; }

"$top/scripts/deps.sh"
export DEBIAN_FRONTEND=noninteractive
for p in runc umoci podman; do
    command -v "$p" >/dev/null || apt-get install -y -qq --no-install-recommends runc umoci podman >/dev/null
done

cd "$top"
cargo build --release --quiet
skiff=$top/target/release/skiff
port=${SKIFF_BENCH_REGISTRY_PORT:-51671}
work=$(mktemp -d)
cleanup() {
    "$top/rootfs-tools/registry.sh" stop "$port" || true
    runc delete -f skiff-bench >/dev/null 2>&1 || true
    podman rmi -f "127.0.0.1:$port/busybox:latest" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
"$top/rootfs-tools/registry.sh" start "$port" >/dev/null
"$top/rootfs-tools/busybox-image.sh" "$work/oci" --push "127.0.0.1:$port/busybox:latest" >/dev/null

# skiff: a warm store, as after the first pull.
cat > "$work/true.json" <<JSON
{"family":"bench","networkMode":"none","containerDefinitions":[
 {"name":"bench","image":"127.0.0.1:$port/busybox:latest","memory":64,"command":["true"]}]}
JSON
export SKIFF_STATE_DIR=$work/skiff-state
"$skiff" run "$work/true.json"

# runc: a bundle of the same image, with cgroups and namespaces as skiff uses.
umoci unpack --image "$work/oci:latest" "$work/bundle" >/dev/null
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["true"]
c["process"]["terminal"] = False
c["linux"]["resources"] = {"memory": {"limit": 64 << 20}}
c["linux"]["cgroupsPath"] = "skiff-bench-runc"
json.dump(c, open(p, "w"))
PY

# podman: runc and cgroupfs (this host cannot run crun/systemd cgroups), rlimits within the
# host's hard limits (its runtime chain gets a lower NPROC hard limit than a shell here).
mkdir -p /etc/containers /etc/containers/registries.conf.d
conf=/etc/containers/containers.conf
if [[ ! -s $conf ]] || head -1 "$conf" | grep -q '^# skiff bench'; then
    cat > "$conf" <<CONF
# skiff bench: written by skiff's bench/run.sh
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
else
    echo "bench: $conf exists and is not ours; podman uses it as it is" >&2
fi
cat > /etc/containers/registries.conf.d/skiff-bench.conf <<CONF
[[registry]]
location = "127.0.0.1:$port"
insecure = true
CONF
podman pull -q "127.0.0.1:$port/busybox:latest" >/dev/null

# A long-running task for the footprint figures.
cat > "$work/sleep.json" <<JSON
{"family":"bench-sleep","networkMode":"none","containerDefinitions":[
 {"name":"sleeper","image":"127.0.0.1:$port/busybox:latest","memory":64,"stopTimeout":1,"command":["sleep","600"]}]}
JSON

python3 - "$n" "$top/bench/results-start.md" "$skiff" "$work" "$port" <<'PY'
import datetime, glob, json, os, platform, signal, socket, statistics, subprocess, sys, time
n, out, skiff, work, port = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]

def private_kib(pid):
    """Private (clean + dirty) memory of a process, from smaps_rollup."""
    total = 0
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total

def pids_of(pattern):
    r = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]

def wait_pids(pattern, limit=20):
    t = time.time()
    while time.time() - t < limit:
        p = pids_of(pattern)
        if p:
            return p
        time.sleep(0.1)
    raise SystemExit(f"bench: no process matching {pattern}")

# Footprint while one container sleeps: skiff's per-task shim and the foreground skiff run;
# podman's conmon (its per-container monitor); runc run in the foreground.
def dirty_kib(pid):
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1])

def stop_task(sock_path, pid):
    """Stops a detached task through its shim's socket, as any client would."""
    c = socket.socket(socket.AF_UNIX)
    c.connect(sock_path)
    c.sendall(b'{"cmd":"stop","force":true}\n')
    t = time.time()
    while os.path.exists(f"/proc/{pid}") and time.time() - t < 10:
        time.sleep(0.05)
    c.close()

fp = {}
runs_fg = [subprocess.Popen([skiff, "run", f"{work}/sleep.json"], stdout=subprocess.DEVNULL)
           for _ in range(3)]
t = time.time()
while len(pids_of(f"skiff shim --config {work}")) < 3 and time.time() - t < 20:
    time.sleep(0.1)
time.sleep(1)
shims = pids_of(f"skiff shim --config {work}")
fp["skiff shim, its skiff run attached"] = private_kib(shims[0])
fp["skiff run (foreground engine)"] = private_kib(runs_fg[0].pid)
# Detached: the skiff runs killed, three shims keep their tasks.
for r in runs_fg:
    r.kill()
    r.wait()
time.sleep(0.5)
fp["skiff shim, detached, each of three (median)"] = int(statistics.median(map(private_kib, shims)))
fp["skiff shim, detached: its private dirty part (heap, stacks, relocations)"] = int(statistics.median(map(dirty_kib, shims)))
socks = {int(json.load(open(os.path.join(os.path.dirname(p), "state.json")))["shim_pid"]): p
         for p in glob.glob(f"{work}/skiff-state/tasks/*/shim.sock")}
for pid in shims[1:]:
    stop_task(socks[pid], pid)
# Alone, the shim is the only process mapping the skiff binary's pages: they count as its own
# although they are page cache any other skiff process shares.
fp["skiff shim, detached, the only skiff process"] = private_kib(shims[0])
stop_task(socks[shims[0]], shims[0])
subprocess.run(["podman", "run", "-d", "--name", "skiff-bench-sleep", "--network", "none",
                f"127.0.0.1:{port}/busybox:latest", "sleep", "600"], check=True, stdout=subprocess.DEVNULL)
conmon = wait_pids("conmon.*skiff-bench-sleep")[0]
time.sleep(1)
fp["podman conmon (per container)"] = private_kib(conmon)
subprocess.run(["podman", "rm", "-f", "-t", "0", "skiff-bench-sleep"], stdout=subprocess.DEVNULL)

cmds = {
    "skiff run": [skiff, "run", "--pull-behavior", "prefer-cached", f"{work}/true.json"],
    "runc run": ["runc", "run", "--bundle", f"{work}/bundle", "skiff-bench"],
    "podman run": ["podman", "run", "--rm", "--network", "none", "--memory", "64m",
                   f"127.0.0.1:{port}/busybox:latest", "true"],
}
# Round robin, so that whatever else the machine does (podman's cleanup processes, say)
# weighs on every command alike.
res = {name: [] for name in cmds}
for cmd in cmds.values():
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)  # warm-up
time.sleep(1)
for _ in range(n):
    for name, cmd in cmds.items():
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        res[name].append((time.perf_counter() - t) * 1000)
for name, ts in res.items():
    print(f"{name}: median {statistics.median(ts):.1f} ms")
base = statistics.median(res["skiff run"])

# skiff's own phases: the same runs again with SKIFF_TIMINGS marks (see src/timing.rs).
marks_file = f"{work}/timings"
env = dict(os.environ, SKIFF_TIMINGS=marks_file)
walls = []
for _ in range(n):
    t = time.perf_counter()
    subprocess.run(cmds["skiff run"], check=True, stdout=subprocess.DEVNULL, env=env)
    walls.append((time.perf_counter() - t) * 1000)
runs = []
for line in open(marks_file):
    _pid, phase, ns = line.split()
    if phase == "start":
        runs.append({})
    runs[-1][phase] = int(ns) / 1e6
phases = [
    ("parse the task definition", "start", "parsed"),
    ("find the cached image", "parsed", "image_ready"),
    ("cgroups (task, container, devices), directories, OCI spec", "image_ready", "prepared"),
    ("start the shim (read-only binary view, fork, exec)", "prepared", "shim_exec"),
    ("shim ready, engine attached", "shim_exec", "shim_ready"),
    ("clone into new namespaces", "shim_ready", "cloned"),
    ("join the container's cgroups", "cloned", "cgroup_joined"),
    ("rootfs: overlay, mounts, devices, pivot_root, masks", "cgroup_joined", "rootfs_done"),
    ("user, capabilities, seccomp, exec", "rootfs_done", "exec"),
    ("`true` runs and exits (namespaces torn down)", "exec", "exited"),
    ("shim: reap, state, cgroups removed", "exited", "task_stopped"),
    ("skiff: task directory removed", "task_stopped", "end"),
]
def med(a, b):
    return statistics.median(r[b] - r[a] for r in runs if a in r and b in r)
phase_rows = "\n".join(f"| {label} | {med(a, b):.2f} |" for label, a, b in phases)
inside = statistics.median(r["end"] - r["start"] for r in runs)
phase_rows += f"\n| skiff process start and exit (exec, runtime), outside the marks | {statistics.median(walls) - inside:.2f} |"
phase_rows += f"\n| **wall time, these runs** | **{statistics.median(walls):.2f}** |"
ver = lambda c: subprocess.run(c, capture_output=True, text=True).stdout.splitlines()[0]
rows = "\n".join(
    f"| `{k}` | {statistics.median(v):.1f} | {min(v):.1f} | {max(v):.1f} | {statistics.median(v)/base:.2f} |"
    for k, v in res.items())
ratio_runc = base / statistics.median(res["runc run"])
text = f"""## Container start: `true` in the busybox image, start to exit and clean-up

`bench/run.sh`, {n} runs each after one warm-up, the three commands taking turns.

Measured {datetime.date.today()} on this project's machine: {os.cpu_count()} cores,
Linux {platform.release()}, cgroup v1/hybrid host; peers {ver(["runc", "--version"])},
{ver(["podman", "--version"])}.

| command | median ms | min ms | max ms | ratio to skiff |
|---|---|---|---|---|
{rows}

Target: skiff ≤ 0.7× runc's wall time; here skiff/runc = {ratio_runc:.2f}.

What each covers: `skiff run` finds the image in its store (`--pull-behavior
prefer-cached`), creates the task and container cgroups (with the devices allowlist),
starts the task's shim, mounts an overlay root, clones the namespaces, applies Docker's
defaults (capabilities, seccomp, masked and read-only paths, devices), runs, waits and
removes everything. `runc run` starts an already unpacked bundle (umoci's default config:
capabilities, masked paths, no seccomp profile; no registry, no overlay). `podman run` uses
an image already in its store, runc underneath, `--network none --rm`.

### Where skiff's time goes

Medians of {n} more runs with `SKIFF_TIMINGS` marks (CLOCK_MONOTONIC, across skiff, its
shim and the container's setup process), in ms:

| phase | median ms |
|---|---|
{phase_rows}

## Footprint: private memory of the processes that watch a running container

Busybox `sleep` containers running; Private_Clean + Private_Dirty (USS) from
`smaps_rollup` (pages another process also maps are not counted).

| process | private KiB |
|---|---|
""" + "\n".join(f"| {k} | {v} |" for k, v in fp.items()) + """

The shim is what stays per task (the agent will be one process for all tasks); conmon is what
podman keeps per container. Target: the shim ≤ 1024 KiB. What each further task costs is the
"each of three" figure; a lone shim also counts the skiff binary's text pages it touched as
its own, which any second skiff process (another shim, the agent) shares.
"""
open(out, "w").write(text)
PY
"$top/bench/assemble.sh"
