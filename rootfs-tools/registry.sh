#!/usr/bin/env bash
# Starts or stops Debian's docker-registry on 127.0.0.1 with storage in a temporary directory.
#
#   rootfs-tools/registry.sh start [PORT]   (default 51670; prints the address)
#   rootfs-tools/registry.sh stop  [PORT]   (stops it and removes its storage)
#   rootfs-tools/registry.sh status [PORT]
set -euo pipefail

cmd=${1:-}
port=${2:-${SKIFF_REGISTRY_PORT:-51670}}
[[ $port =~ ^[0-9]+$ ]] || { echo "registry.sh: bad port $port" >&2; exit 2; }
run_dir=${TMPDIR:-/tmp}/skiff-registry-$port
pid_file=$run_dir/pid

running() { [[ -f $pid_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; }

case $cmd in
start)
    command -v docker-registry >/dev/null || { echo "registry.sh: docker-registry is not installed (apt-get install docker-registry)" >&2; exit 1; }
    if running; then echo "127.0.0.1:$port"; exit 0; fi
    rm -rf "$run_dir"
    mkdir -p "$run_dir/data"
    cat > "$run_dir/config.yml" <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $run_dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YML
    setsid docker-registry serve "$run_dir/config.yml" >"$run_dir/log" 2>&1 < /dev/null &
    echo $! > "$pid_file"
    for _ in $(seq 1 100); do
        if curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; then
            echo "127.0.0.1:$port"
            exit 0
        fi
        running || break
        sleep 0.1
    done
    echo "registry.sh: registry did not come up on 127.0.0.1:$port; its log:" >&2
    cat "$run_dir/log" >&2
    exit 1
    ;;
stop)
    if running; then
        pid=$(cat "$pid_file")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$run_dir"
    ;;
status)
    if running; then echo "running on 127.0.0.1:$port"; else echo "not running"; exit 1; fi
    ;;
*)
    echo "usage: $0 start|stop|status [PORT]" >&2
    exit 2
    ;;
esac
