#!/usr/bin/env bash
# One `skiff server` and N simulated agents (`skiff control-load`: light in-process clients
# over TLS that register, long-poll, report task events and utilization like `skiff agent`).
# Measures the time from sending RunTask to the simulated agent holding the task (p50, p99),
# and the server's CPU and memory; results in bench/results-control.md (target p99 < 100 ms).
#
#   ./bench/control.sh [AGENTS] [RUNS] [HOLD_SECONDS]     (default 2000 200 60)
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
agents=${1:-2000}
runs=${2:-200}
hold=${3:-60}
port=${SKIFF_BENCH_CONTROL_PORT:-58443}
cd "$top"
cargo build --release --quiet
skiff=$top/target/release/skiff
work=$(mktemp -d)
spid=
cleanup() {
    [[ -n $spid ]] && kill "$spid" 2>/dev/null && wait "$spid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
"$skiff" server --data-dir "$work/srv" --listen "127.0.0.1:$port" > "$work/server.out" 2>&1 &
spid=$!
for _ in $(seq 100); do grep -q listening "$work/server.out" && break; sleep 0.1; done
grep -q listening "$work/server.out" || { cat "$work/server.out"; exit 1; }
"$skiff" control-load --endpoint "https://127.0.0.1:$port" --data-dir "$work/srv" \
    --agents "$agents" --runs "$runs" --hold "$hold" --server-pid "$spid" | tee "$work/load.out"
size=$(stat -c %s "$skiff")
{
    echo "## Control plane: run-task to agent with $agents agents"
    echo
    echo "\`bench/control.sh\`: one \`skiff server\` (release build, SQLite with synchronous=FULL)"
    echo "and $agents simulated agents in one \`skiff control-load\` process on the same machine,"
    echo "long-polling (30 s; every waiting poll holds its own TLS connection of the shared client"
    echo "pool) and posting utilization every 20 s. $runs RunTask calls one after the other (50 ms apart); each is timed from sending"
    echo "RunTask to the chosen agent holding the task in its desired set. Measured $(date -u +%F)"
    echo "on this project's machine ($(nproc) cores, Linux $(uname -r)), shared with other builds."
    echo "Target: p99 < 100 ms. Release binary: $((size / 1024)) KiB."
    echo
    echo '```'
    cat "$work/load.out"
    echo '```'
} > "$top/bench/results-control.md"
"$top/bench/assemble.sh"
