#!/usr/bin/env bash
# Cost of utilization collection: 100 running tasks, `skiff stats --telemetry` at the default
# sampling interval (10 s) for 60 s; its CPU time in % of one core goes to
# bench/results-stats.md (target < 1 %).
#
#   ./bench/stats.sh [TASKS] [SECONDS]      (as root)
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
tasks=${1:-100}
secs=${2:-60}
[[ $(id -u) -eq 0 ]] || { echo "bench: run as root" >&2; exit 1; }
"$top/scripts/deps.sh"
cd "$top"
cargo build --release --quiet
skiff=$top/target/release/skiff
port=${SKIFF_BENCH_REGISTRY_PORT:-51674}
work=$(mktemp -d)
export SKIFF_STATE_DIR=$work/state
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    "$top/rootfs-tools/registry.sh" stop "$port" || true
    rm -rf "$work"
}
trap cleanup EXIT
"$top/rootfs-tools/registry.sh" start "$port" >/dev/null
"$top/rootfs-tools/busybox-image.sh" "$work/img" --push "127.0.0.1:$port/busybox:latest" >/dev/null
cat > "$work/sleep.json" <<JSON
{"family":"stats-bench","networkMode":"none","containerDefinitions":[
 {"name":"sleeper","image":"127.0.0.1:$port/busybox:latest","memory":16,"stopTimeout":1,"command":["sleep","3600"]}]}
JSON
"$skiff" pull -q "127.0.0.1:$port/busybox:latest" >/dev/null
for _ in $(seq 1 "$tasks"); do
    "$skiff" run --pull-behavior prefer-cached "$work/sleep.json" >/dev/null 2>&1 &
    pids+=($!)
done
for _ in $(seq 1 300); do
    n=$(ls "$SKIFF_STATE_DIR"/tasks/*/task.json 2>/dev/null | wc -l)
    [[ $n -ge $tasks ]] && break
    sleep 0.2
done
[[ $n -ge $tasks ]] || { echo "bench: only $n of $tasks tasks started" >&2; exit 1; }
sleep 2

"$skiff" stats --telemetry > "$work/telemetry.jsonl" &
stats=$!
sleep "$secs"
ticks=$(awk '{print $14 + $15}' "/proc/$stats/stat")
kill "$stats"; wait "$stats" 2>/dev/null || true
hz=$(getconf CLK_TCK)
windows=$(wc -l < "$work/telemetry.jsonl")

# One reading of all tasks (the table's and JSON's unit of work).
one=$( { /usr/bin/time -f "%U %S" "$skiff" stats --no-stream --json --interval 0.1 > /dev/null; } 2>&1 | tail -1)

python3 - "$top/bench/results-stats.md" "$tasks" "$secs" "$ticks" "$hz" "$windows" "$one" <<'PY'
import sys, datetime, platform
out, tasks, secs, ticks, hz, windows, one = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
cpu = ticks / hz
u, s = (float(x) for x in one.split())
text = f"""## Utilization collection: {tasks} running tasks

`bench/stats.sh`. Measured {datetime.date.today()}, Linux {platform.release()}, cgroup v1/hybrid.
`skiff stats --telemetry` at the defaults (a sample every 10 s, 20 s windows) for {secs} s,
printing {windows} window lines (a task line and a container line per task and window).

| what | figure |
|---|---|
| CPU time of the collector over {secs} s | {cpu:.2f} s |
| as a share of one core | **{100 * cpu / secs:.3f} %** (target < 1 %) |
| one reading of all {tasks} tasks (`stats --no-stream --json`, process total) | {u + s:.3f} s CPU |

A reading is about ten small cgroup files and `/proc/<pid>/net/dev` per container.
"""
open(out, "w").write(text)
print(text)
PY
"$top/bench/assemble.sh"
