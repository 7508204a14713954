#!/bin/sh
# Installs skiff on this host: the binary as /usr/local/bin/skiff, the systemd units
# skiff-agent.service and skiff-server.service (not enabled), and a sample
# /etc/skiff/agent.toml (root-only; an existing one is kept). DESTDIR installs into a staging
# root instead.
#
#   packaging/install.sh [SKIFF_BINARY]     (default: target/release/skiff)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../target/release/skiff}
dest=${DESTDIR:-}

if [ ! -x "$bin" ]; then
    echo "install: no skiff binary at $bin (cargo build --release first, or name it)" >&2
    exit 1
fi
if [ -z "$dest" ] && [ "$(id -u)" != 0 ]; then
    echo "install: run as root (or set DESTDIR)" >&2
    exit 1
fi

install -D -m 0755 "$bin" "$dest/usr/local/bin/skiff"
for unit in skiff-agent.service skiff-server.service; do
    install -D -m 0644 "$here/systemd/$unit" "$dest/etc/systemd/system/$unit"
done
install -d -m 0700 "$dest/etc/skiff"
if [ -e "$dest/etc/skiff/agent.toml" ]; then
    echo "install: keeping the existing $dest/etc/skiff/agent.toml"
else
    install -m 0600 "$here/agent.toml" "$dest/etc/skiff/agent.toml"
fi

if [ -z "$dest" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
cat <<MSG
install: done. Next:
  control plane host:  systemctl enable --now skiff-server
                       (then copy /var/lib/skiff-server/ca.pem and join.token to the agents)
  each edge host:      edit /etc/skiff/agent.toml, put the CA at /etc/skiff/ca.pem,
                       systemctl enable --now skiff-agent
MSG
